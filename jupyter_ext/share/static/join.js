// The confirmation page: exchange the link's code for a grant, keep it in this origin's own
// storage (scheme, host and port: no other server on the machine can read or replace it),
// and open the live page. The code never leaves the address bar but in this one POST.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const button = document.getElementById("join"), said = document.getElementById("said");
  button.addEventListener("click", async () => {
    button.disabled = true;
    const code = new URLSearchParams(location.search).get("code") || "";
    try {
      const r = await fetch("/join", {method: "POST", credentials: "omit",
        headers: {"Content-Type": "application/json"}, body: JSON.stringify({code})});
      const body = await r.json().catch(() => ({result: r.statusText}));
      if (!r.ok || !body.grant) { said.textContent = body.result; return; }
      localStorage.setItem("omk-grant:" + body.session, body.grant);
      // Replace the history entry: the code does not stay behind in the back button.
      location.replace("/live?session=" + encodeURIComponent(body.session));
    } catch (e) {
      said.textContent = "The share server did not answer: " + e;
    } finally { button.disabled = false; }
  });
});
