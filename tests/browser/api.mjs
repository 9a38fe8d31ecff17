// The API documents against the running app, for tests/it/api.rs:
// docs/src/api/openapi.json and docs/src/api/asyncapi.json must pass their validators
// (@apidevtools/swagger-parser, @asyncapi/parser); every answer the app gives here
// (status, content type, JSON body) must be one the OpenAPI document describes; every
// SSE frame (connected, both cuts of domain_event, gap, reset, auth_expired) must match
// the AsyncAPI message its event name and kind select. Tokens come from the Rust test
// (`TOKEN <kind> <ttl seconds>`).
import SwaggerParser from "@apidevtools/swagger-parser";
import { Parser } from "@asyncapi/parser";
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";
import { readFileSync } from "node:fs";
import { ask, check, verdict } from "./stdio.mjs";
import { SseParser } from "../../clients/typescript/dist/index.js";

const base = process.env.BASE_URL;
const tenant = process.env.TENANT;
const root = new URL("../../", import.meta.url);
const load = (p) => JSON.parse(readFileSync(new URL(p, root), "utf8"));

const ajv = new Ajv2020({ strict: false, allErrors: true });
addFormats(ajv);

/** Validates `value` against `schema`, naming `what` on failure. */
function conforms(schema, value, what) {
  const validate = ajv.compile(schema);
  check(validate(value), `${what}: ${ajv.errorsText(validate.errors)} in ${JSON.stringify(value).slice(0, 400)}`);
}

async function validDocuments() {
  const openapi = await SwaggerParser.validate(structuredClone(load("docs/src/api/openapi.json")));
  check(openapi.openapi.startsWith("3.1"), "OpenAPI 3.1");
  const diagnostics = await new Parser().validate(readFileSync(new URL("docs/src/api/asyncapi.json", root), "utf8"));
  const errors = diagnostics.filter((d) => d.severity === 0);
  check(errors.length === 0, "AsyncAPI document: " + errors.map((d) => `${d.path.join(".")}: ${d.message}`).join("; "));
  const asyncapi = load("docs/src/api/asyncapi.json");
  check(asyncapi.asyncapi.startsWith("3."), "AsyncAPI 3");
  return { openapi, asyncapi };
}

/** Checks an HTTP answer against the OpenAPI operation's documented responses. */
function answerConforms(openapi, method, path, response, body) {
  const operation = openapi.paths[path]?.[method.toLowerCase()];
  check(operation, `${method} ${path} is documented`);
  const documented = operation.responses[String(response.status)];
  check(documented, `${method} ${path} → ${response.status} is documented`);
  const type = (response.headers.get("content-type") || "").split(";")[0].trim();
  if (!documented.content) return;
  const media = documented.content[type];
  check(media, `${method} ${path} → ${response.status} as ${type} is documented (${Object.keys(documented.content)})`);
  if (type === "application/json") conforms(media.schema, JSON.parse(body), `${method} ${path} → ${response.status}`);
  for (const [name, header] of Object.entries(documented.headers || {})) {
    if (header.required) check(response.headers.has(name), `${method} ${path} → ${response.status} has ${name}`);
  }
}

/** Makes a request and checks its answer; returns it with its text. */
async function call(openapi, method, path, init = {}) {
  const route = path.split("?")[0];
  const response = await fetch(base + path, { method, redirect: "manual", ...init });
  const body = response.headers.get("content-type")?.startsWith("text/event-stream") ? "" : await response.text();
  const path_ = route === "/nope" ? "/" : route;
  // A method a route does not take is answered 405, documented on its GET.
  const documented = openapi.paths[path_]?.[method.toLowerCase()] || response.status !== 405 ? method : "GET";
  answerConforms(openapi, documented, path_, response, body);
  return { response, body };
}

const bearer = (token) => ({ authorization: "Bearer " + token });
const token = async (kind, ttl = 3600) => ask(`TOKEN ${kind} ${ttl}`);

