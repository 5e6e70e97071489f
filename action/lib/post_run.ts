// The action's `post` step (runner.md §2): status and shutdown over the control socket, then the
// job summary and the log artifact; fails when the daemon was degraded, not running, did not shut
// down, or (enforce mode, fail-on-deny) denied anything.

import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { countEvents, renderJobSummary, shouldUploadLog } from "../../src/runner/summary.ts";
import { parseConnectionLog } from "../../src/tools/replay.ts";
import type { LogEvent } from "../../src/tools/replay.ts";
import { suggestPolicy } from "../../src/tools/suggest.ts";
import { annotation, appendSummary, emit, getState } from "./actions.ts";
import type { Uploader } from "./artifact.ts";
import { actionPaths } from "./config.ts";
import { sendCommand } from "./control.ts";
import { readInputs } from "./inputs.ts";
import { asRoot, readPrivileged } from "./privileged.ts";

export const ARTIFACT_NAME = "egress-connections";
export const RETENTION_DAYS = 30;
const SHUTDOWN_WAIT_MS = 15_000;

export type PostOptions = { env?: NodeJS.ProcessEnv; uploader: Uploader; shutdownWaitMs?: number };
export type PostOutcome = {
  failures: string[];
  uploaded: boolean;
  summary: string;
  counts: ReturnType<typeof countEvents>;
};

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 1) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as { code?: string }).code === "EPERM"; // alive, owned by root
  }
}

export async function runPost(options: PostOptions): Promise<PostOutcome> {
  const env = options.env ?? process.env;
  const paths = actionPaths(env);
  if (getState("started", env) !== "true") {
    // pre failed before starting the daemon and has said why; there is nothing to stop or report.
    emit("egress: the daemon was not started in pre; nothing to do");
    return { failures: [], uploaded: false, summary: "", counts: { allowed: 0, denied: 0, errors: 0 } };
  }
  const inputs = readInputs(env);
  const failures: string[] = [];
  const notes: string[] = [];
  const token = getState("control_token", env);
  const audit = getState("audit", env) === "true" || inputs.audit;
  const pid = Number(getState("daemon_pid", env));

  // 1. status, then shutdown.
  let state = "unknown";
  try {
    const reply = await sendCommand(paths.controlSocket, "status", "", 10_000);
    if (!reply.ok) throw new Error(reply.text);
    state = JSON.parse(reply.text).state;
    if (state === "degraded") {
      failures.push("egress was degraded: its worker failed repeatedly and traffic was blocked");
    }
  } catch (error) {
    failures.push(`egress was not running: ${(error as Error).message}`);
  }
  let stopped = false;
  try {
    const reply = await sendCommand(paths.controlSocket, "shutdown", token, 10_000);
    if (!reply.ok) throw new Error(reply.text);
    stopped = true;
  } catch (error) {
    emit(
      annotation(
        "warning",
        `egress shutdown over the control socket failed (${(error as Error).message}); trying egress stop`,
      ),
    );
    try {
      const deno = getState("deno", env) || "deno";
      const stop = asRoot([deno, "run", "-A", paths.entry, "stop", "--control-socket", paths.controlSocket]);
      execFileSync(stop[0], stop.slice(1), { stdio: "inherit", timeout: 30_000 });
      stopped = true;
    } catch {
      // reported below
    }
  }
  const deadline = Date.now() + (options.shutdownWaitMs ?? SHUTDOWN_WAIT_MS);
  const running = () => existsSync(paths.controlSocket) || existsSync(paths.readyFile) || processAlive(pid);
  while (running() && Date.now() < deadline) await sleep(100);
  if (!stopped || running()) failures.push("egress did not shut down");
  if (stopped) notes.push("The daemon shut down and restored the runner (sudo, CA store, runc, sysctls).");

  // 2. Summary and artifact.
  const text = readPrivileged(paths.logFile) ?? "";
  const events: LogEvent[] = parseConnectionLog(text).entries.map((entry) => entry.event);
  let suggestion: string | undefined;
  try {
    suggestion = events.length > 0 ? suggestPolicy(events, { source: "connections.jsonl" }) : undefined;
  } catch (error) {
    suggestion = `# Cannot suggest a policy: ${(error as Error).message}`;
  }
  if (state === "degraded") notes.unshift("⚠️ egress was degraded: traffic was blocked (fail closed).");
  const summary = renderJobSummary(events, { mode: audit ? "audit" : "enforce", suggestion, notes });
  try {
    appendSummary(summary, env);
  } catch (error) {
    emit(annotation("warning", (error as Error).message));
  }

  let uploaded = false;
  if (shouldUploadLog(inputs.uploadLog, audit, events)) {
    try {
      mkdirSync(paths.workDir, { recursive: true, mode: 0o700 });
      const copy = join(paths.workDir, "connections.jsonl");
      if (existsSync(paths.logFile) && text === "") copyFileSync(paths.logFile, copy);
      else writeFileSync(copy, text);
      const result = await options.uploader({
        name: ARTIFACT_NAME,
        files: [{ name: "connections.jsonl", path: copy }],
        retentionDays: RETENTION_DAYS,
      });
      uploaded = true;
      emit(`egress: uploaded the connection log as artifact ${ARTIFACT_NAME} (${result.size} bytes)`);
    } catch (error) {
      emit(annotation("warning", `Cannot upload the egress log: ${(error as Error).message}`));
    }
  }

  // 3. Verdict.
  const counts = countEvents(events);
  if (!audit && inputs.failOnDeny && counts.denied > 0) {
    failures.push(
      `egress denied ${counts.denied} connection${counts.denied === 1 ? "" : "s"} (see the job summary)`,
    );
  }
  return { failures, uploaded, summary, counts };
}
