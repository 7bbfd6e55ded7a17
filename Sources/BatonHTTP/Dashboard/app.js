// Baton dashboard: vanilla JavaScript, hash routing (#/page?filters), no dependencies, talks only to the server
// that served it. The API token (if the server wants one) is kept in localStorage and sent as a Bearer token; the
// live event stream (EventSource, which cannot send headers) passes it as ?access_token=.
"use strict";

const state = { token: localStorage.getItem("baton.token") || "", role: null, readOnly: false, timers: [], stream: null, route: 0, staleAfter: 30 };
const main = document.getElementById("main");

// ---------- helpers ----------

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
function h(strings, ...values) {
  return strings.reduce((out, s, i) => out + s + (i < values.length ? (values[i] && values[i].__html !== undefined ? values[i].__html : esc(values[i])) : ""), "");
}
function raw(html) { return { __html: html }; }
function taskLink(id) { return raw(`<a href="#/task/${encodeURIComponent(id)}">${esc(id)}</a>`); }
function statusBadge(s) { return raw(`<span class="status ${esc(s)}" data-status="${esc(s)}">${esc(s)}</span>`); }
function span(s) {
  if (s < 60) return `${Math.round(s)} s`;
  if (s < 3600) return `${Math.round(s / 60)} min`;
  if (s < 86400) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}
function ago(iso) {
  if (!iso) return "";
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (!isFinite(s)) return iso;
  return `${span(s)} ago`;
}
function bar(fraction, over) {
  const pct = Math.max(0, Math.min(1, fraction || 0)) * 100;
  return raw(`<div class="bar${over ? " over" : ""}" title="${pct.toFixed(0)}%"><i style="width:${pct.toFixed(1)}%"></i></div>`);
}
function canAct() { return !state.readOnly && (state.role === "operator" || state.role === "admin"); }
function flash(text, kind = "ok") {
  const box = document.getElementById("flash");
  const item = document.createElement("div");
  item.className = kind;
  item.textContent = text;
  box.prepend(item);
  setTimeout(() => item.remove(), kind === "ok" ? 6000 : 15000);
}

class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
  get text() { return this.message + (this.problem.fix ? ` — ${this.problem.fix}` : ""); }
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json" };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method: options.method || "GET", headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  const text = await response.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (_) { json = null; }
  if (!response.ok) throw new ApiError(response.status, json);
  return json;
}
function post(path, body) { return api(path, { method: "POST", body: body || {} }); }
function taskPath(id) { return `/v1/tasks/${encodeURIComponent(id)}`; }
function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}
// Every route() starts a new generation; a page whose data arrives after the user moved on draws nothing.
function stale(gen) { return gen !== state.route; }
function every(ms, fn, gen) { if (!stale(gen)) state.timers.push(setInterval(fn, ms)); }

function showError(error) {
  if (error instanceof ApiError && error.status === 401) {
    main.innerHTML = h`<div class="card"><h1>Token needed</h1><p>This server wants an API token: type it above and press <b>Use</b>.</p><p class="muted">${error.text}</p></div>`;
  } else {
    main.innerHTML = h`<div class="card"><h1>Error</h1><p id="error">${error instanceof ApiError ? error.text : String(error)}</p></div>`;
  }
}

function table(columns, rows, rowAttrs) {
  if (!rows.length) return `<p class="muted empty">Nothing here.</p>`;
  const head = columns.map(c => `<th class="${c.cls || ""}">${esc(c.title)}</th>`).join("");
  const body = rows.map(r => `<tr ${rowAttrs ? rowAttrs(r) : ""}>${columns.map(c => `<td class="${c.cls || ""}" data-label="${esc(c.title)}">${c.render(r)}</td>`).join("")}</tr>`).join("");
  return `<div class="table-wrap"><table><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table></div>`;
}
const col = (title, render, cls) => ({ title, render: r => { const v = render(r); return v && v.__html !== undefined ? v.__html : esc(v); }, cls });

// ---------- auth ----------

async function whoami() {
  try {
    const me = await api("/v1/whoami");
    state.role = me.role;
    state.readOnly = me.read_only;
    if (me.worker_stale_after_s) state.staleAfter = me.worker_stale_after_s;
    document.getElementById("whoami").textContent = me.tokens_required ? `${me.actor}${me.read_only ? " · read-only" : ""}` : `no token needed${me.read_only ? " · read-only" : ""}`;
  } catch (error) {
    state.role = null;
    document.getElementById("whoami").textContent = error.status === 401 ? "token needed" : "";
  }
}
document.getElementById("token-form").addEventListener("submit", async event => {
  event.preventDefault();
  const input = document.getElementById("token");
  state.token = input.value.trim();
  if (state.token) localStorage.setItem("baton.token", state.token); else localStorage.removeItem("baton.token");
  input.value = "";
  await whoami();
  route();
});

// ---------- pages ----------

