// Trusted GitHub step context (runner.md §4): `step` and `action` come only from the environment
// of the step's top process, the child of Runner.Worker, found by walking the ancestry. A process's
// own environment can be forged (`exec env GITHUB_ACTION=…`), its place in the process tree cannot.

import { type ProcessSnapshot, ProcReader } from "./process.ts";

export const RUNNER_CGROUP = "/system.slice/hosted-compute-agent.service";
export const RUNNER_WORKER = "/home/runner/actions-runner/cached/bin/Runner.Worker";
export const MAX_ANCESTRY = 64;
const SELF_CHECK_LIMIT = 4096; // "no fixed depth", but never loop forever on a corrupt tree
const CONTEXT_KEYS = ["GITHUB_ACTION", "GITHUB_ACTION_REPOSITORY"] as const;

export type RunnerConstants = { runnerCgroup: string; runnerWorker: string };

export type TrustedContext = { step?: string; action?: string };

/** Runner constants, overridable (tests) by EGRESS_TEST_RUNNER_CGROUP / EGRESS_TEST_RUNNER_WORKER. */
export function runnerConstants(env: (key: string) => string | undefined = safeEnv): RunnerConstants {
  return {
    runnerCgroup: env("EGRESS_TEST_RUNNER_CGROUP") || RUNNER_CGROUP,
    runnerWorker: env("EGRESS_TEST_RUNNER_WORKER") || RUNNER_WORKER,
  };
}

function safeEnv(key: string): string | undefined {
  try {
    return Deno.env.get(key);
  } catch {
    return undefined; // no --allow-env: the defaults apply
  }
}

export type AncestryEntry = { pid: number; ppid: number; exe?: string; cgroup?: string; startTime: string };

function entryOf(snapshot: ProcessSnapshot): AncestryEntry {
  return {
    pid: snapshot.pid,
    ppid: snapshot.ppid,
    exe: snapshot.exe,
    cgroup: snapshot.cgroup,
    startTime: snapshot.startTime,
  };
}

/**
 * Ancestry from `start` upwards: at most `limit` entries, stopping at pid ≤ 1, at an unreadable
 * process or exe, or at a parent younger than its child (its PID was reused after the real parent
 * died); also after the first entry for which `stopAfter` holds. Ancestors' cgroups are read only
 * when `withCgroups` is set.
 */
export function walkAncestry(
  proc: ProcReader,
  start: ProcessSnapshot,
  limit: number,
  options: { stopAfter?: (entry: AncestryEntry) => boolean; withCgroups?: boolean } = {},
): AncestryEntry[] {
  const out: AncestryEntry[] = [];
  let current: AncestryEntry | undefined = entryOf(start);
  while (current && out.length < limit) {
    if (current.pid <= 1 || current.exe === undefined) break;
    out.push(current);
    if (options.stopAfter?.(current)) break;
    const parentPid = current.ppid;
    if (parentPid <= 1) break;
    const parent = proc.read(parentPid, { skipCmdline: true, skipCgroup: !options.withCgroups });
    if (!parent || BigInt(parent.startTime) > BigInt(current.startTime)) break;
    current = entryOf(parent);
  }
  return out;
}

/** Exact path match; a " (deleted)" suffix (binary replaced on disk) never matches. */
export function isRunnerWorker(exe: string | undefined, constants: RunnerConstants): boolean {
  return exe !== undefined && !exe.endsWith(" (deleted)") && exe === constants.runnerWorker;
}

/**
 * The trusted context of a process already read as `snapshot` (read once per connection). `{}` when
 * the process is outside the runner cgroup, not below Runner.Worker, or is Runner.Worker itself.
 */
export function trustedContextOf(
  proc: ProcReader,
  snapshot: ProcessSnapshot,
  constants: RunnerConstants = runnerConstants(),
): TrustedContext {
  if (snapshot.cgroup !== constants.runnerCgroup) return {};
  const ancestry = walkAncestry(proc, snapshot, MAX_ANCESTRY, {
    stopAfter: (entry) => isRunnerWorker(entry.exe, constants),
  });
  const workerIndex = ancestry.findIndex((entry) => isRunnerWorker(entry.exe, constants));
  if (workerIndex <= 0) return {}; // none, or the process itself is Runner.Worker
  const top = ancestry[workerIndex - 1];
  // Re-read the step's top process with its environment; it must still be the same process.
  const topNow = top.pid === snapshot.pid && snapshot.env
    ? snapshot
    : proc.read(top.pid, { envKeys: CONTEXT_KEYS, skipCmdline: true, skipCgroup: true });
  if (!topNow || topNow.startTime !== top.startTime || topNow.ppid !== ancestry[workerIndex].pid) return {};
  const context: TrustedContext = {};
  const step = topNow.env?.GITHUB_ACTION;
  const action = topNow.env?.GITHUB_ACTION_REPOSITORY;
  if (step) context.step = step;
  if (action) context.action = action;
  return context;
}

/** Trusted context of `pid`; `{}` when the process cannot be read. Never throws. */
export function trustedContext(
  pid: number,
  proc = new ProcReader(),
  constants: RunnerConstants = runnerConstants(),
): TrustedContext {
  const snapshot = proc.read(pid, { skipCmdline: true, envKeys: CONTEXT_KEYS });
  return snapshot ? trustedContextOf(proc, snapshot, constants) : {};
}

export type SelfCheckResult =
  | { ok: true; workerPid: number; ancestry: AncestryEntry[] }
  | { ok: false; error: string; ancestry: AncestryEntry[] };

/**
 * `--runner` self-check: the ancestry of `pid` (default: this process) must contain Runner.Worker
 * running in the runner cgroup. The error lists the ancestry seen, so a misconfiguration is visible.
 */
export function runnerSelfCheck(
  proc = new ProcReader(),
  constants: RunnerConstants = runnerConstants(),
  pid: number = Deno.pid,
): SelfCheckResult {
  const self = proc.read(pid, { skipCmdline: true });
  const ancestry = self ? walkAncestry(proc, self, SELF_CHECK_LIMIT, { withCgroups: true }) : [];
  const worker = ancestry.find((entry) =>
    entry.pid !== pid && isRunnerWorker(entry.exe, constants) && entry.cgroup === constants.runnerCgroup
  );
  if (worker) return { ok: true, workerPid: worker.pid, ancestry };
  const seen = ancestry.length === 0
    ? "(none readable)"
    : ancestry.map((e) => `${e.pid} ${e.exe ?? "?"} [${e.cgroup ?? "?"}]`).join(" <- ");
  return {
    ok: false,
    error: `Cannot run in runner mode: ${constants.runnerWorker} in cgroup ${constants.runnerCgroup} ` +
      `is not an ancestor of this process; ancestry seen: ${seen}`,
    ancestry,
  };
}
