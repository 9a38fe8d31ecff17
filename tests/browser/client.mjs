// The TypeScript client (clients/typescript/dist) against the running app, for
// tests/it/client.rs, in Node (`MODE=node`: a bearer header, tokens from a refresh
// function) or in Chromium (`MODE=browser`: the module the app serves, signed in
// through the session cookie). One scenario for both:
//   events 1-10 stream live; the Rust test kills the app and the sidecar and
//   produces 11-20 while they are down, then restarts them; the token expires
//   (auth_expired) and the client renews it and resumes; 21-30 stream; event 31 is
//   published with one idempotency key twice (the second answer is a replay).
// Every event of the tenant must arrive exactly once, in order, and nothing of
// the other tenant at all.
import { ask, check, launchChromium, verdict } from "./stdio.mjs";

const env = { base: process.env.BASE_URL, tenant: process.env.TENANT, mode: process.env.MODE };

/**
 * The scenario, self-contained (it is sent into the page as source text): `lib` is the
 * client module, `ask` reaches the Rust test. Resolves with what it saw.
 */
async function scenario(lib, env, ask) {
  const seqs = [];
  const states = new Set();
  let expired = 0;
  let phase = "start";
  const options = {
    url: env.base,
    tenant: env.tenant,
    minRetryMs: 200,
    maxRetryMs: 2000,
    onStatus: (s) => states.add(s.state),
  };
  const fresh = () => ask("TOKEN tenant 8");
  if (env.mode === "browser") options.signIn = fresh;
  else options.token = fresh;
  const stream = lib.connect(options);
  const deadline = setTimeout(() => stream.close(), 150000);
  const receipts = [];
  for await (const item of stream) {
    if (item.type === "auth_expired") { expired += 1; continue; }
    if (item.type === "connected") {
      if (phase === "start") { phase = "live"; await ask("PRODUCE 1 10"); }
      else if (phase === "expiring" && expired > 0) { phase = "renewed"; await ask("PRODUCE 21 30"); }
      continue;
    }
    if (item.type !== "event") throw new Error("unexpected " + item.type + ": " + JSON.stringify(item.data));
    const value = item.data.value;
    if (value.TenantId !== env.tenant) throw new Error("another tenant's event: " + JSON.stringify(value));
    if ("partition" in item.data || "offset" in item.data) throw new Error("a tenant's event with Kafka coordinates");
    seqs.push(value.Seq);
    if (value.Seq === 10) { phase = "killed"; await ask("KILL 11 20"); }
    if (value.Seq === 20) phase = "expiring";
    if (value.Seq === 30) {
      const publishOptions = { url: env.base, token: () => ask("TOKEN publisher 600"), idempotencyKey: "client-" + env.mode + "-31" };
      const event = { type: "JobCreated", tenant_id: env.tenant, payload: { JobId: "job-31", Seq: 31 } };
      receipts.push(await lib.publish(event, publishOptions));
      receipts.push(await lib.publish(event, publishOptions));
    }
    if (value.Seq === 31) break;
  }
  clearTimeout(deadline);
  return { seqs, states: [...states], expired, receipts, lastEventId: stream.lastEventId };
}

function judge(seen) {
  const want = Array.from({ length: 31 }, (_, i) => i + 1);
  check(JSON.stringify(seen.seqs) === JSON.stringify(want), "events 1-31 exactly once, in order: got " + seen.seqs.join(","));
  check(seen.expired >= 1, "the token expired at least once (auth_expired)");
  check(seen.states.includes("retrying"), "the client retried while the app was down: " + seen.states);
  const [first, again] = seen.receipts;
  check(first && again && first.id === again.id, "one receipt for one key: " + JSON.stringify(seen.receipts));
  check(!first.replayed && again.replayed, "the second publish is a replay");
  check(/^[0-9]+-[0-9]+\.[0-9a-f]+$/.test(seen.lastEventId || ""), "lastEventId is a position: " + seen.lastEventId);
}

async function inNode() {
  const lib = await import("../../clients/typescript/dist/index.js");
  return scenario(lib, env, ask);
}

async function inChromium() {
  const browser = await launchChromium();
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.exposeFunction("askTest", (line) => ask(line));
    // A page of the app's origin, so the session cookie is first-party.
    await page.goto(env.base + "/healthz");
    const seen = await page.evaluate(`(async () => {
      const lib = await import("/ops/crm-events/client.js");
      return (${scenario.toString()})(lib, ${JSON.stringify(env)}, (line) => window.askTest(line));
    })()`);
    check(errors.length === 0, "no page errors: " + errors.join(" | "));
    return seen;
  } finally {
    await browser.close();
  }
}

await verdict(async () => {
  const seen = env.mode === "browser" ? await inChromium() : await inNode();
  judge(seen);
  console.log("seen " + JSON.stringify({ ...seen, seqs: seen.seqs.length }));
});
