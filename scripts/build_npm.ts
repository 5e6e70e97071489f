// Builds the npm package of the policy library (src/policy, re-exported by mod.ts) into npm-build/:
// one ESM bundle (dependencies inlined, runs on Node >= 18 and in browsers), per-module .d.ts
// declarations from tsc, and a package.json. Usage: deno task build:npm [--out DIR]
import { dirname, join, resolve } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync, copyFileSync } from "node:fs";
import { ensureNodeTools, runNodeTool } from "./lib/node_tools.ts";

const repo = resolve(dirname(fromFileUrl(import.meta.url)), "..");

export async function buildNpmPackage(outDir: string): Promise<void> {
  const nodeModules = await ensureNodeTools();
  mkdirSync(outDir, { recursive: true });
  for (const entry of readdirSync(outDir)) {
    if (entry !== "README.md") rmSync(join(outDir, entry), { recursive: true, force: true });
  }
  const config = JSON.parse(Deno.readTextFileSync(join(repo, "deno.json")));

  // Bundle: NODE_PATH lets esbuild resolve the bare npm imports from the pinned tools.
  const esbuild = await new Deno.Command("node", {
    args: [
      join(nodeModules, "esbuild", "bin", "esbuild"),
      join(repo, "src", "policy", "mod.ts"),
      "--bundle",
      "--format=esm",
      "--platform=neutral",
      "--main-fields=module,main",
      "--target=es2022",
      "--legal-comments=inline",
      `--outfile=${join(outDir, "esm", "mod.js")}`,
      "--log-level=warning",
    ],
    env: { NODE_PATH: nodeModules },
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!esbuild.success) {
    throw new Error(`Cannot bundle the policy library:\n${new TextDecoder().decode(esbuild.stderr)}`);
  }

  // Declarations: checked against ES2022 only (no Deno, no DOM, no Node types), which also proves
  // that the library is pure.
  const buildDir = Deno.makeTempDirSync({ prefix: "egress-npm-build-" });
  try {
    const tsconfig = {
      compilerOptions: {
        declaration: true,
        emitDeclarationOnly: true,
        allowImportingTsExtensions: true,
        rewriteRelativeImportExtensions: true,
        module: "ESNext",
        moduleResolution: "bundler",
        target: "ES2022",
        lib: ["ES2022"],
        types: [],
        strict: true,
        skipLibCheck: true,
        rootDir: join(repo, "src", "policy"),
        outDir: join(outDir, "types"),
        paths: { "typescript-parsec": [join(nodeModules, "typescript-parsec")] },
      },
      files: [join(repo, "src", "policy", "mod.ts")],
    };
    const tsconfigPath = join(buildDir, "tsconfig.json");
    writeFileSync(tsconfigPath, JSON.stringify(tsconfig, null, 2));
    await runNodeTool(nodeModules, "tsc", ["-p", tsconfigPath]);
  } finally {
    rmSync(buildDir, { recursive: true, force: true });
  }

  const packageJson = {
    name: config.name,
    version: config.version,
    description: "Policy engine of egress, the egress firewall for CI runners and sandboxes: " +
      "parse, validate and decide connections against an egress allow-list policy.",
    type: "module",
    main: "./esm/mod.js",
    types: "./types/mod.d.ts",
    exports: { ".": { types: "./types/mod.d.ts", import: "./esm/mod.js" } },
    files: ["esm", "types", "README.md"],
    sideEffects: false,
    engines: { node: ">=18" },
    license: "UNLICENSED",
  };
  writeFileSync(join(outDir, "package.json"), JSON.stringify(packageJson, null, 2) + "\n");
  const readme = join(repo, "npm-build", "README.md");
  if (existsSync(readme) && resolve(outDir) !== resolve(repo, "npm-build")) {
    copyFileSync(readme, join(outDir, "README.md"));
  }
}

if (import.meta.main) {
  const outIndex = Deno.args.indexOf("--out");
  const outDir = outIndex >= 0 && Deno.args[outIndex + 1]
    ? resolve(Deno.args[outIndex + 1])
    : join(repo, "npm-build");
  const started = performance.now();
  try {
    await buildNpmPackage(outDir);
  } catch (error) {
    console.error((error as Error).message);
    Deno.exit(1);
  }
  console.log(`npm package written to ${outDir} in ${Math.round(performance.now() - started)} ms`);
}
