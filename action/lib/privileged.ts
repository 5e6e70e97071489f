// Running things as root from the runner user: `sudo -n` (password-less sudo of hosted runners);
// directly when the action already runs as root (development machines, tests).

import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import process from "node:process";

export function isRoot(): boolean {
  return typeof process.getuid === "function" && process.getuid() === 0;
}

/** argv prefixed with `sudo -n` unless we are root. */
export function asRoot(argv: string[], preserveEnv: string[] = []): string[] {
  if (isRoot()) return argv;
  const preserve = preserveEnv.length > 0 ? [`--preserve-env=${preserveEnv.join(",")}`] : [];
  return ["sudo", "-n", ...preserve, "--", ...argv];
}

/** Reads a root-only file (through sudo when needed); undefined when it cannot be read. */
export function readPrivileged(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    if (isRoot()) return undefined;
  }
  try {
    return execFileSync("sudo", ["-n", "cat", "--", path], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
      timeout: 10_000,
    });
  } catch {
    return undefined;
  }
}

/** The last `lines` lines of a file (privileged read). */
export function tail(path: string, lines = 30): string | undefined {
  const text = readPrivileged(path);
  if (text === undefined) return undefined;
  return text.split("\n").filter((line) => line !== "").slice(-lines).join("\n");
}
