// homebase dashboard: one page, no dependencies. Live state arrives over server-sent events;
// the token is exchanged once for a session id, kept in sessionStorage (this origin's alone:
// scheme, host and port) and sent as a header; never a cookie, never kept in the URL.
"use strict";
const $ = (id) => document.getElementById(id);
const state = { snap: null, range: 900, events: [], live: false };
const DOWN = new Set(["die", "kill", "stop", "oom"]);

function size(b) {
  if (b == null) return "–";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0;
  while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
  return (i ? b.toFixed(b < 10 ? 2 : 1) : b) + " " + u[i];
}
// Every host-supplied string goes through esc before the page: HTML escaped, and the
// characters that reorder or hide text (controls, bidi overrides) shown as \u{..}, as the CLI does.
function esc(s) {
  return String(s ?? "")
    .replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]/g,
      (c) => `\\u{${c.charCodeAt(0).toString(16)}}`)
    .replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
function time(ts) { return new Date(ts * 1000).toLocaleTimeString(); }
function money(v) { return "$" + (v > 0 && v < 0.01 ? v.toFixed(3) : v.toFixed(2)); }
function count(n) {
  return n < 1e3 ? String(n) : n < 1e6 ? (n / 1e3).toFixed(1) + "k" : n < 1e9 ? (n / 1e6).toFixed(1) + "M" : (n / 1e9).toFixed(1) + "G";
}

// A session from the token (typed in, or pasted as #token=) or from the one-time code
// `homebase dash` puts in the fragment (#login=).
async function session(headers) {
  const r = await fetch("/api/session", { method: "POST", headers });
  if (!r.ok) return false;
  sessionStorage.setItem("hb_session", (await r.json()).session);
  return true;
}
// A GET with the session.
function get(path) {
  return fetch(path, { headers: { Authorization: "Session " + (sessionStorage.getItem("hb_session") || "") } });
}

async function start() {
  const t = location.hash.match(/token=([^&]+)/);
  const c = location.hash.match(/login=([^&]+)/);
  if (t || c) {
    history.replaceState(null, "", location.pathname);
    await session(t ? { Authorization: "Bearer " + decodeURIComponent(t[1]) }
                    : { "X-Homebase-Login": decodeURIComponent(c[1]) });
  }
  const r = await get("/api/status");
  if (r.status === 401) return showLogin();
  $("login").hidden = true; $("app").hidden = false;
  render(await r.json());
  const ev = await get("/api/events?limit=50");
  if (ev.ok) { state.events = await ev.json(); renderEvents(); }
  loadCharts();
  if (!state.live) { state.live = true; live(); setInterval(loadCharts, 30000); }
}

// A token pasted into the address bar arrives as a hash change, not a new page.
window.addEventListener("hashchange", () => { if (/(token|login)=/.test(location.hash)) start(); });

function showLogin() {
  $("live").textContent = "signed out"; $("live").className = "badge off";
  $("app").hidden = true; $("login").hidden = false;
}

$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  if (await session({ Authorization: "Bearer " + $("token").value.trim() })) { $("token").value = ""; start(); }
  else $("login-error").textContent = "That token was refused.";
});

// The live stream: server-sent events read with fetch (an EventSource cannot send the
// session header), reconnecting after a pause when it ends.
async function live() {
  for (;;) {
    try {
      const r = await get("/api/stream");
      if (r.status === 401) { showLogin(); state.live = false; return; }
      if (!r.ok || !r.body) throw new Error("stream " + r.status);
      $("live").textContent = "live"; $("live").className = "badge on";
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, i); buf = buf.slice(i + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
          if (data) onMessage(JSON.parse(data));
        }
      }
    } catch (e) { /* fall through to reconnect */ }
    $("live").textContent = "reconnecting…"; $("live").className = "badge off";
    await new Promise((r) => setTimeout(r, 2000));
  }
}
function onMessage(msg) {
  if (msg.type === "snapshot") render(msg.snapshot);
  else if (msg.type === "event") {
    state.events.unshift(msg); state.events.length = Math.min(state.events.length, 200); renderEvents();
    if (DOWN.has(msg.kind) && state.snap) { markDown(msg.project, msg.service); }
  }
}

function markDown(project, service) {
  for (const p of state.snap.projects) if (p.name === project)
    for (const s of p.services) if (s.name === service) s.state = "exited";
  render(state.snap);
}