// The fleet's live events (GET /v1/events, every task's events as the relay publishes them): `onEvent` runs,
// debounced, after events arrive; the page still polls slowly in case the stream is down.
function fleetStream(gen, onEvent, agent) {
  if (stale(gen)) return;
  const params = new URLSearchParams();
  if (agent) params.set("agent", agent);
  if (state.token) params.set("access_token", state.token);
  const stream = new EventSource(`/v1/events${params.toString() ? `?${params}` : ""}`);
  state.stream = stream;
  let pending = null;
  const kick = () => { clearTimeout(pending); pending = setTimeout(() => { if (!stale(gen)) onEvent(); }, 300); };
  ["submitted", "started", "step_committed", "progress", "waiting", "signal_received", "waking_soon", "sleeping", "woke", "retrying", "handoff",
    "paused", "resumed", "needs_review", "budget_exceeded", "dead_lettered", "redriven", "forked", "succeeded", "failed", "cancelled"]
    .forEach(type => stream.addEventListener(type, kick));
  const label = document.getElementById("fleet-state");
  stream.onopen = () => { if (label) label.textContent = "· live"; };
  stream.onerror = () => { if (label) label.textContent = "· reconnecting…"; };
}

async function overview(gen) {
  const [stats, inbox, workers, groups] = await Promise.all([
    api("/v1/stats"), api("/v1/inbox"), api("/v1/workers"), api("/v1/dead?group_by=fingerprint"),
  ]);
  if (stale(gen)) return;
  const counts = Object.entries(stats.counts || {}).sort((a, b) => b[1] - a[1]);
  const deadTotal = groups.items.reduce((n, g) => n + g.count, 0);
  const live = workers.items.filter(w => w.heartbeat_age_s <= state.staleAfter);
  const rec = stats.recovery || {};
  main.innerHTML = h`<h1>Overview <span class="muted" id="fleet-state"></span></h1>
  <div class="grid" id="overview-cards">
    <a class="stat" href="#/inbox"><b id="overview-inbox">${inbox.items.length}</b><span>waiting for a person</span></a>
    <a class="stat" href="#/workers"><b>${live.length}</b><span>live workers${workers.items.length > live.length ? ` (${workers.items.length - live.length} stale)` : ""}</span></a>
    <a class="stat" href="#/tasks?status=running"><b>${stats.running ?? 0}</b><span>running</span></a>
    <a class="stat" href="#/dead"><b>${deadTotal}</b><span>dead letters in ${groups.items.length} groups</span></a>
  </div>
  <h2>Failures handed to a person <span class="muted">(escalated, decided, redrives: the sampled histories; waiting: all)</span></h2>
  <div class="grid" id="overview-recovery">
    <div class="stat"><b id="recovery-escalated">${rec.escalated ?? 0}</b><span>escalated</span></div>
    <div class="stat"><b id="recovery-decided">${rec.decided ?? 0}</b><span>decided${rec.time_to_decision ? `, after ${span(rec.time_to_decision.p50_s)} (p50)` : ""}</span></div>
    <a class="stat" href="#/dead"><b id="recovery-pending">${rec.pending ?? 0}</b><span>waiting for a person now${rec.oldest_pending_seconds != null ? `, the oldest for ${span(rec.oldest_pending_seconds)}` : ""}</span></a>
    <div class="stat"><b id="recovery-redriven">${rec.redriven_succeeded ?? 0} / ${rec.redriven ?? 0}</b><span>redrives that succeeded</span></div>
  </div>
  <h2>Tasks by status <span class="muted">(since ${stats.since || "1h"}, ${stats.sampled_tasks ?? "?"} sampled)</span></h2>
  <div class="grid">${raw(counts.map(([s, n]) => `<a class="stat" href="#/tasks?status=${esc(s)}"><b>${n}</b><span>${esc(s)}</span></a>`).join("") || `<p class="muted">No tasks.</p>`)}</div>
  <h2>Live workers</h2>${raw(workerTable(live))}
  <h2>Largest dead-letter groups</h2>${raw(groupTable(groups.items.slice().sort((a, b) => b.count - a.count).slice(0, 5), false))}`;
  if (!state.stream) {
    // Live: re-render when the fleet's events arrive (at most every few seconds), and every 30 s anyway.
    let last = 0;
    const again = () => { const now = Date.now(); if (now - last > 3000) { last = now; overview(gen).catch(() => {}); } };
    fleetStream(gen, again);
    every(30000, () => overview(gen).catch(() => {}), gen);
  }
}

