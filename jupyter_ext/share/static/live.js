// The live page. On the share server its grant lives in this origin's storage (see join.js)
// and goes out only as this page's Authorization header and WebSocket subprotocol: nothing
// ambient, so no other page or port can use it, read it or swap in its own. Under JupyterHub
// (data-mode="hub") the visitor's hub sign-in is the cookie of the owner's server, and every
// POST carries the page's XSRF token; the routes live under data-base.
"use strict";
const $ = (id) => document.getElementById(id);
const SESSION = new URLSearchParams(location.search).get("session") || "";
const HUB = document.body.dataset.mode === "hub";
const BASE = document.body.dataset.base || "/";
const KEY = "omk-grant:" + SESSION;
const GRANT = HUB ? "" : localStorage.getItem(KEY);
const AUTH = HUB ? {"X-XSRFToken": document.body.dataset.xsrf} : {"Authorization": "Bearer " + GRANT};
const CREDENTIALS = HUB ? "same-origin" : "omit";
const Q = HUB ? "?session=" + encodeURIComponent(SESSION) : "";
let ROLE = "ro", MAY_ANSWER = false, last = 0, spend = 0, rehearsal = false, retry = 500;
const pending = new Map();

function ended(why) {
  if (!HUB) localStorage.removeItem(KEY);
  $("status").textContent = why;
  pending.clear(); drawPending();
  $("ask").style.display = "none";
}

async function checkGrant() {
  // true: usable; false: revoked or expired (said on the page); null: no answer (retry).
  try {
    const r = await fetch(BASE + "api/grant" + Q, {headers: AUTH, credentials: CREDENTIALS});
    if (r.status === 403) { ended(HUB ? "You have no access to this session (or it was revoked). Ask the notebook's owner to share it with you." : "This link was revoked or has expired. Ask the notebook's owner for a new one."); return false; }
    if (!r.ok) return null;
    const me = await r.json();
    ROLE = me.role;
    MAY_ANSWER = me.may_answer;
    $("rolename").textContent = me.role_name;
    $("notebook").textContent = me.notebook ? "· " + me.notebook : "";
    if (ROLE === "rw") $("ask").style.display = "block";
    return true;
  } catch { return null; }
}

function drawPending() {
  const box = $("pending");
  box.replaceChildren();
  for (const [id, ask] of pending) {
    const card = document.createElement("div");
    card.className = "card"; card.dataset.request = id;
    const title = document.createElement("div");
    title.textContent = "Approval needed: " + ask.tool;
    const pre = document.createElement("pre");
    pre.textContent = ask.summary;
    card.append(title, pre);
    if (MAY_ANSWER) {
      const row = document.createElement("div"); row.className = "buttons";
      for (const [label, allow] of [["Approve", true], ["Deny", false]]) {
        const b = document.createElement("button");
        b.textContent = label; b.className = allow ? "approve" : "deny";
        b.addEventListener("click", () => answer(id, allow, row));
        row.append(b);
      }
      card.append(row);
    }
    box.append(card);
  }
}

async function post(path, body) {
  const r = await fetch(BASE + path + Q, {method: "POST", credentials: CREDENTIALS,
    headers: {...AUTH, "Content-Type": "application/json"}, body: JSON.stringify(body)});
  const raw = await r.text();
  try { return JSON.parse(raw); } catch { return {result: raw.trim() || r.statusText}; }
}

async function answer(id, allow, row) {
  for (const b of row.querySelectorAll("button")) b.disabled = true;
  const body = await post("api/answer", {request_id: id, allow});
  $("said").textContent = body.result === "sent" ? (allow ? "Approval sent" : "Denial sent") : body.result;
}

$("ask").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = $("prompt").value.trim();
  if (!text) return;
  $("send").disabled = true;
  try {
    const body = await post("api/prompt", {text});
    if (body.result === "queued") {
      $("prompt").value = "";
      $("asked").textContent = body.ahead ? `Sent: ${body.ahead} prompt(s) ahead of yours.` : "Sent: it runs when the notebook's current turn ends.";
    } else {
      $("asked").textContent = body.result;
    }
  } finally { $("send").disabled = false; }
});

function see(m) {
  if (m.seq <= last) return;  // already shown (a reconnect that overlapped)
  last = m.seq;
  if (m.kind === "approval_request") pending.set(m.request_id, m);
  if (m.kind === "approval_decision") { pending.delete(m.request_id); $("said").textContent = m.reason; }
  if (m.rehearsal) rehearsal = true;  // the offline rehearsal model: its calls cost $0
  if (m.cost_usd || m.rehearsal) {
    if (m.cost_usd) spend += m.cost_usd;
    $("spend").textContent = (rehearsal && !spend ? "$0" : "$" + spend.toFixed(4)) + (rehearsal ? " (rehearsal)" : "");
  }
  if (!m.html) return;
  if (m.block !== undefined) {
    // A turn's streamed text is one Markdown block, re-rendered on the server as it grows.
    const had = document.querySelector(`#feed [data-block="${Number(m.block)}"]`);
    if (had) { had.innerHTML = m.html; had.dataset.seq = m.seq; return; }
  }
  const div = document.createElement("div");
  div.dataset.kind = m.kind; div.dataset.turn = m.turn; div.dataset.seq = m.seq;
  if (m.block !== undefined) div.dataset.block = m.block;
  div.className = "event " + m.kind;
  div.innerHTML = m.html;  // made on the server by omnikernel.sanitize / escaping
  $("feed").append(div);
}

function connect() {
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + BASE + "ws" + (Q || "?") + (Q ? "&" : "") + "since=" + last;
  const ws = new WebSocket(url, HUB ? ["omk-share"] : ["omk-share", "omk-grant." + GRANT]);
  ws.onopen = () => { $("status").textContent = "live"; retry = 500; };
  ws.onmessage = (e) => { for (const m of JSON.parse(e.data).events) see(m); drawPending(); window.scrollTo(0, document.body.scrollHeight); };
  ws.onclose = async (e) => {
    if (e.code === 4403) { ended(HUB ? "Your access to this session was revoked." : "This link was revoked or has expired."); return; }
    $("status").textContent = "reconnecting…";
    await new Promise((done) => setTimeout(done, retry));
    retry = Math.min(retry * 2, 10000);
    if (await checkGrant() !== false) connect();
  };
}

document.addEventListener("DOMContentLoaded", async () => {
  if (!HUB && !GRANT) {
    $("status").textContent = "Open your share link again to follow this session (this browser has no key for it).";
    return;
  }
  let ok = await checkGrant();
  while (ok === null) { await new Promise((done) => setTimeout(done, retry)); retry = Math.min(retry * 2, 10000); ok = await checkGrant(); }
  if (ok) connect();
});
