// Fails when two build outputs differ (the committed dist/ against a fresh build),
// naming the files that do.
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";

const [fresh, committed] = process.argv.slice(2);
const names = async (dir) => (await readdir(dir)).sort();
const a = await names(fresh);
const b = await names(committed).catch(() => []);
const all = [...new Set([...a, ...b])];
const bad = [];
for (const name of all) {
  const x = await readFile(join(fresh, name), "utf8").catch(() => null);
  const y = await readFile(join(committed, name), "utf8").catch(() => null);
  if (x !== y) bad.push(name);
}
if (bad.length) {
  console.error(`dist/ is out of date (${bad.join(", ")}): run \`npm run build\` in clients/typescript`);
  process.exit(1);
}
console.log(`dist/ matches a fresh build (${a.length} files)`);