async function inboxPage(params, gen) {
  const agent = params.get("agent") || "";
  const tenant = params.get("tenant") || "";
  const data = await api(`/v1/inbox${query({ agent, tenant })}`);
  if (stale(gen)) return;
  const act = canAct();
  main.innerHTML = h`<h1>Inbox</h1><form class="filters" id="inbox-filters"><input name="agent" placeholder="agent" value="${agent}">
    <input name="tenant" placeholder="tenant" value="${tenant}">
    <button type="submit">Filter</button>${raw(act ? `<button type="button" data-action="approve-all-preview" id="approve-all">Approve all matching…</button>` : "")}
    <span class="muted">Tasks waiting for a person: approvals and budget reviews, oldest first.</span></form>
    <div id="approve-all-box" data-agent="${agent}" data-tenant="${tenant}"></div>` + table([
    col("Task", r => taskLink(r.task.id)),
    col("Agent", r => r.task.agent),
    col("Kind", r => r.kind),
    col("Status", r => statusBadge(r.task.status)),
    col("Why", r => r.task.status_reason || (r.task.waiting_for || []).map(w => JSON.stringify(w)).join(", "), "wrap"),
    col("Budget", r => budgetSummary(r.task), "hide-sm"),
    col("Waiting", r => ago(r.since)),
    ...(act ? [col("Act", r => raw(inboxActions(r)))] : []),
  ], data.items, r => `data-task="${esc(r.task.id)}"`);
  document.getElementById("inbox-filters").addEventListener("submit", e => {
    e.preventDefault();
    const form = new FormData(e.target);
    location.hash = `#/inbox${query({ agent: form.get("agent"), tenant: form.get("tenant") })}`;
  });
  if (!agent && !tenant) updateInboxCount(data.items.length);
}

function inboxActions(item) {
  const review = item.task.status === "needs_review";
  return `<div class="actions">
    <input class="comment" placeholder="comment / reason" size="14">
    <button class="primary" data-action="${review ? "raise" : "approve"}">${review ? "Raise budget" : "Approve"}</button>
    ${review ? "" : `<button data-action="edit-approve">Edit &amp; approve…</button>`}
    ${review ? `<input class="raise" value="max_cost_usd=+1,max_steps=+50" size="22">` : ""}
    <button class="danger" data-action="reject">Reject</button></div>`;
}

main.addEventListener("click", async event => {
  // data-action: a change (operators only); data-view: a read any viewer may do (diff, export).
  const button = event.target.closest("button[data-action], button[data-view]");
  if (!button) return;
  const row = button.closest("[data-task], [data-group], [data-letter], [data-worker], #approve-all-box, #inbox-filters");
  const action = button.dataset.action || button.dataset.view;
  button.disabled = true;
  try {
    await handle(action, button, row);
  } catch (error) {
    flash(error instanceof ApiError ? error.text : String(error), "error");
  } finally {
    button.disabled = false;
  }
});