async function httpRoutes(openapi) {
  for (const path of ["/", "/healthz", "/metrics", "/ops/crm-events", "/ops/crm-events/viewer.js",
                      "/ops/crm-events/viewer.css", "/ops/crm-events/client.js", "/nope"]) {
    await call(openapi, "GET", path);
  }
  // Ready once the sidecar's heartbeat is there.
  for (let i = 0; ; i++) {
    const { response } = await call(openapi, "GET", "/readyz");
    if (response.status === 200) break;
    check(i < 100, "/readyz turns 200");
    await new Promise((r) => setTimeout(r, 200));
  }
  await call(openapi, "OPTIONS", "/crm-events", { headers: { origin: base } });
}

async function session(openapi) {
  check((await call(openapi, "POST", "/crm-events/session")).response.status === 401, "session without a token: 401");
  const signed = await call(openapi, "POST", "/crm-events/session", { headers: bearer(await token("tenant")) });
  check(signed.response.status === 200, "session sign-in: 200");
  const cookie = signed.response.headers.get("set-cookie").split(";")[0];
  check((await call(openapi, "GET", "/crm-events/session", { headers: { cookie } })).response.status === 200, "session: 200");
  check((await call(openapi, "DELETE", "/crm-events/session", { headers: { cookie } })).response.status === 200, "sign-out: 200");
  check((await call(openapi, "GET", "/crm-events/session")).response.status === 401, "no session: 401");
}

async function publishAnswers(openapi) {
  const publisher = bearer(await token("publisher"));
  const json = { "content-type": "application/json" };
  const body = (seq) => JSON.stringify({ type: "JobCreated", tenant_id: tenant, payload: { JobId: "job-" + seq, Seq: seq } });
  const post = (headers, b = body(0)) => call(openapi, "POST", "/crm-events", { headers, body: b });
  const expect = async (status, headers, b) => {
    const got = (await post(headers, b)).response.status;
    check(got === status, `publish: ${status} expected, got ${got}`);
  };
  await expect(400, { ...publisher, ...json });
  await expect(401, { ...json, "idempotency-key": '"k-401"' });
  await expect(403, { ...bearer(await token("tenant")), ...json, "idempotency-key": '"k-403"' });
  await expect(415, { ...publisher, "content-type": "text/plain", "idempotency-key": '"k-415"' });
  await expect(202, { ...publisher, ...json, "idempotency-key": '"k-1"' }, body(1));
  const replay = await post({ ...publisher, ...json, "idempotency-key": '"k-1"' }, body(1));
  check(replay.response.headers.get("idempotent-replayed") === "true", "a replay says so");
  await expect(422, { ...publisher, ...json, "idempotency-key": '"k-1"' }, body(2));
  return async (seq) => expect(202, { ...publisher, ...json, "idempotency-key": `"seq-${seq}"` }, body(seq));
}

async function streamRefusals(openapi) {
  const tenantToken = bearer(await token("tenant"));
  const refused = async (status, path, headers) => {
    const got = (await call(openapi, "GET", path, { headers })).response.status;
    check(got === status, `GET ${path}: ${status} expected, got ${got}`);
  };
  await refused(401, "/crm-events", {});
  await refused(401, "/crm-events", bearer("not-a-token"));
  await refused(400, "/crm-events?tail=0", tenantToken);
  await refused(400, "/crm-events", { ...tenantToken, "last-event-id": "not-an-id" });
  await refused(403, "/crm-events?tenant=00000000-0000-4000-8000-000000000000", tenantToken);
  check((await call(openapi, "PUT", "/crm-events", { headers: tenantToken })).response.status === 405, "PUT: 405");
}

/**
 * Opens a stream and collects frames until `enough(frames)`; each frame is checked
 * against the AsyncAPI messages (`cut` picks which domain_event shape applies).
 */
