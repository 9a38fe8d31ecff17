// The viewer page's script, served as a file: the page's Content-Security-Policy
// allows no inline script.
"use strict";
const $ = (id) => document.getElementById(id);
const list = $("events");
const state = { source: null, lastId: "", streamTenant: "", paused: false, buffer: [], kept: [], total: 0, times: [] };

function setStatus(s) { const el = $("status"); el.dataset.state = s; el.textContent = s; }

function streamUrl() {
  const q = new URLSearchParams();
  const tenant = $("tenant").value.trim(), type = $("type").value.trim();
  // Each tenant has a stream of its own (operators also the all-tenants one), and a
  // position belongs to the stream it came from: another tenant starts anew.
  if (tenant !== state.streamTenant) { state.lastId = ""; state.streamTenant = tenant; }
  if (tenant) q.set("tenant", tenant);
  if (type) q.set("type", type);
  if (state.lastId) q.set("last_event_id", state.lastId);
  else q.set("tail", "100");
  const s = q.toString();
  return "/crm-events" + (s ? "?" + s : "");
}

function connect() {
  if (state.source) state.source.close();
  setStatus("connecting");
  const es = new EventSource(streamUrl());
  state.source = es;
  es.onopen = () => setStatus("live");
  es.onerror = () => {
    setStatus("down");
    // The browser retries by itself unless the server answered with an error status
    // (401 when the session is gone); then the source is closed for good: check the
    // session, and open a new one resuming after lastId.
    if (es.readyState === EventSource.CLOSED && state.source === es) setTimeout(checkSession, 3000);
  };
  es.addEventListener("auth_expired", () => {
    es.close();
    state.source = null;
    setStatus("down");
    showSignIn("The session expired: sign in again to resume where the stream stopped.");
  });
  // The stream was rebuilt (Redis lost its data): say so in the list; what follows
  // may repeat events already shown.
  es.addEventListener("reset", (m) => {
    if (m.lastEventId) state.lastId = m.lastEventId;
    let ev;
    try { ev = JSON.parse(m.data); } catch { ev = { kind: "unreadable" }; }
    receive({ id: m.lastEventId, ev, raw: m.data });
  });
  es.onmessage = (m) => {
    if (m.lastEventId) state.lastId = m.lastEventId;
    let ev;
    try { ev = JSON.parse(m.data); } catch { ev = { kind: "unreadable" }; }
    if (ev && ev.kind === "connected") { setStatus("live"); return; }
    receive({ id: m.lastEventId, ev, raw: m.data });
  };
}

function receive(item) {
  if (item.ev && item.ev.kind === "domain_event") {
    state.total += 1;
    state.times.push(performance.now());
  }
  if (state.paused) {
    state.buffer.push(item);
    $("pending").textContent = state.buffer.length + " new";
    updateStats();
    return;
  }
  keep(item);
  show(item);
  trim();
  updateStats();
}

// A card for the item; one that cannot be rendered (a payload built to break the
// page, say) is shown as its raw JSON text instead, and never stops the list.
function show(item) {
  try {
    render(item);
  } catch (e) {
    renderRaw(item);
  }
}

function renderRaw(item) {
  const li = document.createElement("li");
  li.className = "event notice raw";
  const pre = document.createElement("pre");
  pre.textContent = item.raw !== undefined ? item.raw : safeJson(item.ev);
  li.dataset.json = pre.textContent.toLowerCase();
  li.dataset.type = "";
  li.dataset.tenant = "";
  li.append(pre);
  applyText(li);
  list.prepend(li);
}

function safeJson(v, indent) {
  try { return JSON.stringify(v, null, indent); } catch { return String(Object.prototype.toString.call(v)); }
}

// Text of a payload field: strings, numbers and booleans as they are; anything else
// (objects, arrays, null) as its JSON, so no field's own toString is ever called.
function text(x) {
  if (typeof x === "string") return x;
  if (typeof x === "number" || typeof x === "boolean") return String(x);
  if (x === undefined) return "";
  return safeJson(x);
}

function keep(item) { state.kept.push(item); }

