// The daemon runs as root, so it must never load code the runner user can change: not Deno from
// the tool cache, not the sources in the action checkout (`_actions/<owner>/egress/<ref>`), not a
// module cache in the tool cache. A worker restart re-reads all of it. pre therefore installs a
// root-owned copy first and starts the daemon from there:
//
//   <libDir>/<version>-<hash>/         root:root 0755 (libDir: /usr/local/lib/egress)
//     bin/deno                         0755, the pinned Deno
//     app/deno.json, deno.lock, mod.ts, src/, ffi/, bpf/dist/, action/dist/runc-wrapper.cjs (0644)
//     deno-dir/                        the daemon's DENO_DIR, seeded with the lock's npm packages
//
// <hash> is the SHA-256 of exactly the bytes installed (paths, modes, contents) plus the pinned
// Deno version. Node reads and hashes the files, then pipes them as a tar archive (regular files and
// directories only) to one root shell, which extracts into a staging directory beside the target
// and renames it into place: a directory of that name is always complete. It is kept after the job
// (reused by later jobs on a self-hosted runner; hosted runners are fresh). No Deno API (bundled).

import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, lstatSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { asRoot } from "./privileged.ts";

/** What `egress start --runner` (supervisor and worker) reads at run time, relative to the checkout. */
export const CODE_FILES = ["deno.json", "deno.lock", "mod.ts", "action/dist/runc-wrapper.cjs"];
export const CODE_DIRS = ["src", "ffi", "bpf/dist"];

export type TarEntry = { path: string; mode: number; data?: Uint8Array };

export type CodePlan = {
  /** <libDir>/<version>-<hash> */
  dir: string;
  key: string;
  libDir: string;
  /** files and directories of the install, relative to `dir` (bin/deno excluded) */
  entries: TarEntry[];
};

export type InstalledCode = {
  dir: string;
  deno: string;
  app: string;
  config: string;
  entry: string;
  denoDir: string;
};

export function installedCode(dir: string): InstalledCode {
  const app = join(dir, "app");
  return {
    dir,
    deno: join(dir, "bin", "deno"),
    app,
    config: join(app, "deno.json"),
    entry: join(app, "mod.ts"),
    denoDir: join(dir, "deno-dir"),
  };
}

function collect(base: string, rel: string, out: TarEntry[], prefix: string, strict: boolean): boolean {
  const stat = lstatSync(join(base, rel));
  if (stat.isDirectory()) {
    out.push({ path: `${prefix}/${rel}`, mode: 0o755 });
    for (const name of readdirSync(join(base, rel)).sort()) {
      if (!collect(base, `${rel}/${name}`, out, prefix, strict)) return false;
    }
    return true;
  }
  if (stat.isFile()) {
    out.push({ path: `${prefix}/${rel}`, mode: 0o644, data: readFileSync(join(base, rel)) });
    return true;
  }
  if (strict) throw new Error(`Cannot install ${join(base, rel)}: not a regular file or directory`);
  return false;
}

function withParents(entries: TarEntry[]): TarEntry[] {
  const seen = new Set(entries.filter((e) => !e.data).map((e) => e.path));
  const out: TarEntry[] = [];
  for (const entry of entries) {
    const parents: string[] = [];
    for (let dir = dirname(entry.path); dir !== "." && !seen.has(dir); dir = dirname(dir)) {
      parents.unshift(dir);
    }
    for (const dir of parents) {
      seen.add(dir);
      out.push({ path: dir, mode: 0o755 });
    }
    out.push(entry);
  }
  return out;
}

/** The install for this checkout: which files, and the directory named after their hash. */
export function planInstall(actionRoot: string, libDir: string, denoVersion: string): CodePlan {
  const code: TarEntry[] = [];
  for (const file of CODE_FILES) collect(actionRoot, file, code, "app", true);
  for (const dir of CODE_DIRS) collect(actionRoot, dir, code, "app", true);
  const hash = createHash("sha256").update(`deno ${denoVersion}\n`);
  for (const entry of code) {
    hash.update(`${entry.path}\0${entry.mode.toString(8)}\0${entry.data?.length ?? -1}\0`);
    if (entry.data) hash.update(entry.data);
  }
  let version = "0";
  try {
    version = String(JSON.parse(readFileSync(join(actionRoot, "deno.json"), "utf8")).version ?? "0");
  } catch {
    // no version: "0"
  }
  const key = `${version.replace(/[^0-9A-Za-z.+-]/g, "_")}-${hash.digest("hex").slice(0, 16)}`;
  const entries = withParents([{ path: "bin", mode: 0o755 }, { path: "deno-dir", mode: 0o755 }, ...code]);
  return { dir: join(libDir, key), key, libDir, entries };
}

