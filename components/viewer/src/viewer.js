// The viewer page's script, served as a file: the page's Content-Security-Policy
// allows no inline script. It reads the stream with the TypeScript client
// (@crm-events/client, served beside it as client.js): exact resume across
// disconnects, sign-in through the session cookie, and gap, reset and auth_expired.
import { connect, getSession, signOut } from "./client.js";

const $ = (id) => document.getElementById(id);
const list = $("events");
const state = { stream: null, lastId: "", streamTenant: "", paused: false, buffer: [], kept: [], total: 0, times: [], token: null };

function setStatus(s) { const el = $("status"); el.dataset.state = s; el.textContent = s; }

// The client's connection states, as the page shows them.
const STATUS = { connecting: "connecting", live: "live", retrying: "down", signing_in: "down", closed: "down" };

// Streams the filters' tenant and types. Each tenant has a stream of its own
// (operators also the all-tenants one), and a position belongs to the stream it
// came from: another tenant starts anew, with the last 100 entries.
async function start() {
  if (state.stream) state.stream.close();
  const tenant = $("tenant").value.trim(), type = $("type").value.trim();
  if (tenant !== state.streamTenant) {
    // The new stream replays its last 100 entries: the cards shown so far would
    // come twice, so they go first.
    state.lastId = ""; state.streamTenant = tenant;
    state.kept = []; state.buffer = []; list.replaceChildren(); $("pending").textContent = "";
  }
  const stream = connect({
    signIn: askForToken,
    onSession: showIdentity,
    tenant: tenant || undefined,
    types: type ? type.split(",").map((t) => t.trim()).filter(Boolean) : undefined,
    lastEventId: state.lastId || undefined,
    tail: 100,
    // An operator watching wants the stream back soon after the service is.
    maxRetryMs: 5000,
    onStatus: (s) => { if (state.stream === stream) setStatus(STATUS[s.state] || "down"); },
  });
  state.stream = stream;
  try {
    for await (const item of stream) {
      if (stream.lastEventId) state.lastId = stream.lastEventId;
      // The client signs in again by itself (askForToken shows the form).
      if (item.type === "connected" || item.type === "auth_expired") continue;
      receive({ id: item.id, ev: item.data });
    }
  } catch (e) {
    if (state.stream !== stream) return;
    setStatus("down");
    showSignIn(e.message || "The stream was refused.");
  }
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
  start();
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
// Sign-in: the token goes to /crm-events/session once (the client posts it), which
// answers with an HttpOnly cookie; the page never keeps the token.
function showSignIn(message) {
  $("signin").classList.remove("hidden");
  $("signin-error").textContent = message || "";
  $("signout").classList.add("hidden");
  $("whoami").textContent = "";
  $("token").focus();
}

// The client's signIn: shows the form with why (none for a first visit) and waits
// for a token.
function askForToken(refusal) {
  setStatus("down");
  const why = !refusal || refusal.code === "missing_token" ? ""
    : refusal.code === "auth_expired" ? "The session expired: sign in again to resume where the stream stopped."
    : refusal.message;
  showSignIn(why);
  return new Promise((resolve) => { state.token = resolve; });
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
  $("whoami").textContent = `${s.subject || "(no subject)"} · ${tenants.join(", ")}${until}`;
  $("signout").classList.remove("hidden");
}

$("signin").addEventListener("submit", (e) => {
  e.preventDefault();
  const token = $("token").value.trim();
  $("token").value = "";
  if (!token) return;
  if (state.token) { const give = state.token; state.token = null; give(token); }
  else { start(); }
});
$("signout").addEventListener("click", async () => {
  if (state.stream) state.stream.close();
  state.stream = null;
  await signOut().catch(() => null);
  setStatus("down");
  showSignIn("Signed out.");
});

// On load: show who the session is (when there is one), then stream; without a
// session the client asks for a token.
async function load() {
  const session = await getSession().catch(() => null);
  if (session) showIdentity(session);
  start();
}
setInterval(updateStats, 1000);
load();
