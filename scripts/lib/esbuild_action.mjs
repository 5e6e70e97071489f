// Node script: bundles the GitHub Action's entry points with esbuild's JS API. The module
// action/lib/policy_library.ts is replaced by the npm build of the policy library, so the action
// validates policies with exactly the package published for Node.
// Usage: node esbuild_action.mjs <esbuild/lib/main.js> '<options JSON>' <npm build esm/mod.js>
import { readFileSync } from "node:fs";
import { dirname } from "node:path";

const [esbuildMain, optionsJson, npmBundle] = process.argv.slice(2);
const esbuild = await import(esbuildMain);

const npmBuildPlugin = {
  name: "egress-npm-build",
  setup(build) {
    build.onResolve(
      { filter: /[/\\]policy_library(\.ts)?$/ },
      () => ({ path: "policy-library", namespace: "npm-build" }),
    );
    build.onLoad({ filter: /.*/, namespace: "npm-build" }, () => ({
      contents: readFileSync(npmBundle, "utf8"),
      loader: "js",
      resolveDir: dirname(npmBundle),
    }));
  },
};

await esbuild.build({ ...JSON.parse(optionsJson), plugins: [npmBuildPlugin] });