async function handle(action, button, row) {
  const taskID = row && row.dataset.task;
  const comment = row && row.querySelector(".comment") ? row.querySelector(".comment").value.trim() : "";
  switch (action) {
    case "approve": {
      const r = await post(`${taskPath(taskID)}/approve`, comment ? { comment } : {});
      flash(`Approved ${taskID}: ${r.outcome || r.result || "sent"}`);
      return route();
    }
    case "edit-approve": {
      // A JSON merge patch (RFC 7396) applied to the task's input: the woken step receives the edited document.
      const cell = button.closest("td") || row;
      if (cell.querySelector(".edit-box")) { cell.querySelector(".edit-box").remove(); return; }
      cell.insertAdjacentHTML("beforeend", `<div class="edit-box"><textarea class="edit-patch" rows="5" cols="34" spellcheck="false">{}</textarea>
        <div class="muted">A JSON merge patch applied to the task's input; the step receives the result.</div>
        <button class="primary" data-action="send-edit">Approve with this edit</button></div>`);
      return;
    }
    case "send-edit": {
      let edit;
      try { edit = JSON.parse(row.querySelector(".edit-patch").value); } catch (e) { flash(`The edit is not JSON: ${e.message}`, "error"); return; }
      const r = await post(`${taskPath(taskID)}/approve`, { edit, ...(comment ? { comment } : {}) });
      flash(`Approved ${taskID} with an edit: ${r.result || "sent"}`);
      return route();
    }
    case "approve-all-preview": {
      const box = document.getElementById("approve-all-box");
      const filter = {};
      if (box.dataset.agent) filter.agent = box.dataset.agent;
      if (box.dataset.tenant) filter.tenant = box.dataset.tenant;
      const selection = Object.keys(filter).length ? { filter } : { all: true };
      const report = await post("/v1/bulk", { action: "approve", ...selection, dry_run: true });
      box.innerHTML = h`<div class="confirm"><p>Dry run: <b id="approve-all-count">${report.count}</b> pending approval(s) match (${report.filter})${report.samples && report.samples.length ? `, e.g. ${report.samples.map(s => s.task.id).join(", ")}` : ""}; nothing changed yet.</p>
        <div class="actions"><input class="bulk-reason" placeholder="reason (required, audited)" size="26">
        <button class="primary" data-action="approve-all-confirm">Approve ${report.count}</button><button data-action="approve-all-cancel">Cancel</button></div></div>`;
      box.dataset.selection = JSON.stringify(selection);
      return;
    }
    case "approve-all-cancel": document.getElementById("approve-all-box").innerHTML = ""; return;
    case "approve-all-confirm": {
      const box = document.getElementById("approve-all-box");
      const reason = box.querySelector(".bulk-reason").value.trim();
      if (!reason) { flash("Say why: the reason goes into the audit stream.", "error"); return; }
      const started = await post("/v1/bulk", { action: "approve", ...JSON.parse(box.dataset.selection), reason });
      let status = started;
      for (let i = 0; i < 50 && status.status !== "done"; i++) {
        await new Promise(r => setTimeout(r, 200));
        status = await api(`/v1/bulk/${encodeURIComponent(started.id)}`);
      }
      flash(`Approved ${status.done ?? 0} of ${status.total ?? started.total} (${status.status})`);
      return route();
    }
    case "drain": {
      const id = row.dataset.worker;
      const reason = prompt(`Drain worker ${id}? It stops taking steps, lets running ones finish, and exits. Why?`);
      if (!reason) return;
      await post(`/v1/workers/${encodeURIComponent(id)}/drain`, { reason });
      flash(`Drain requested: ${id}`);
      return route();
    }
    case "export-dead": {
      const response = await fetch(`/v1/dead${query({ ...deadFilter(), format: "jsonl" })}`,
        { headers: state.token ? { Authorization: `Bearer ${state.token}` } : {} });
      if (!response.ok) { flash(`Export failed: ${response.status}`, "error"); return; }
      const url = URL.createObjectURL(await response.blob());
      const a = document.createElement("a");
      a.href = url; a.download = "dead-letters.jsonl"; document.body.appendChild(a); a.click(); a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 1000);
      return;
    }
    case "diff": return showDiff(row);
    case "reject": {
      await post(`${taskPath(taskID)}/reject`, { reason: comment || "rejected from the dashboard" });
      flash(`Rejected ${taskID}`);
      return route();
    }
    case "raise": {
      const raise = row.querySelector(".raise").value.trim();
      await post(`${taskPath(taskID)}/budget`, { raise, reason: comment || "raised from the dashboard" });
      flash(`Raised the budget of ${taskID} (${raise})`);
      return route();
    }
    case "cancel": case "pause": case "resume": {
      await post(`${taskPath(taskID)}/${action}`, { reason: comment || `${action} from the dashboard` });
      flash(`${action}: ${taskID}`);
      return route();
    }
    case "members": return showMembers(row);
    case "group-redrive": case "group-discard": return dryRun(action.slice(6), row);
    case "confirm-bulk": return confirmBulk(row);
    case "cancel-bulk": row.querySelector(".confirm-box").innerHTML = ""; return;
    case "letter-redrive": case "letter-discard": {
      const verb = action.slice(7);
      const reason = prompt(`Why ${verb} dead letter ${row.dataset.letter}?`);
      if (!reason) return;
      await post(`/v1/dead/${encodeURIComponent(row.dataset.letter)}/${verb}`, { reason });
      flash(`${verb}: ${row.dataset.letter}`);
      return route();
    }
  }
}

function budgetSummary(task) {
  const u = task.budget.used, l = task.budget.limits;
  const parts = [];
  if (l.max_cost_usd != null) parts.push(`$${u.cost_usd.toFixed(2)} / $${l.max_cost_usd}`);
  if (l.max_steps != null) parts.push(`${u.steps} / ${l.max_steps} steps`);
  return parts.join(" · ");
}

const allStatuses = ["queued", "running", "waiting", "sleeping", "retrying", "paused", "needs_review", "succeeded", "failed", "cancelled", "budget_exceeded", "dead_lettered"];

async function tasksPage(params, gen) {
  const filter = { status: params.get("status") || "", agent: params.get("agent") || "", tenant: params.get("tenant") || "", limit: "100" };
  const render = async () => {
    const data = await api(`/v1/tasks${query(filter)}`);
    const list = document.getElementById("task-list");
    if (!list || stale(gen)) return;
    list.innerHTML = table([
      col("Task", r => taskLink(r.id)),
      col("Agent", r => r.agent),
      col("Status", r => statusBadge(r.status)),
      col("Step", r => r.step || "", "hide-sm"),
      col("Progress", r => r.progress ? bar(r.progress.fraction) : "", "hide-sm"),
      col("Updated", r => ago(r.updated_at)),
    ], data.items, r => `data-task="${esc(r.id)}"`);
  };
  main.innerHTML = h`<h1>Tasks</h1>
  <form class="filters" id="task-filters">
    <select name="status"><option value="">any status</option>${raw(allStatuses.map(s => `<option${s === filter.status ? " selected" : ""}>${s}</option>`).join(""))}</select>
    <input name="agent" placeholder="agent" value="${filter.agent}">
    <input name="tenant" placeholder="tenant" value="${filter.tenant}">
    <button type="submit">Filter</button> <span class="muted">live through the fleet's events <span id="fleet-state"></span></span>
  </form><div id="task-list"></div>`;
  document.getElementById("task-filters").addEventListener("submit", e => {
    e.preventDefault();
    const f = new FormData(e.target);
    location.hash = `#/tasks${query({ status: f.get("status"), agent: f.get("agent"), tenant: f.get("tenant") })}`;
  });
  await render();
  fleetStream(gen, () => render().catch(() => {}), filter.agent);
  every(15000, () => render().catch(() => {}), gen);
}

