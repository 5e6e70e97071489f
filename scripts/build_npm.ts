// Builds the npm package of the policy library (src/policy, re-exported by mod.ts) into npm-build/:
// one ESM bundle (dependencies inlined, runs on Node >= 18 and in browsers), per-module .d.ts
// declarations from tsc, and a package.json. Usage: deno task build:npm [--out DIR]
import { dirname, join, resolve } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { ensureNodeTools, runNodeTool } from "./lib/node_tools.ts";

const repo = resolve(dirname(fromFileUrl(import.meta.url)), "..");

/** tsc keeps `./x.ts` specifiers in .d.ts files; Node-style resolvers need `./x.js`. */
function rewriteDeclarationImports(dir: string): void {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) rewriteDeclarationImports(path);
    else if (entry.name.endsWith(".d.ts")) {
      const text = readFileSync(path, "utf8");
      writeFileSync(path, text.replace(/(from\s+["'](?:\.\.?\/)[^"']*?)\.ts(["'])/g, "$1.js$2"));
    }
  }
}

export async function buildNpmPackage(outDir: string): Promise<void> {
  const nodeModules = await ensureNodeTools();
  mkdirSync(outDir, { recursive: true });
  for (const entry of readdirSync(outDir)) {
    if (entry !== "README.md") rmSync(join(outDir, entry), { recursive: true, force: true });
  }
  const config = JSON.parse(Deno.readTextFileSync(join(repo, "deno.json")));

  const esbuild = await new Deno.Command("node", {
    args: [
      join(repo, "scripts", "lib", "esbuild_build.mjs"),
      join(nodeModules, "esbuild", "lib", "main.js"),
      JSON.stringify({
        entryPoints: [join(repo, "src", "policy", "mod.ts")],
        bundle: true,
        format: "esm",
        platform: "neutral",
        mainFields: ["module", "main"],
        target: "es2022",
        legalComments: "inline",
        nodePaths: [nodeModules],
        outfile: join(outDir, "esm", "mod.js"),
        logLevel: "warning",
      }),
    ],
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
    rewriteDeclarationImports(join(outDir, "types"));
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
