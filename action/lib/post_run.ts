// The action's `post` step (runner.md §2): status and shutdown over the control socket, then the
// job summary and the log artifact; fails when the daemon was degraded, not running, did not shut
// down, or (enforce mode, fail-on-deny) denied anything.

import { execFileSync } from "node:child_process";
import {
  closeSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  openSync,
  readSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { Buffer } from "node:buffer";
import { StringDecoder } from "node:string_decoder";
import { join } from "node:path";
import process from "node:process";
import { countEvents, isVerdictLine, renderJobSummary, shouldUploadLog } from "../../src/runner/summary.ts";
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
/** The summary is built from at most this much of the log; the rest is only counted. */
export const MAX_SUMMARY_LOG_BYTES = 64 * 1024 * 1024;
const MAX_LINE_BYTES = 1024 * 1024;

export type PostOptions = {
  env?: NodeJS.ProcessEnv;
  uploader: Uploader;
  shutdownWaitMs?: number;
  summaryLogBytes?: number;
};

export type ConnectionLogRead = {
  /** the whole log, or its first lines up to the limit */
  text: string;
  size: number;
  /** lines past the limit: counted (denied, errors), never held in memory */
  rest?: { lines: number; denied: number; errors: number };
};

/**
 * Reads the connection log for the summary with bounded memory. A job can make the log as large as
 * it likes (a flood of connections); reading it whole would fail past V8's string limit, and a
 * summary of "nothing" would let fail-on-deny pass. So: the first `limit` bytes are parsed, every
 * later line is only counted, and fail-on-deny sees every denial.
 */
export function readConnectionLog(path: string, limit = MAX_SUMMARY_LOG_BYTES): ConnectionLogRead {
  let size = 0;
  try {
    size = statSync(path).size;
  } catch {
    return { text: readPrivileged(path) ?? "", size }; // missing, or only root may look
  }
  if (size <= limit) return { text: readPrivileged(path) ?? "", size };
  const fd = openSync(path, "r");
  try {
    const head = Buffer.alloc(limit);
    const got = readSync(fd, head, 0, limit, 0);
    const cut = head.lastIndexOf(10, got - 1) + 1;
    const rest = { lines: 0, denied: 0, errors: 0 };
    const count = (line: string) => {
      if (line.trim() === "") return;
      rest.lines++;
      try {
        const event = JSON.parse(line) as LogEvent;
        if (isVerdictLine(event) && event.policy === "deny") rest.denied++;
        if (event.error !== undefined) rest.errors++;
      } catch {
        // not a log line; the replay of the full log (egress analyze) reports those
      }
    };
    const decoder = new StringDecoder("utf8");
    const chunk = Buffer.alloc(4 * 1024 * 1024);
    let carry = "";
    for (let position = cut;;) {
      const n = readSync(fd, chunk, 0, chunk.length, position);
      if (n === 0) break;
      position += n;
      const lines = (carry + decoder.write(chunk.subarray(0, n))).split("\n");
      carry = lines.pop() ?? "";
      if (carry.length > MAX_LINE_BYTES) carry = ""; // a line that long is no log line
      lines.forEach(count);
    }
    count(carry + decoder.end());
    return { text: head.subarray(0, cut).toString("utf8"), size, rest };
  } finally {
    closeSync(fd);
  }
}
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
      const entry = getState("entry", env) || paths.entry;
      const stop = asRoot([deno, "run", "-A", entry, "stop", "--control-socket", paths.controlSocket]);
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
  const log = readConnectionLog(paths.logFile, options.summaryLogBytes);
  const text = log.text;
  const events: LogEvent[] = parseConnectionLog(text).entries.map((entry) => entry.event);
  if (log.rest) {
    const mib = (bytes: number) => (bytes / 1048576).toFixed(0);
    notes.push(
      `The log has ${mib(log.size)} MiB: the tables cover its first ${
        mib(options.summaryLogBytes ?? MAX_SUMMARY_LOG_BYTES)
      } MiB; after that come ${log.rest.lines} more lines, ${log.rest.denied} of them denied (the artifact has them all).`,
    );
  }
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
  const restMatters = inputs.uploadLog === "auto" && log.rest !== undefined &&
    log.rest.denied + log.rest.errors > 0;
  if (shouldUploadLog(inputs.uploadLog, audit, events) || restMatters) {
    try {
      mkdirSync(paths.workDir, { recursive: true, mode: 0o700 });
      const copy = join(paths.workDir, "connections.jsonl");
      try {
        copyFileSync(paths.logFile, copy); // the whole log, however large
      } catch {
        writeFileSync(copy, text); // only root may read it: what sudo gave us
      }
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
  if (log.rest) {
    counts.denied += log.rest.denied;
    counts.errors += log.rest.errors;
  }
  if (!audit && inputs.failOnDeny && counts.denied > 0) {
    failures.push(
      `egress denied ${counts.denied} connection${counts.denied === 1 ? "" : "s"} (see the job summary)`,
    );
  }
  return { failures, uploaded, summary, counts };
}
