// Deno for the daemon, from the npm registry (runner.md §2 step 3): action/deno/package-lock.json
// pins the version and the integrity (SHA-512) of every tarball, and `npm ci --ignore-scripts`
// verifies them. Installed once into the tool cache, so a warm runner skips the download.

import { execFileSync } from "node:child_process";
import {
  accessSync,
  constants,
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import process from "node:process";

export type DenoInstall = {
  path: string;
  cached: boolean;
  version: string; /** the install directory */
  dir: string;
};

export function pinnedVersion(lockDir: string): string {
  const lock = JSON.parse(readFileSync(join(lockDir, "package-lock.json"), "utf8"));
  const version = lock?.packages?.["node_modules/deno"]?.version;
  if (typeof version !== "string") {
    throw new Error(`Cannot read the pinned Deno version from ${lockDir}/package-lock.json`);
  }
  return version;
}

function platformPackage(): string {
  if (process.platform !== "linux") {
    throw new Error(`Cannot install Deno: unsupported platform ${process.platform}`);
  }
  if (process.arch === "x64") return "@deno/linux-x64-glibc";
  if (process.arch === "arm64") return "@deno/linux-arm64-glibc";
  throw new Error(`Cannot install Deno: unsupported architecture ${process.arch}`);
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The cached Deno binary, installing it first when missing. */
export function ensureDeno(lockDir: string, env: NodeJS.ProcessEnv = process.env): DenoInstall {
  const version = pinnedVersion(lockDir);
  const cacheRoot = env.RUNNER_TOOL_CACHE || join(env.RUNNER_TEMP || "/tmp", "tool-cache");
  const dir = join(cacheRoot, "egress-deno", version, process.arch);
  const binary = join(dir, "node_modules", platformPackage(), "deno");
  if (isExecutable(binary) && existsSync(join(dir, ".complete"))) {
    return { path: binary, cached: true, version, dir };
  }
  const staging = `${dir}.staging-${process.pid}`;
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(staging, { recursive: true });
  copyFileSync(join(lockDir, "package.json"), join(staging, "package.json"));
  copyFileSync(join(lockDir, "package-lock.json"), join(staging, "package-lock.json"));
  try {
    execFileSync("npm", ["ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"], {
      cwd: staging,
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...env, npm_config_update_notifier: "false" },
      timeout: 180_000,
    });
  } catch (error) {
    rmSync(staging, { recursive: true, force: true });
    const stderr = (error as { stderr?: { toString(): string } }).stderr?.toString().trim();
    throw new Error(`Cannot install Deno ${version} with npm ci: ${stderr || (error as Error).message}`);
  }
  const stagedBinary = join(staging, "node_modules", platformPackage(), "deno");
  if (!isExecutable(stagedBinary)) {
    rmSync(staging, { recursive: true, force: true });
    throw new Error(`Cannot install Deno ${version}: ${platformPackage()} has no executable deno`);
  }
  writeFileSync(join(staging, ".complete"), version + "\n");
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, ".."), { recursive: true });
  renameSync(staging, dir);
  return { path: binary, cached: false, version, dir };
}