/**
 * The npm packages of deno.lock found in the runner's module cache, copied (never used in place)
 * into the new DENO_DIR: the daemon then starts without the registry. Anything missing, or holding
 * anything but files and directories, is left out; Deno (as root) downloads it, checked against
 * the lock.
 */
export function seedEntries(actionRoot: string, seedDenoDir: string): TarEntry[] {
  let packages: string[] = [];
  try {
    packages = Object.keys(JSON.parse(readFileSync(join(actionRoot, "deno.lock"), "utf8")).npm ?? {});
  } catch {
    return [];
  }
  const out: TarEntry[] = [];
  const registry = join(seedDenoDir, "npm", "registry.npmjs.org");
  for (const key of packages) {
    const at = key.lastIndexOf("@");
    if (at <= 0) continue;
    const name = key.slice(0, at);
    const version = key.slice(at + 1).split("_")[0];
    if (!/^(@[\w.-]+\/)?[\w.-]+$/.test(name) || !/^[\w.+-]+$/.test(version)) continue;
    const base = join(registry, name);
    if (!existsSync(join(base, version)) || !existsSync(join(base, "registry.json"))) continue;
    const entries: TarEntry[] = [];
    const prefix = `deno-dir/npm/registry.npmjs.org/${name}`;
    try {
      if (!collect(base, "registry.json", entries, prefix, false)) continue;
      if (!collect(base, version, entries, prefix, false)) continue;
    } catch {
      continue;
    }
    out.push(...entries);
  }
  return withParents(out);
}

function octal(value: number, width: number): string {
  return value.toString(8).padStart(width - 1, "0") + "\0";
}

function header(name: string, mode: number, size: number, type: string): Buffer {
  const block = Buffer.alloc(512);
  block.write(name, 0, 100, "utf8");
  block.write(octal(mode, 8), 100);
  block.write(octal(0, 8), 108);
  block.write(octal(0, 8), 116);
  block.write(octal(size, 12), 124);
  block.write(octal(0, 12), 136);
  block.fill(" ", 148, 156);
  block.write(type, 156);
  block.write("ustar\0", 257);
  block.write("00", 263);
  block.write("root", 265);
  block.write("root", 297);
  let sum = 0;
  for (const byte of block) sum += byte;
  block.write(sum.toString(8).padStart(6, "0") + "\0 ", 148);
  return block;
}

function padding(size: number): Buffer {
  return Buffer.alloc((512 - (size % 512)) % 512);
}