function limit() { const n = parseInt($("keep").value, 10); return Number.isFinite(n) && n > 0 ? n : 1000; }

function trim() {
  const max = limit();
  while (state.kept.length > max) state.kept.shift();
  while (list.children.length > max) list.lastElementChild.remove();
}

function kindClass(type) {
  if (/Created$/.test(type)) return "created";
  if (/Updated$/.test(type)) return "updated";
  if (/Deleted$/.test(type)) return "deleted";
  return "";
}

function render(item) {
  const ev = item.ev;
  if (!ev || typeof ev !== "object") throw new TypeError("not an event object");
  const li = document.createElement("li");
  li.className = "event";
  const json = safeJson(ev, 2);
  li.dataset.json = json.toLowerCase();
  let type, where, when, tenant = "", what = "";
  if (ev.kind === "domain_event") {
    const v = ev.value && typeof ev.value === "object" ? ev.value : {};
    type = eventType(ev);
    tenant = tenantOf(ev);
    where = `${text(ev.topic)}:${text(ev.partition)}@${text(ev.offset)}`;
    when = typeof ev.timestamp === "number" ? localTime(ev.timestamp) : "";
    what = describe(v);
    li.classList.add(...[kindClass(type)].filter(Boolean));
  } else {
    type = text(ev.kind); where = text(ev.reason); when = ""; what = text(ev.message); li.classList.add("notice");
  }
  li.dataset.type = type;
  li.dataset.tenant = tenant;
  const meta = document.createElement("div");
  meta.className = "meta";
  for (const [cls, text] of [["type", type], ["tenant", tenant], ["when", when], ["where", where]]) {
    if (!text) continue;
    const s = document.createElement("span"); s.className = cls; s.textContent = text; meta.append(s);
  }
  const summaryLine = document.createElement("div");
  summaryLine.className = "summary";
  summaryLine.textContent = what;
  const details = document.createElement("details");
  const summary = document.createElement("summary"); summary.textContent = "JSON";
  const pre = document.createElement("pre"); pre.textContent = json;
  details.append(summary, pre);
  li.append(meta);
  if (what) li.append(summaryLine);
  li.append(details);
  applyText(li);
  list.prepend(li);
}

function eventType(ev) {
  const v = ev.value && typeof ev.value === "object" ? ev.value : {};
  if (v.Type !== undefined && v.Type !== null && v.Type !== "") return text(v.Type);
  return typeof ev.key === "string" ? ev.key : "event";
}

function tenantOf(ev) {
  const v = ev.value && typeof ev.value === "object" ? ev.value : {};
  return v.TenantId === undefined || v.TenantId === null ? "" : text(v.TenantId);
}

// "job-7 · Service visit #7 · Open": the entity's id, then its title or name, then status.
function describe(v) {
  const id = ["JobId", "ContactId", "AccountId", "EntityId", "Id"].map((k) => v[k]).find((x) => x !== undefined);
  const title = v.Title || v.Name || v.DisplayName;
  return [id, title, v.Status].filter((x) => x !== undefined && x !== null && x !== "").map(text).join(" · ");
}

// Local time with its zone, e.g. "24/11/2026, 15:04:05 GMT+1".
function localTime(ms) {
  return new Date(ms).toLocaleString(undefined, { hour12: false, timeZoneName: "short" });
}

function applyText(li) {
  const needle = $("text").value.trim().toLowerCase();
  li.classList.toggle("hidden", needle !== "" && !li.dataset.json.includes(needle));
}

function updateStats() {
  const now = performance.now();
  while (state.times.length && now - state.times[0] > 5000) state.times.shift();
  $("total").textContent = state.total;
  $("rate").textContent = (state.times.length / 5).toFixed(1);
  $("shown").textContent = state.kept.length;
}