async function taskPage(id, gen) {
  main.innerHTML = h`<h1>Task <code>${id}</code></h1><div id="task-detail"></div><div id="task-extra" data-task="${id}"></div><h2>Events <span class="muted" id="stream-state"></span></h2><div class="card events"><table><tbody id="events"></tbody></table></div>`;
  let pending = null;
  const refresh = async () => {
    const task = await api(taskPath(id));
    const box = document.getElementById("task-detail");
    // Not while the operator types (an open edit, a focused field): the re-render would wipe it.
    if (box && (box.querySelector(".edit-box") || box.contains(document.activeElement) && document.activeElement.matches("input, textarea"))) return;
    if (box && !stale(gen)) box.innerHTML = taskDetail(task);
  };
  await refresh();
  if (stale(gen)) return;
  const url = `${taskPath(id)}/events${state.token ? `?access_token=${encodeURIComponent(state.token)}` : ""}`;
  const stream = new EventSource(url);
  state.stream = stream;
  const label = document.getElementById("stream-state");
  stream.onopen = () => { label.textContent = "· live"; };
  stream.onerror = () => { label.textContent = "· reconnecting…"; };
  stream.onmessage = () => {};
  const onEvent = message => {
    let event;
    try { event = JSON.parse(message.data); } catch (_) { return; }
    const rows = document.getElementById("events");
    if (!rows) return;
    rows.insertAdjacentHTML("afterbegin", h`<tr data-event="${event.type}"><td>${event.seq}${event.branch ? `·b${event.branch}` : ""}</td><td><b>${event.type}</b></td><td>${event.step || ""}</td><td class="wrap"><code>${event.data ? JSON.stringify(event.data) : ""}</code></td><td class="hide-sm">${new Date(event.at).toLocaleTimeString()}</td></tr>`);
    clearTimeout(pending);
    pending = setTimeout(() => refresh().catch(() => {}), 150);
  };
  // Named events (event: <type>) do not reach onmessage: listen to every type the server may send.
  const types = ["submitted", "started", "step_committed", "step_failed", "retrying", "retry", "waiting", "woke", "signal_received",
    "waking_soon", "sleeping", "progress", "paused", "resumed", "cancelled", "succeeded", "failed", "dead_lettered", "redriven", "needs_review",
    "budget_raised", "budget_exceeded", "forked", "handoff", "stalled", "lease_lost", "children", "status"];
  const seen = new Set();
  const listen = type => { if (!seen.has(type)) { seen.add(type); stream.addEventListener(type, onEvent); } };
  types.forEach(listen);
  // Also learn unknown types from the history so none is missed; draw the branch tree and the checkpoint viewer.
  api(`${taskPath(id)}/history`).then(history => {
    (history.items || []).forEach(e => listen(e.type));
    const box = document.getElementById("task-extra");
    if (box && !stale(gen)) box.innerHTML = branchTree(history.items || []) + checkpointViewer(history.items || []);
  }).catch(() => {});
  every(5000, () => refresh().catch(() => {}), gen);
}

// Branches from the history: branch 0, then one per redrive or fork, each with where it started and why.
function branchTree(events) {
  const branches = new Map();
  for (const e of events) {
    const b = branches.get(e.branch) || { branch: e.branch, first: e.seq, last: e.seq, origin: null };
    b.first = Math.min(b.first, e.seq); b.last = Math.max(b.last, e.seq);
    if ((e.type === "redriven" || e.type === "forked") && !b.origin) b.origin = e;
    branches.set(e.branch, b);
  }
  const items = [...branches.values()].sort((a, b) => a.branch - b.branch).map(b => {
    const o = b.origin, d = (o && o.data) || {};
    const why = o ? ` — ${o.type}${d.from_seq != null ? ` from seq ${d.from_seq}` : ""}${d.actor ? ` by ${d.actor}` : ""}${d.reason ? `: ${d.reason}` : ""}` : "";
    return h`<li data-branch="${b.branch}"><b>branch ${b.branch}</b> · seq ${b.first}–${b.last}${why}</li>`;
  });
  return `<div class="card"><h2 style="margin-top:0">Branches</h2><ul class="branch-tree">${items.join("")}</ul></div>`;
}

