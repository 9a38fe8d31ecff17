// Drives the viewer page in headless Chromium for tests/it/viewer.rs.
// It talks to the Rust test over stdio: it prints a step name and waits for the
// test's answer line (the test produces events, stops and starts the app).
import { readFileSync } from "node:fs";
import { ask, check, launchChromium } from "./stdio.mjs";

const base = process.env.BASE_URL;
const browser = await launchChromium();
const errors = [];
try {
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1200, height: 800 } });
  const page = await context.newPage();
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  const visible = () => page.locator("#events li.event:not(.hidden)").count();
  const status = () => page.locator("#status").textContent();

  // Access control is on: the page asks for a token; a bad one is refused with the
  // server's reason, a good one signs in (HttpOnly cookie) and the stream goes live.
  await page.goto(base + "/ops/crm-events");
  await page.waitForSelector("#signin", { state: "visible" });
  await page.fill("#token", "not.a.token");
  await page.click("#signin-button");
  await page.waitForFunction(() => document.querySelector("#signin-error").textContent.includes("malformed"));
  await page.fill("#token", process.env.TOKEN);
  await page.click("#signin-button");
  await page.waitForFunction(() => document.querySelector("#status").textContent === "live");
  check((await page.locator("#whoami").textContent()).startsWith("ops-alice · *"), "shows the subject and its tenants");
  check(!(await page.locator("#signin").isVisible()), "the sign-in form is gone once signed in");
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "crm_events_session");
  check(session && session.httpOnly && session.sameSite === "Strict", "an HttpOnly, SameSite=Strict session cookie");
  check(!(await page.evaluate(() => document.cookie)).includes("crm_events_session"), "scripts cannot read the cookie");
  // The browser logs the three expected 401s (no session yet, the stream without
  // one, the bad token); any error from here on fails the test.
  check(errors.length === 3 && errors.every((e) => e.includes("401")), "only the expected 401s: " + errors.join(" | "));
  errors.length = 0;

  // Events produced to Kafka appear, newest first, coloured by type.
  const n = parseInt(await ask("READY"), 10);
  await page.waitForFunction((n) => document.querySelectorAll("#events li.event").length === n, n);
  check((await page.locator("#events li.created").count()) >= 1, "a Created event is green");
  check((await page.locator("#events li.deleted").count()) >= 1, "a Deleted event is red");
  check(/aetherlink\.events:\d+@\d+/.test(await page.locator("#events li .where").first().textContent()), "topic:partition@offset shown");
  // Each card says what happened without opening the JSON.
  const first = page.locator('#events li.event[data-type="JobCreated"]');
  check((await first.locator(".tenant").textContent()) === "tenant-acme", "the card names the tenant");
  check((await first.locator(".summary").textContent()) === "job-0 · Visit 0", "the card names the entity and its title");
  check(/\d{2}:\d{2}:\d{2}/.test(await first.locator(".when").textContent()), "local time with its zone");

  // Pause buffers and counts; resume shows them.
  await page.click("#pause");
  const m = parseInt(await ask("PAUSED"), 10);
  await page.waitForFunction((m) => document.querySelector("#pending").textContent === m + " new", m);
  check((await page.locator("#events li.event").count()) === n, "nothing rendered while paused");
  await page.click("#pause");
  await page.waitForFunction((t) => document.querySelectorAll("#events li.event").length === t, n + m);
  check((await page.locator("#pending").textContent()) === "", "pending cleared on resume");
  // The card whose Title is {"toString":1} shows it as JSON; the list went on past it.
  const hostile = page.locator('#events li.event[data-json*="job-6"]');
  check((await hostile.locator(".summary").textContent()) === 'job-6 · {"toString":1}', "a hostile field is shown as JSON");
  check((await page.locator('#events li.event[data-json*="job-7"]').count()) === 1, "the card after it is there");
  check(errors.length === 0, "no page errors from a hostile payload: " + errors.join(" | "));

  // The text filter hides and shows.
  await page.fill("#text", "tenant-globex");
  const globex = parseInt(await ask("FILTERED"), 10);
  check((await visible()) === globex, `filter shows the ${globex} globex events`);
  await page.fill("#text", "");
  check((await visible()) === n + m, "clearing the filter shows all");

  // Keyboard alone: the controls are in tab order (Shift+Tab from Clear reaches
  // Pause, Tab goes on to Clear), and Space toggles Pause.
  await page.focus("#clear");
  await page.keyboard.press("Shift+Tab");
  check(await page.evaluate(() => document.activeElement.id === "pause"), "Shift+Tab reaches Pause");
  await page.keyboard.press("Space");
  check((await page.locator("#pause").getAttribute("aria-pressed")) === "true", "Space pauses");
  await page.keyboard.press("Space");

  // Download: valid JSONL with exactly the kept events.
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#download")]);
  const text = readFileSync(await download.path(), "utf8");
  const rows = text.trimEnd().split("\n").map((l) => JSON.parse(l));
  check(rows.length === n + m, `download has ${rows.length} lines, expected ${n + m}`);
  check(rows.every((r) => r.kind === "domain_event" && typeof r.offset === "number"), "download rows are envelopes");

  // Phone width: no horizontal scrolling.
  await page.setViewportSize({ width: 375, height: 740 });
  check(await page.evaluate(() => document.documentElement.scrollWidth <= 375), "fits a phone-width screen");
  await page.screenshot({ path: process.env.SCREENSHOT_PHONE });
  await page.setViewportSize({ width: 1200, height: 800 });
  await page.locator("#events li details").first().evaluate((d) => (d.open = true));
  await page.screenshot({ path: process.env.SCREENSHOT });
  check(errors.length === 0, "no console errors: " + errors.join(" | "));

  // The app goes away: down. It comes back: live, and the stream resumes.
  await ask("STOP_APP");
  await page.waitForFunction(() => document.querySelector("#status").textContent === "down", null, { timeout: 20000 });
  const more = parseInt(await ask("START_APP"), 10);
  await page.waitForFunction(() => document.querySelector("#status").textContent === "live", null, { timeout: 30000 });
  await page.waitForFunction((t) => document.querySelectorAll("#events li.event").length === t, n + m + more, { timeout: 30000 });
  check((await status()) === "live", "live again");
  // Killing the app mid-stream logs the broken response (and refused reconnects):
  // expected; from here on, no error.
  errors.length = 0;

  // New server filters drop the cards they no longer admit.
  await page.fill("#tenant", "tenant-globex");
  await page.click("#apply");
  await page.waitForFunction(() => document.querySelectorAll("#events li.event").length === 2);
  check(await page.evaluate(() => [...document.querySelectorAll("#events li.event")].every((li) => li.dataset.tenant === "tenant-globex")),
        "only tenant-globex cards remain");
  await page.waitForFunction(() => document.querySelector("#status").textContent === "live");

  // Redis loses everything: the sidecar rebuilds the stream from Kafka under a new
  // epoch and the page says so (a reset card with the server's message).
  await ask("FLUSH");
  await page.waitForSelector('#events li.notice[data-type="reset"]', { timeout: 30000 });
  check((await page.locator('#events li.notice[data-type="reset"] .summary').textContent()).includes("Redis lost"),
        "the reset card says what happened");
  check(errors.length === 0, "no console errors after the reset: " + errors.join(" | "));
  console.log("OK");
} catch (e) {
  console.log("FAIL " + String(e && e.stack ? e.stack : e).replace(/\n/g, " | "));
  process.exitCode = 1;
} finally {
  await browser.close();
  process.exit(process.exitCode || 0);
}
