// Type-checks the ```ts examples of the READMEs and the docs against the client's
// sources, so an example cannot drift from the API it shows.
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";

const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const SOURCES = ["../../../README.md", "../README.md", "../../../docs/src/api.md"];
const OUT = here("../target/examples/");

await rm(OUT, { recursive: true, force: true });
await mkdir(OUT, { recursive: true });
let n = 0;
for (const source of SOURCES) {
  const text = await readFile(here(source), "utf8");
  for (const [, code] of text.matchAll(/```ts\n([\s\S]*?)```/g)) {
    n += 1;
    const module = code.replaceAll('"@crm-events/client"', '"../../src/index.js"');
    await writeFile(`${OUT}example-${n}.ts`, `// from ${source.replace(/^(\.\.\/)+/, "")}\nexport {};\n${module}`);
  }
}
if (n === 0) throw new Error("no ```ts examples found");
const tsc = here("../node_modules/typescript/bin/tsc");
execFileSync(process.execPath, [tsc, "--noEmit", "--strict", "--target", "ES2022", "--module", "ES2022",
  "--moduleResolution", "Bundler", "--lib", "ES2022,DOM", "--types", "node", "--skipLibCheck",
  ...Array.from({ length: n }, (_, i) => `${OUT}example-${i + 1}.ts`)], { stdio: "inherit" });
console.log(`${n} examples type-check`);
