// Regenerates omnikernel/data/prices.json from the model list that the npm package
// @mariozechner/pi-ai ships (prices in USD per million tokens). Prices are facts; the table is
// dated, and users override entries in config. Usage:
//   npm install --prefix /tmp/piai @mariozechner/pi-ai
//   node scripts/gen_prices.mjs /tmp/piai > omnikernel/data/prices.json
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const prefix = process.argv[2] ?? "/tmp/piai";
const pkgDir = join(prefix, "node_modules", "@mariozechner", "pi-ai");
const { version } = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8"));
const { MODELS } = await import(pathToFileURL(join(pkgDir, "dist", "models.generated.js")));

const vendors = {};
for (const vendor of ["anthropic", "openai"]) {
  const models = {};
  for (const [id, m] of Object.entries(MODELS[vendor] ?? {}).sort()) {
    const { input, output, cacheRead, cacheWrite } = m.cost;
    models[id] = { input, output, cacheRead, cacheWrite, contextWindow: m.contextWindow };
  }
  vendors[vendor] = models;
}
const table = {
  generated: new Date().toISOString().slice(0, 10),
  source: `@mariozechner/pi-ai ${version} dist/models.generated.js`,
  unit: "USD per million tokens",
  vendors,
};
process.stdout.write(JSON.stringify(table, null, 1) + "\n");
