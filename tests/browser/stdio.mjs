// What the browser and API scripts share: the stdio conversation with the Rust test
// that runs them (a script prints a step and waits for the test's answer line;
// "OK" or "FAIL <why>" ends it), checks, and Debian's Chromium.
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

/** Prints `step` for the Rust test and resolves with its answer. */
export async function ask(step) {
  console.log(step);
  const { value } = await lines.next();
  return value;
}

export function check(ok, what) {
  if (!ok) throw new Error("check failed: " + what);
}

/** Debian's Chromium, headless. */
export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

/** Runs `main`, then says OK or FAIL to the Rust test and exits. */
export async function verdict(main) {
  try {
    await main();
    console.log("OK");
    process.exit(0);
  } catch (e) {
    console.log("FAIL " + String(e && e.stack ? e.stack : e).replace(/\n/g, " | "));
    process.exit(1);
  }
}