// Pick two checkpoint seqs (only the last few are kept) and see what changed between them.
function checkpointViewer(events) {
  const seqs = [...new Set(events.map(e => e.seq))].sort((a, b) => a - b);
  const last = seqs.length ? seqs[seqs.length - 1] : 0;
  const before = seqs.length > 1 ? seqs[seqs.length - 2] : last;
  return h`<div class="card"><h2 style="margin-top:0">Checkpoints</h2><div class="actions">
    seq <input class="seq-a" type="number" min="0" value="${before}" size="5"> → seq <input class="seq-b" type="number" min="0" value="${last}" size="5">
    <button data-view="diff">Show diff</button></div><div class="diff"></div></div>`;
}

// A small structural JSON diff: one row per changed path (added, removed, changed).
function jsonDiff(a, b, path = "", out = []) {
  const isObj = v => v && typeof v === "object";
  if (isObj(a) && isObj(b) && Array.isArray(a) === Array.isArray(b)) {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    for (const k of keys) {
      const p = Array.isArray(a) ? `${path}[${k}]` : `${path}.${k}`;
      if (!(k in a)) out.push({ path: p, kind: "added", after: b[k] });
      else if (!(k in b)) out.push({ path: p, kind: "removed", before: a[k] });
      else jsonDiff(a[k], b[k], p, out);
    }
  } else if (JSON.stringify(a) !== JSON.stringify(b)) out.push({ path: path || "(root)", kind: "changed", before: a, after: b });
  return out;
}

async function showDiff(row) {
  const card = row.querySelector(".diff") ? row : row.closest(".card");
  const id = document.getElementById("task-extra").dataset.task;
  const a = card.querySelector(".seq-a").value, b = card.querySelector(".seq-b").value;
  const [left, right] = await Promise.all([api(`${taskPath(id)}/checkpoints/${a}`), api(`${taskPath(id)}/checkpoints/${b}`)]);
  const changes = jsonDiff(left.state, right.state);
  card.querySelector(".diff").innerHTML = changes.length ? table([
    col("Path", c => c.path), col("Change", c => c.kind),
    col(`seq ${a}`, c => c.before === undefined ? "" : JSON.stringify(c.before), "wrap"),
    col(`seq ${b}`, c => c.after === undefined ? "" : JSON.stringify(c.after), "wrap"),
  ], changes) : `<p class="muted">No difference between seq ${esc(a)} and seq ${esc(b)}.</p>`;
}

function taskDetail(t) {
  const u = t.budget.used, l = t.budget.limits;
  const gauges = [
    ["cost", u.cost_usd, l.max_cost_usd, v => `$${Number(v).toFixed(2)}`],
    ["steps", u.steps, l.max_steps, v => v],
    ["tokens", u.tokens, l.max_tokens, v => v],
    ["tool calls", u.tool_calls, l.max_tool_calls, v => v],
    ["handoffs", u.handoffs, l.max_handoffs, v => v],
  ].filter(([, used, limit]) => limit != null || used);
  const act = canAct();
  const live = !["succeeded", "failed", "cancelled", "budget_exceeded", "dead_lettered"].includes(t.status);
  const waitsForSignal = (t.waiting_for || []).some(w => w.signal === "approve" || w.signal === "reject");
  const buttons = !act || !live ? "" : `<div class="actions" data-task="${esc(t.id)}" style="margin-top:.7rem">
      <input class="comment" placeholder="reason / comment" size="18">
      ${waitsForSignal || t.status === "needs_review" ? `<button class="primary" data-action="${t.status === "needs_review" ? "raise" : "approve"}">${t.status === "needs_review" ? "Raise budget" : "Approve"}</button>
        ${t.status === "needs_review" ? `<input class="raise" value="max_cost_usd=+1,max_steps=+50" size="22">` : ""}
        ${t.status === "needs_review" ? "" : `<button data-action="edit-approve">Edit &amp; approve…</button>`}
        <button class="danger" data-action="reject">Reject</button>` : ""}
      ${t.status === "paused" ? `<button data-action="resume">Resume</button>` : `<button data-action="pause">Pause</button>`}
      <button class="danger" data-action="cancel">Cancel</button></div>`;
  return h`<div class="card">
    <dl class="kv">
      <dt>Status</dt><dd><span id="task-status" data-status="${t.status}" class="status ${t.status}">${t.status}</span> ${t.status_reason ? `— ${t.status_reason}` : ""}</dd>
      <dt>Agent</dt><dd>${t.agent}${t.tenant ? ` · tenant ${t.tenant}` : ""}</dd>
      <dt>Step</dt><dd>${t.step || "—"} · seq ${t.seq} · branch ${t.branch} · attempt ${t.attempt}</dd>
      ${raw(t.progress ? h`<dt>Progress</dt><dd>${bar(t.progress.fraction)} ${Math.round(t.progress.fraction * 100)}% ${t.progress.message}</dd>` : "")}
      ${raw(t.waiting_for && t.waiting_for.length ? h`<dt>Waiting for</dt><dd id="waiting-for">${t.waiting_for.map(w => Object.entries(w).map(([k, v]) => `${k} ${typeof v === "string" ? v : JSON.stringify(v)}`).join(" ")).join(" · or ")}</dd>` : "")}
      ${raw(t.signals_pending && t.signals_pending.length ? h`<dt>Signals kept</dt><dd>${t.signals_pending.map(s => s.name).join(", ")}</dd>` : "")}
      ${raw(t.lease ? h`<dt>Lease</dt><dd>${t.lease.owner} until ${t.lease.expires_at}</dd>` : "")}
      ${raw(t.next_timer_at ? h`<dt>Next timer</dt><dd>${t.next_timer_at}</dd>` : "")}
      ${raw(t.parent_id ? h`<dt>Parent</dt><dd>${taskLink(t.parent_id)}</dd>` : "")}
      ${raw(t.children ? h`<dt>Children</dt><dd>${t.children.done} / ${t.children.total} done</dd>` : "")}
      <dt>Created</dt><dd>${t.created_at || ""} ${t.finished_at ? `· finished ${t.finished_at}` : ""}</dd>
    </dl>${raw(buttons)}</div>
    <div class="card"><h2 style="margin-top:0">Budget</h2><table><tbody>${raw(gauges.map(([name, used, limit, fmt]) =>
      h`<tr><td>${name}</td><td>${fmt(used)}${limit != null ? ` / ${fmt(limit)}` : ""}</td><td style="width:50%">${limit ? bar(used / limit, used >= limit) : ""}</td></tr>`).join(""))}</tbody></table></div>
    ${raw(t.error ? h`<div class="card"><h2 style="margin-top:0">Error</h2><pre>${JSON.stringify(t.error, null, 2)}</pre></div>` : "")}
    ${raw(t.result !== undefined && t.result !== null ? h`<div class="card"><h2 style="margin-top:0">Result</h2><pre id="task-result">${JSON.stringify(t.result, null, 2)}</pre></div>` : "")}`;
}

