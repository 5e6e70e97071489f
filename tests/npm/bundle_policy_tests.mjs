// Node script: bundles tests/policy/*_test.ts for Node. Imports of the library's public entry
// (mod.ts, src/policy/mod.ts) become imports of the built npm package "@org/egress"; internal
// modules are bundled from source, which also proves they run without Deno.
// Usage: node bundle_policy_tests.mjs <esbuild module path> <repo> <out dir>
import { readdirSync } from "node:fs";
import { dirname, join } from "node:path";

const [esbuildPath, repo, outDir] = process.argv.slice(2);
const esbuild = await import(esbuildPath);
const testDir = join(repo, "tests", "policy");
const entries = readdirSync(testDir).filter((f) => f.endsWith("_test.ts")).map((f) => join(testDir, f));

const publicEntry = {
  name: "public-entry-to-npm-build",
  setup(build) {
    build.onResolve({ filter: /(^|\/)mod\.ts$/ }, (args) => {
      const resolved = join(args.resolveDir, args.path);
      if (resolved === join(repo, "mod.ts") || resolved === join(repo, "src", "policy", "mod.ts")) {
        return { path: "@org/egress", external: true };
      }
      return undefined;
    });
  },
};

await esbuild.build({
  entryPoints: entries,
  bundle: true,
  format: "esm",
  platform: "node",
  target: "node18",
  outdir: outDir,
  outExtension: { ".js": ".test.mjs" },
  inject: [join(repo, "tests", "npm", "deno_test_shim.mjs")],
  plugins: [publicEntry],
  // Bare npm imports (fast-check, typescript-parsec) resolve from the pinned build tools.
  nodePaths: [dirname(dirname(dirname(esbuildPath)))],
  logLevel: "warning",
});
console.log(`bundled ${entries.length} test files`);