function render(snap) {
  state.snap = snap;
  $("host").textContent = snap.host ? `${snap.host} · ${size(snap.mem_total)} · updated ${time(snap.ts)}` : "";
  $("projects").innerHTML = snap.projects.map((p) => {
    const used = p.memory_bytes, total = snap.mem_total || 1, budget = p.budget_bytes;
    const rows = p.services.map((s) => {
      const st = s.governed ? "paused" : s.state === "running" ? "running" : "down";
      const pct = s.limit_bytes ? Math.min(100, (100 * s.memory_bytes) / s.limit_bytes) : 0;
      return `<tr data-service="${esc(s.name)}" data-state="${esc(s.state)}">
        <td>${esc(s.name)}</td>
        <td class="state-${st}">${esc(s.governed || s.state)}${s.gave_up ? " (gave up)" : ""}</td>
        <td class="health-${esc(s.health)}">${esc(s.health)}</td>
        <td class="mem">${size(s.memory_bytes)} / ${size(s.limit_bytes)}<div class="minibar"><div style="width:${pct.toFixed(1)}%"></div></div></td>
        <td>${s.cpu_percent.toFixed(1)}%</td>
        <td class="dim">${esc(s.priority)}</td>
        <td class="dim">${esc(s.status_text)}</td></tr>`;
    }).join("");
    const loops = (snap.loops || []).filter((l) => l.project === p.name).map((l) => {
      const st = l.state === "active" ? (l.running ? "running" : "paused") : l.state === "completed" ? "running" : "down";
      const iter = l.running ? `${l.running.n}${l.max_iterations ? "/" + l.max_iterations : ""}, running since ${time(l.running.started)}`
        : `${l.iterations}${l.max_iterations ? "/" + l.max_iterations : ""}`;
      const last = l.last ? `${l.last.outcome}${l.last.exit_code != null ? " (exit " + l.last.exit_code + ")" : ""}${l.last.files_changed != null ? ", " + l.last.files_changed + " files" : ""}` : "–";
      const wait = l.waiting ? `${l.waiting}${l.wait_until ? " until " + time(l.wait_until) : ""}` : "";
      const sp = l.spend;
      const cap = (v) => (v != null ? " of " + money(v) : "");
      const spend = sp ? `${money(sp.today_cost_usd)}${cap(sp.max_cost_per_day)} today · ${money(sp.month_cost_usd)}${cap(sp.max_cost_per_month)} month · ${money(sp.hour_cost_usd)}/h · ${count(sp.today_tokens)} tokens today${sp.last_cost_usd != null ? " · last " + money(sp.last_cost_usd) : ""}` : "–";
      return `<tr data-loop="${esc(l.name)}" data-state="${esc(l.state)}">
        <td>${esc(l.name)}</td><td class="state-${st}">${esc(l.state)}</td><td>run ${l.run} · ${iter} iterations</td>
        <td class="${l.breaker === "closed" ? "dim" : "bad"}">${esc(l.breaker)}</td>
        <td>${esc(last)}</td><td class="spend">${esc(spend)}</td><td class="dim">${esc(wait || l.reason)}</td></tr>`;
    }).join("");
    const loopTable = loops ? `<h3>Agent loops</h3><div class="scroll"><table id="loops-${esc(p.name)}"><thead><tr><th>loop</th><th>state</th><th>iteration</th><th>breaker</th><th>last</th><th>spend</th><th>waiting / reason</th></tr></thead>
      <tbody>${loops}</tbody></table></div>` : "";
    return `<div class="card">
      <h2>${esc(p.name)} <span class="dim">release ${esc(p.release)}${p.commit ? " · commit " + esc(p.commit.slice(0, 8)) : ""}</span></h2>
      <div>stack ${size(used)} of ${size(total)} host memory; budget ${size(budget)} (red line)</div>
      <div class="gauge" title="stack memory against host memory"><div class="fill" style="width:${((100 * used) / total).toFixed(2)}%"></div>
        <div class="mark" style="left:${((100 * budget) / total).toFixed(2)}%"></div></div>
      <div class="scroll"><table><thead><tr><th>service</th><th>state</th><th>health</th><th>memory / limit</th><th>cpu</th><th>priority</th><th>status</th></tr></thead>
      <tbody>${rows}</tbody></table></div>${loopTable}</div>`;
  }).join("") || `<p class="dim">No deployed project yet: run <code>homebase deploy</code>.</p>`;
  const nodes = snap.nodes || [];
  $("nodes").hidden = nodes.length === 0;
  $("nodes-body").innerHTML = nodes.map((n) => `<tr data-node="${esc(n.name)}" data-state="${esc(n.state)}">
      <td>${esc(n.name)}</td><td class="state-${n.state === "ready" ? "running" : "down"}">${esc(n.state)}</td>
      <td class="dim">${esc(n.role)}</td><td class="dim">${esc(n.address)}</td><td>${esc((n.tasks || []).join(", "))}</td></tr>`).join("");
  $("alerts").innerHTML = snap.alerts.length
    ? snap.alerts.map((a) => `<li class="bad">${time(a.time)} ${esc(a.kind)} ${esc(a.project)}/${esc(a.service || "stack")}: ${esc(a.message)}</li>`).join("")
    : `<li class="dim">none</li>`;
}

function renderEvents() {
  $("events").innerHTML = state.events.slice(0, 100)
    .map((e) => `<li><span class="dim">${time(e.ts)}</span> ${esc(e.project)}/${esc(e.service || "stack")} <b>${esc(e.kind)}</b> ${esc(e.message)}</li>`).join("");
}

async function loadCharts() {
  if (!state.snap) return;
  const to = Math.floor(Date.now() / 1000), from = to - state.range;
  const cards = [];
  for (const p of state.snap.projects) for (const s of p.services) {
    const r = await get(`/api/history?project=${encodeURIComponent(p.name)}&service=${encodeURIComponent(s.name)}&from=${from}&to=${to}`);
    if (!r.ok) continue;
    const h = await r.json();
    const pts = h.points, max = Math.max(1, ...pts.map((x) => x.memory_bytes));
    const line = pts.map((x) => `${(((x.ts - from) / (to - from)) * 300).toFixed(1)},${(58 - (x.memory_bytes / max) * 56).toFixed(1)}`).join(" ");
    cards.push(`<div class="card"><div>${esc(p.name)}/${esc(s.name)} <span class="dim">max ${size(max)}</span></div>
      <svg viewBox="0 0 300 60" preserveAspectRatio="none" role="img" aria-label="memory of ${esc(s.name)}"><polyline points="${line}"/></svg></div>`);
  }
  $("charts").innerHTML = cards.join("");
}

for (const b of document.querySelectorAll(".ranges button")) {
  b.addEventListener("click", () => {
    document.querySelectorAll(".ranges button").forEach((x) => x.classList.remove("on"));
    b.classList.add("on"); state.range = Number(b.dataset.range); loadCharts();
  });
}

start();
