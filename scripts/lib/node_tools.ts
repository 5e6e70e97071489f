// Installs the pinned Node build tools (scripts/node-tools/package-lock.json) into a cache
// directory outside the repository and returns its node_modules path. `npm ci` runs only when the
// lock file changed since the last install, so repeated builds cost nothing.
import { dirname, join } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";

const toolsDir = join(dirname(fromFileUrl(import.meta.url)), "..", "node-tools");

function cacheRoot(): string {
  const base = Deno.env.get("EGRESS_CACHE_DIR") ??
    join(Deno.env.get("XDG_CACHE_HOME") ?? join(Deno.env.get("HOME") ?? "/tmp", ".cache"), "egress");
  return join(base, "node-tools");
}

/** Path of a node_modules directory holding esbuild, typescript, typescript-parsec, fast-check, yaml. */
export async function ensureNodeTools(): Promise<string> {
  const root = cacheRoot();
  const lock = readFileSync(join(toolsDir, "package-lock.json"), "utf8");
  const stamp = join(root, ".installed-lock");
  if (existsSync(stamp) && readFileSync(stamp, "utf8") === lock && existsSync(join(root, "node_modules"))) {
    return join(root, "node_modules");
  }
  mkdirSync(root, { recursive: true });
  copyFileSync(join(toolsDir, "package.json"), join(root, "package.json"));
  copyFileSync(join(toolsDir, "package-lock.json"), join(root, "package-lock.json"));
  const result = await new Deno.Command("npm", {
    args: ["ci", "--no-audit", "--no-fund", "--loglevel=error"],
    cwd: root,
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!result.success) {
    const text = new TextDecoder().decode(result.stderr);
    throw new Error(`Cannot install the Node build tools with npm ci in ${root}:\n${text}`);
  }
  writeFileSync(stamp, lock);
  return join(root, "node_modules");
}

/** Runs a Node program from the tools' node_modules/.bin (e.g. "tsc"). */
export async function runNodeTool(
  nodeModules: string,
  bin: string,
  args: string[],
  cwd?: string,
): Promise<void> {
  const result = await new Deno.Command("node", {
    args: [join(nodeModules, ".bin", bin), ...args],
    cwd,
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!result.success) {
    const decoder = new TextDecoder();
    throw new Error(
      `Cannot run ${bin} ${args.join(" ")}:\n${decoder.decode(result.stdout)}${
        decoder.decode(result.stderr)
      }`,
    );
  }
}