/** A POSIX (pax) tar archive of regular files and directories, owner root, the given modes. */
export function tarArchive(entries: TarEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const entry of entries) {
    const name = entry.data ? entry.path : `${entry.path}/`;
    if (Buffer.byteLength(name) > 100) {
      const text = ` path=${name}\n`;
      let length = Buffer.byteLength(text) + 2;
      while (String(length).length + Buffer.byteLength(text) !== length) {
        length = String(length).length + Buffer.byteLength(text);
      }
      const record = Buffer.from(`${length}${text}`);
      parts.push(header("PaxHeader", 0o644, record.length, "x"), record, padding(record.length));
    }
    const size = entry.data?.length ?? 0;
    parts.push(header(name, entry.mode, size, entry.data ? "0" : "5"));
    if (entry.data) parts.push(Buffer.from(entry.data), padding(size));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

/**
 * Runs as root: staging directory beside the target, the archive from stdin, Deno copied in, then
 * an atomic rename. A target that already exists (another pre won the race) is kept.
 */
const INSTALL_SCRIPT = `set -eu
umask 022
lib=$1 key=$2 deno=$3
mkdir -p "$lib"
if [ -d "$lib/$key" ]; then cat >/dev/null; exit 0; fi
stage=$(mktemp -d "$lib/.staging-XXXXXX")
trap 'rm -rf "$stage"' EXIT
chmod 0755 "$stage"
tar -x -m --no-same-owner -f - -C "$stage"
cp "$deno" "$stage/bin/deno"
chmod 0755 "$stage/bin/deno"
mv -T "$stage" "$lib/$key" 2>/dev/null || [ -d "$lib/$key" ]
`;

/** Copies the code, Deno and the module cache seed into plan.dir as root. */
export function installCode(plan: CodePlan, denoBinary: string, seed: TarEntry[]): void {
  const binary = statSync(denoBinary);
  if (!binary.isFile()) throw new Error(`Cannot install Deno: ${denoBinary} is not a regular file`);
  const archive = tarArchive([...plan.entries, ...seed]);
  const argv = asRoot(["/bin/sh", "-c", INSTALL_SCRIPT, "egress-install", plan.libDir, plan.key, denoBinary]);
  try {
    execFileSync(argv[0], argv.slice(1), {
      input: archive,
      stdio: ["pipe", "pipe", "pipe"],
      timeout: 60_000,
    });
  } catch (error) {
    const stderr = (error as { stderr?: { toString(): string } }).stderr?.toString().trim();
    throw new Error(
      `Cannot install the daemon's code into ${plan.dir}: ${stderr || (error as Error).message}`,
    );
  }
}

function rootOnly(path: string, mode: number, uid: number, sticky = false): string | undefined {
  if (uid !== 0) return `${path} is not owned by root`;
  if ((mode & 0o022) !== 0 && !(sticky && (mode & 0o1000) !== 0)) {
    return `${path} is writable by group or others`;
  }
  return undefined;
}

/**
 * Why only root cannot be the one to change `path`, or undefined: every directory from / down is
 * root-owned and not group/other-writable (a root-owned sticky directory such as /tmp is fine:
 * nobody else can rename or remove root's entries in it).
 */
export function chainProblem(path: string): string | undefined {
  const parts = path.split("/").filter(Boolean);
  for (let i = 0; i <= parts.length; i++) {
    const dir = "/" + parts.slice(0, i).join("/");
    let stat;
    try {
      stat = lstatSync(dir);
    } catch {
      return undefined; // not there yet: created by root below an existing, checked parent
    }
    if (stat.isSymbolicLink()) return `${dir} is a symbolic link`;
    if (!stat.isDirectory()) return `${dir} is not a directory`;
    const problem = rootOnly(dir, stat.mode, stat.uid, true);
    if (problem) return problem;
  }
  return undefined;
}

function treeProblem(path: string): string | undefined {
  const stat = lstatSync(path);
  if (!stat.isDirectory() && !stat.isFile()) return `${path} is not a regular file or directory`;
  const problem = rootOnly(path, stat.mode, stat.uid);
  if (problem || !stat.isDirectory()) return problem;
  for (const name of readdirSync(path)) {
    const inner = treeProblem(join(path, name));
    if (inner) return inner;
  }
  return undefined;
}

/** Why the install at plan.dir cannot be trusted (or is incomplete), or undefined. */
export function installProblem(plan: CodePlan): string | undefined {
  try {
    const chain = chainProblem(plan.dir);
    if (chain) return chain;
    if (!existsSync(plan.dir)) return `${plan.dir} does not exist`;
    for (const sub of ["bin", "app"]) {
      const problem = treeProblem(join(plan.dir, sub));
      if (problem) return problem;
    }
    const denoDir = lstatSync(join(plan.dir, "deno-dir"));
    if (!denoDir.isDirectory()) return `${plan.dir}/deno-dir is not a directory`;
    const problem = rootOnly(`${plan.dir}/deno-dir`, denoDir.mode, denoDir.uid);
    if (problem) return problem;
    for (const entry of plan.entries) {
      if (entry.data && !existsSync(join(plan.dir, entry.path))) {
        return `${plan.dir}/${entry.path} is missing`;
      }
    }
    return undefined;
  } catch (error) {
    return (error as Error).message;
  }
}