$("pause").addEventListener("click", () => {
  state.paused = !state.paused;
  $("pause").textContent = state.paused ? "Resume" : "Pause";
  $("pause").setAttribute("aria-pressed", String(state.paused));
  if (!state.paused) {
    const buffered = state.buffer.splice(0);
    for (const item of buffered) { keep(item); show(item); }
    trim();
    $("pending").textContent = "";
    updateStats();
  }
});
$("clear").addEventListener("click", () => {
  state.kept = []; state.buffer = []; list.replaceChildren();
  $("pending").textContent = ""; updateStats();
});
$("text").addEventListener("input", () => { for (const li of list.children) applyText(li); });
// New server filters: drop what they no longer admit, then stream with them.
function applyServerFilters() {
  const list_ = (id) => $(id).value.split(",").map((x) => x.trim()).filter(Boolean);
  const tenants = list_("tenant"), types = list_("type");
  const admits = (item) => !item.ev || item.ev.kind !== "domain_event" ||
    ((!tenants.length || tenants.includes(tenantOf(item.ev))) && (!types.length || types.includes(eventType(item.ev))));
  state.kept = state.kept.filter(admits);
  state.buffer = state.buffer.filter(admits);
  for (const li of [...list.children]) {
    const ok = (!tenants.length || tenants.includes(li.dataset.tenant)) && (!types.length || types.includes(li.dataset.type));
    if (!ok && !li.classList.contains("notice")) li.remove();
  }
  updateStats();
  connect();
}
$("apply").addEventListener("click", applyServerFilters);
for (const id of ["tenant", "type"]) {
  $(id).addEventListener("keydown", (e) => { if (e.key === "Enter") applyServerFilters(); });
}
$("keep").addEventListener("change", () => { trim(); updateStats(); });
$("download").addEventListener("click", () => {
  const lines = state.kept.map((i) => i.raw !== undefined ? i.raw : safeJson(i.ev)).join("\n") + (state.kept.length ? "\n" : "");
  const url = URL.createObjectURL(new Blob([lines], { type: "application/x-ndjson" }));
  const a = document.createElement("a");
  a.href = url; a.download = "crm-events.jsonl"; document.body.append(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
});
// Sign-in: the token goes to /crm-events/session once, which answers with an
// HttpOnly cookie; the page never keeps the token.
function showSignIn(message) {
  $("signin").classList.remove("hidden");
  $("signin-error").textContent = message || "";
  $("signout").classList.add("hidden");
  $("whoami").textContent = "";
  $("token").focus();
}

function showIdentity(s) {
  $("signin").classList.add("hidden");
  // A token for several tenants streams one at a time: start with the first.
  const tenants = s.tenants || [];
  if (!$("tenant").value && tenants.length > 1 && !tenants.includes("*")) $("tenant").value = tenants[0];
  if (s.auth_mode === "none") {
    $("whoami").textContent = "auth off: every tenant";
    return;
  }
  const until = s.expires_at ? " · until " + localTime(s.expires_at * 1000) : "";
  $("whoami").textContent = `${s.subject || "(no subject)"} · ${s.tenants.join(", ")}${until}`;
  $("signout").classList.remove("hidden");
}

async function checkSession() {
  const r = await fetch("/crm-events/session", { credentials: "same-origin" }).catch(() => null);
  if (!r) { setStatus("down"); setTimeout(checkSession, 3000); return; }
  if (r.status === 401) { setStatus("down"); showSignIn(""); return; }
  if (!r.ok) { setStatus("down"); setTimeout(checkSession, 3000); return; }
  showIdentity(await r.json());
  connect();
}

$("signin").addEventListener("submit", async (e) => {
  e.preventDefault();
  const token = $("token").value.trim();
  if (!token) return;
  const r = await fetch("/crm-events/session", {
    method: "POST", credentials: "same-origin", headers: { Authorization: "Bearer " + token },
  }).catch(() => null);
  $("token").value = "";
  if (!r) { showSignIn("The service cannot be reached."); return; }
  const body = await r.json().catch(() => ({}));
  if (!r.ok) { showSignIn(body.message || "Sign-in failed."); return; }
  showIdentity(body);
  connect();
});
$("signout").addEventListener("click", async () => {
  if (state.source) state.source.close();
  state.source = null;
  await fetch("/crm-events/session", { method: "DELETE", credentials: "same-origin" }).catch(() => null);
  setStatus("down");
  showSignIn("Signed out.");
});
setInterval(updateStats, 1000);
checkSession();
