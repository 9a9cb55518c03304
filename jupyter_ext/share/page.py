"""The two pages of the share server, plain HTML and JavaScript (no build step).

The live page puts the pending approval and the spend at the top, in one column sized for a
phone. Event HTML comes from the server, made by `render` (agent text through
`omnikernel.sanitize`); everything else the script shows is set as text."""

CONFIRM_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Join an omnikernel session</title>
<style>body{{font:18px system-ui,sans-serif;margin:0;padding:24px;max-width:640px}}
button{{font-size:22px;padding:16px 28px;width:100%;border-radius:12px;border:0;background:#1565c0;color:#fff}}</style>
</head><body>
<h1>Join a live agent session?</h1>
<p>This link lets you follow an omnikernel agent session. Opening it sets a cookie in this
browser; the link owner can revoke it at any time.</p>
<form method="post" action="/join">{xsrf}<input type="hidden" name="code" value="{code}">
<button type="submit" id="join">Open the session</button></form>
</body></html>
"""

LIVE_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>omnikernel live session</title>
<style>
body{font:17px/1.45 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#111}
header{position:sticky;top:0;background:#fff;border-bottom:1px solid #ddd;padding:10px 14px;z-index:2}
main{padding:10px 14px;max-width:900px;margin:auto}
#status{font-size:14px;color:#555}
#spend{font-weight:600}
.card{background:#fff7e0;border:2px solid #e0a000;border-radius:14px;padding:12px;margin-top:8px}
.card pre{white-space:pre-wrap;word-break:break-word;background:#fff;padding:8px;border-radius:8px;font-size:15px}
.buttons{display:flex;gap:10px;margin-top:10px}
.buttons button{flex:1;font-size:22px;min-height:64px;border:0;border-radius:12px;color:#fff}
button.approve{background:#1b7f3b} button.deny{background:#b3261e}
.event{background:#fff;border-radius:10px;padding:8px 10px;margin:8px 0;overflow-wrap:anywhere}
.event pre{white-space:pre-wrap;word-break:break-word;font-size:14px;background:#f0f1f3;padding:6px;border-radius:6px}
.decided{color:#333;font-style:italic}
#ask{position:sticky;bottom:0;background:#fff;border-top:1px solid #ddd;padding:10px 14px;display:none}
#ask textarea{width:100%;box-sizing:border-box;font:17px system-ui,sans-serif;border-radius:10px;padding:8px}
#ask button{font-size:20px;min-height:52px;width:100%;margin-top:6px;border:0;border-radius:12px;background:#1565c0;color:#fff}
#ask label,#asked{font-size:14px;color:#555}
#ask .row{display:flex;gap:8px;align-items:flex-end}
#ask .row textarea{flex:1}
#ask .row button{width:auto;padding:0 18px;margin:0}
</style></head>
<body data-role="{{role}}">
<header><div id="status">connecting…</div>
<div>Spend: <span id="spend">$0.0000</span> · <span id="rolename"></span></div>
<div id="pending"></div><div id="said"></div></header>
<main id="feed"></main>
<form id="ask"><label for="prompt">Prompt the agent (runs as a turn of the notebook's session)</label>
<div class="row"><textarea id="prompt" rows="2" maxlength="20000" placeholder="What should the agent do next?"></textarea>
<button type="submit" id="send">Send</button></div><div id="asked"></div></form>
<script>
"use strict";
const ROLE = document.body.dataset.role, XSRF = "{{xsrf}}";
let last = 0, spend = 0, retry = 500;
const pending = new Map();
const $ = (id) => document.getElementById(id);
$("rolename").textContent = ROLE === "rw" ? "co-drive" : "read-only";

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
    if (ROLE === "rw") {
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

async function answer(id, allow, row) {
  for (const b of row.querySelectorAll("button")) b.disabled = true;
  const r = await fetch("/api/answer", {method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-XSRFToken": XSRF},
    body: JSON.stringify({request_id: id, allow})});
  const body = await r.json().catch(() => ({result: r.statusText}));
  $("said").textContent = body.result === "sent" ? (allow ? "Approval sent" : "Denial sent") : body.result;
}

if (ROLE === "rw") {
  $("ask").style.display = "block";
  $("ask").addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = $("prompt").value.trim();
    if (!text) return;
    $("send").disabled = true;
    try {
      const r = await fetch("/api/prompt", {method: "POST", credentials: "same-origin",
        headers: {"Content-Type": "application/json", "X-XSRFToken": XSRF},
        body: JSON.stringify({text})});
      const raw = await r.text();
      let body;
      try { body = JSON.parse(raw); } catch { body = {result: raw.trim() || r.statusText}; }
      if (body.result === "queued") {
        $("prompt").value = "";
        $("asked").textContent = body.ahead ? `Sent: ${body.ahead} prompt(s) ahead of yours.` : "Sent: it runs when the notebook's current turn ends.";
      } else {
        $("asked").textContent = body.result;
      }
    } finally { $("send").disabled = false; }
  });
}

function see(m) {
  if (m.seq <= last) return;  // already shown (a reconnect that overlapped)
  last = m.seq;
  if (m.kind === "approval_request") pending.set(m.request_id, m);
  if (m.kind === "approval_decision") { pending.delete(m.request_id); $("said").textContent = m.reason; }
  if (m.cost_usd) { spend += m.cost_usd; $("spend").textContent = "$" + spend.toFixed(4); }
  if (m.html) {
    const prev = $("feed").lastElementChild;
    if (m.kind === "text" && prev && prev.dataset.kind === "text" && prev.dataset.turn == m.turn) {
      prev.insertAdjacentHTML("beforeend", m.html);  // a streamed answer stays one block
      prev.dataset.seq = m.seq;
      return;
    }
    const div = document.createElement("div");
    div.dataset.kind = m.kind; div.dataset.turn = m.turn;
    div.className = "event " + m.kind; div.dataset.seq = m.seq;
    div.innerHTML = m.html;  // made on the server by omnikernel.sanitize / escaping
    $("feed").append(div);
  }
}

function connect() {
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws?since=" + last);
  ws.onopen = () => { $("status").textContent = "live"; retry = 500; };
  ws.onmessage = (e) => { for (const m of JSON.parse(e.data).events) see(m); drawPending(); window.scrollTo(0, document.body.scrollHeight); };
  ws.onclose = (e) => {
    if (e.code === 4403) { $("status").textContent = "This link was revoked or has expired."; pending.clear(); drawPending(); return; }
    $("status").textContent = "reconnecting…";
    setTimeout(connect, retry); retry = Math.min(retry * 2, 10000);
  };
}
connect();
</script></body></html>
"""