async function frames(openapi, asyncapi, path, headers, cut, enough) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), 30000);
  const { response } = await call(openapi, "GET", path, { headers, signal: abort.signal });
  check(response.status === 200, `GET ${path}: 200, got ${response.status}`);
  const parser = new SseParser();
  const seen = [];
  const reader = response.body.getReader();
  try {
    while (!enough(seen)) {
      const { done, value } = await reader.read();
      if (done) break;
      for (const frame of parser.push(value)) {
        if (frame.data === "") continue;
        const data = JSON.parse(frame.data);
        frameConforms(asyncapi, frame, data, cut);
        seen.push({ ...frame, json: data });
      }
    }
  } catch (e) {
    if (!abort.signal.aborted) throw e;
  } finally {
    clearTimeout(timer);
    abort.abort();
  }
  check(enough(seen), `${path}: the expected frames came (${seen.map((f) => f.json.kind)})`);
  return seen;
}

/** The AsyncAPI message for a frame: by its SSE event name and its kind. */
function frameConforms(asyncapi, frame, data, cut) {
  const messages = asyncapi.components.messages;
  const domain = cut === "tenant" ? "tenantDomainEvent" : "domainEvent";
  const candidates = Object.entries(messages).filter(([key, m]) =>
    (m["x-sse-event"] || "message") === frame.event && (data.kind !== "domain_event" || key === domain));
  const byKind = candidates.filter(([, m]) => {
    const name = m.payload.$ref.split("/").pop();
    return asyncapi.components.schemas[name].properties.kind.const === data.kind;
  });
  check(byKind.length === 1, `one message matches event "${frame.event}" kind "${data.kind}" (${byKind.length})`);
  const schemaName = byKind[0][1].payload.$ref.split("/").pop();
  conforms(asyncapi.components.schemas[schemaName], data, `SSE ${frame.event}/${data.kind} (${schemaName})`);
  const wantsId = byKind[0][1]["x-sse-id"] !== "none";
  if (!wantsId) check(frame.id === undefined, `${data.kind} carries no id`);
}

async function streamFrames(openapi, asyncapi, publishSeq) {
  const operator = bearer(await token("operator"));
  const tenantToken = bearer(await token("tenant"));
  const events = (n) => (fs) => fs.filter((f) => f.json.kind === "domain_event").length >= n;
  // The tenant's first event, then enough more that retention (5 entries) trims it.
  await publishSeq(100);
  const first = (await frames(openapi, asyncapi, "/crm-events?tail=1", tenantToken, "tenant", events(1)))
    .find((f) => f.json.kind === "domain_event");
  for (let seq = 101; seq < 110; seq++) await publishSeq(seq);
  await frames(openapi, asyncapi, "/crm-events?tail=5", operator, "operator", events(5));
  const tenantFrames = await frames(openapi, asyncapi, "/crm-events?tail=5", tenantToken, "tenant", (fs) =>
    fs.some((f) => f.json.kind === "domain_event" && f.json.value.Seq === 109));
  check(tenantFrames[0].json.kind === "connected", "a stream starts with connected");
  // Resuming after the trimmed first event: a gap, then the oldest held.
  const gap = await frames(openapi, asyncapi, "/crm-events?last_event_id=" + encodeURIComponent(first.id), tenantToken,
    "tenant", (fs) => fs.some((f) => f.json.kind === "gap"));
  check(gap.find((f) => f.json.kind === "gap").json.reason === "trimmed", "the gap says trimmed");
  // An id of another epoch: a reset.
  const epoch = first.id.split(".")[1];
  const other = epoch.replace(/^./, (c) => (c === "0" ? "1" : "0"));
  const reset = await frames(openapi, asyncapi, `/crm-events?last_event_id=1-0.${other}`, tenantToken, "tenant",
    (fs) => fs.some((f) => f.json.kind === "reset"));
  check(reset.find((f) => f.json.kind === "reset").event === "reset", "reset is its own event name");
  // A token that expires: auth_expired, then the end.
  const short = bearer(await token("tenant", 2));
  await frames(openapi, asyncapi, "/crm-events", short, "tenant", (fs) => fs.some((f) => f.json.kind === "auth_expired"));
}

await verdict(async () => {
  const { openapi, asyncapi } = await validDocuments();
  await httpRoutes(openapi);
  await session(openapi);
  const publishSeq = await publishAnswers(openapi);
  await streamRefusals(openapi);
  await streamFrames(openapi, asyncapi, publishSeq);
});