const deadFilterKeys = ["agent", "step", "bucket", "reason", "since"];

function groupTable(groups, withActions) {
  const act = withActions && canAct();
  return table([
    col("Count", g => g.count),
    col("Agent · step · bucket", g => [g.agent, g.step, g.bucket].filter(Boolean).join(" · ")),
    col("Sample error", g => g.sample, "wrap"),
    col("Last seen", g => ago(g.last_seen), "hide-sm"),
    ...(withActions ? [col("", g => raw(`<div class="actions"><button data-action="members">Members</button>${act ? `<button data-action="group-redrive" class="primary">Redrive…</button><button data-action="group-discard" class="danger">Discard…</button>` : ""}</div><div class="confirm-box"></div><div class="members"></div>`))] : []),
  ], groups, g => `data-group="${esc(g.key)}"`);
}

function deadFilter() {
  const params = currentRoute().params;
  const filter = {};
  for (const key of deadFilterKeys) if (params.get(key)) filter[key] = params.get(key);
  return filter;
}

async function deadPage(gen) {
  const filter = deadFilter();
  const groups = await api(`/v1/dead${query({ group_by: "fingerprint", ...filter })}`);
  if (stale(gen)) return;
  main.innerHTML = h`<h1>Dead letters</h1>
  <form class="filters" id="dead-filters">${raw(deadFilterKeys.map(k => h`<input name="${k}" placeholder="${k}${k === "since" ? " (e.g. 24h)" : ""}" value="${filter[k] || ""}" size="10">`).join(""))}
    <button type="submit">Filter</button><button type="button" data-view="export-dead" id="export-dead">Export JSONL</button></form>
  <p class="muted">Grouped by fingerprint (agent, step, bucket and the error with ids and numbers blanked). A redrive shows a dry run first.</p>
  ${raw(groupTable(groups.items, true))}`;
  document.getElementById("dead-filters").addEventListener("submit", e => {
    e.preventDefault();
    const f = new FormData(e.target);
    location.hash = `#/dead${query(Object.fromEntries(deadFilterKeys.map(k => [k, f.get(k)])))}`;
  });
}

async function showMembers(row) {
  const box = row.querySelector(".members");
  if (box.innerHTML) { box.innerHTML = ""; return; }
  const data = await api(`/v1/dead${query({ ...deadFilter(), fingerprint: row.dataset.group, limit: "200" })}`);
  const act = canAct();
  box.innerHTML = table([
    col("Task", l => l.task_id ? taskLink(l.task_id) : "—"),
    col("Step", l => l.step || ""),
    col("Error", l => l.error, "wrap"),
    col("Dead", l => ago(l.dead_at)),
    ...(act ? [col("", () => raw(`<div class="actions"><button data-action="letter-redrive">Redrive</button><button data-action="letter-discard">Discard</button></div>`))] : []),
  ], data.items, l => `data-letter="${esc(l.id)}"`) + (data.total > data.items.length ? `<p class="muted">${data.items.length} of ${data.total} shown</p>` : "");
}

