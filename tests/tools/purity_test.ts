// `src/tools/` and `src/packages/` modules that must run outside Deno (the Node GitHub Action bundles `suggestPolicy`):
// their whole module graph, as `deno info --json` resolves it, has no module under `src/cli/`, no
// `node:` import and no source using a Deno API. npm packages of the graph are not read.
import assert from "node:assert/strict";

const ROOT = new URL("../../", import.meta.url);
const CLI_DIR = new URL("src/cli/", ROOT).href;
const PURE_MODULES = [
  "src/tools/suggest.ts",
  "src/tools/permissions.ts",
  "src/tools/replay.ts",
  // extras.md: web-standard only, so the checks can run wherever the proxy logic does
  "src/packages/purl.ts",
  "src/packages/token_tagging.ts",
  "src/packages/reputation.ts",
];

type GraphModule = {
  kind?: string;
  specifier: string;
  local?: string;
  error?: string;
  dependencies?: Array<{ specifier: string }>;
};

async function moduleGraph(path: string): Promise<GraphModule[]> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", path],
    cwd: ROOT,
    env: { DENO_NO_UPDATE_CHECK: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(output.stderr);
  assert.ok(output.success, `deno info ${path} failed: ${stderr}`);
  return JSON.parse(new TextDecoder().decode(output.stdout)).modules;
}

/** What makes one module of the graph impure, if anything. */
function impurities(module: GraphModule, source: string | undefined): string[] {
  const found: string[] = [];
  if (module.kind === "node" || module.specifier.startsWith("node:")) found.push("is a node: module");
  if (module.specifier.startsWith(CLI_DIR)) found.push("is under src/cli/");
  if (module.error !== undefined) found.push(`does not resolve: ${module.error}`);
  for (const dependency of module.dependencies ?? []) {
    if (dependency.specifier.startsWith("node:")) found.push(`imports ${dependency.specifier}`);
  }
  if (source !== undefined) {
    if (/\bDeno\s*\.\s*[A-Za-z_$]/.test(source)) found.push("uses the Deno namespace (`Deno.`)");
    if (/(?:\bfrom|\bimport\s*\(?)\s*["']node:/.test(source)) found.push("imports a node: module");
  }
  return found;
}

for (const path of PURE_MODULES) {
  Deno.test(`purity: ${path} needs nothing of Deno, node: or src/cli/`, async () => {
    const modules = await moduleGraph(path);
    const rootSpecifier = new URL(path, ROOT).href;
    assert.ok(modules.some((m) => m.specifier === rootSpecifier), `${path} is not in its own graph`);
    const problems: string[] = [];
    for (const module of modules) {
      const source = module.kind === "esm" && module.local !== undefined
        ? await Deno.readTextFile(module.local)
        : undefined;
      for (const problem of impurities(module, source)) problems.push(`${module.specifier} ${problem}`);
    }
    assert.deepEqual(problems, []);
  });
}

Deno.test("purity: the check finds a src/cli/ module, a node: import and a Deno API", () => {
  const cli = { kind: "esm", specifier: `${CLI_DIR}args.ts`, dependencies: [{ specifier: "node:fs" }] };
  assert.deepEqual(impurities(cli, 'import fs from "node:fs";\nDeno.exit(1);\n'), [
    "is under src/cli/",
    "imports node:fs",
    "uses the Deno namespace (`Deno.`)",
    "imports a node: module",
  ]);
  assert.deepEqual(impurities({ kind: "node", specifier: "node:path" }, undefined), ["is a node: module"]);
  // Words in comments about the rule itself ("no Deno, no node: module") are no violation.
  assert.deepEqual(
    impurities({ kind: "esm", specifier: "file:///x.ts" }, "// No Deno API, no node: module.\n"),
    [],
  );
});