async function dryRun(verb, row) {
  const fingerprint = row.dataset.group;
  const filter = { ...deadFilter(), fingerprint };
  const report = await post(`/v1/dead/${verb}`, { filter, reason: "dry run", dry_run: true });
  const box = row.querySelector(".confirm-box");
  box.innerHTML = h`<div class="confirm" data-verb="${verb}">
    <p>Dry run: <b id="dry-run-count">${report.count}</b> dead letter(s) would be ${verb === "redrive" ? "redriven" : "discarded"}${report.samples && report.samples.length ? `, e.g. ${report.samples.map(s => s.task_id || s.id).join(", ")}` : ""}.</p>
    <div class="actions"><input class="bulk-reason" placeholder="reason (required, audited)" size="26">
    <button class="${verb === "redrive" ? "primary" : "danger"}" data-action="confirm-bulk">Confirm ${verb} of ${report.count}</button>
    <button data-action="cancel-bulk">Cancel</button></div></div>`;
}

async function confirmBulk(row) {
  const box = row.querySelector(".confirm");
  const verb = box.dataset.verb;
  const reason = box.querySelector(".bulk-reason").value.trim();
  if (!reason) { flash("Say why: the reason goes into the audit stream.", "error"); return; }
  const report = await post(`/v1/dead/${verb}`, { filter: { ...deadFilter(), fingerprint: row.dataset.group }, reason });
  flash(`${verb === "redrive" ? "Redrove" : "Discarded"} ${report.count} of ${report.selected} dead letter(s)`);
  return route();
}

function workerTable(workers, withActions = false) {
  const sorted = workers.slice().sort((a, b) => a.heartbeat_age_s - b.heartbeat_age_s);
  return table([
    col("Worker", w => w.id),
    col("State", w => w.heartbeat_age_s > state.staleAfter ? statusBadge("stale") : statusBadge(w.drain ? "draining" : "live")),
    col("In flight", w => w.in_flight),
    col("Heartbeat", w => `${Number(w.heartbeat_age_s).toFixed(1)} s ago`),
    col("Info", w => w.info ? Object.entries(w.info).map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`).join(" ") : "", "wrap hide-sm"),
    ...(withActions && canAct() ? [col("", w => raw(w.drain ? `<span class="muted">drain requested by ${esc(w.drain.actor)}</span>` : `<button class="danger" data-action="drain">Drain</button>`))] : []),
  ], sorted, w => `data-worker="${esc(w.id)}"`);
}

async function workersPage(gen) {
  const render = async () => {
    const data = await api("/v1/workers");
    const box = document.getElementById("workers");
    if (box && !stale(gen)) box.innerHTML = workerTable(data.items, true);
  };
  main.innerHTML = `<h1>Workers</h1><div id="workers"></div>`;
  await render();
  every(5000, () => render().catch(() => {}), gen);
}

async function auditPage(gen) {
  const data = await api("/v1/audit?limit=200");
  if (stale(gen)) return;
  main.innerHTML = h`<h1>Audit</h1>` + table([
    col("When", e => e.at), col("Actor", e => e.actor), col("Action", e => e.action),
    col("Target", e => e.target || e.filter || "", "wrap"), col("Count", e => e.count, "hide-sm"), col("Reason", e => e.reason, "wrap"),
  ], data.items);
}

async function updateInboxCount(known) {
  try {
    const n = known ?? (await api("/v1/inbox")).items.length;
    document.getElementById("inbox-count").textContent = n ? String(n) : "";
  } catch (_) { /* shown by the page */ }
}

// ---------- routing ----------

function currentRoute() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, search] = hash.split("?");
  return { parts: path.split("/").filter(Boolean), params: new URLSearchParams(search || "") };
}

async function route() {
  state.timers.forEach(clearInterval);
  state.timers = [];
  if (state.stream) { state.stream.close(); state.stream = null; }
  delete document.body.dataset.ready;
  const gen = ++state.route;
  const { parts, params } = currentRoute();
  const page = parts[0] || "overview";
  document.querySelectorAll("nav a").forEach(a => a.classList.toggle("active", a.dataset.page === (page === "task" ? "tasks" : page)));
  document.body.dataset.page = page;
  try {
    switch (page) {
      case "overview": await overview(gen); break;
      case "inbox": await inboxPage(params, gen); break;
      case "tasks": await tasksPage(params, gen); break;
      case "task": await taskPage(decodeURIComponent(parts.slice(1).join("/")), gen); break;
      case "dead": await deadPage(gen); break;
      case "workers": await workersPage(gen); break;
      case "audit": await auditPage(gen); break;
      default: main.innerHTML = h`<h1>Not found</h1><p>No page '${page}'. <a href="#/">Overview</a></p>`;
    }
    if (stale(gen)) return;
    if (page !== "inbox" || params.get("agent") || params.get("tenant")) updateInboxCount();
    document.body.dataset.ready = page;
  } catch (error) {
    if (stale(gen)) return;
    showError(error);
    document.body.dataset.ready = "error";
  }
}

window.addEventListener("hashchange", route);
whoami().then(route);
