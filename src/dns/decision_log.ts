// Shared by the DNS proxy and the UDP packet handler: turning a process description into event
// attributes and log fields, and a decision into the policy/rule/line/reason fields.

import type { ConnectionEvent, Decision } from "../policy/types.ts";
import type { Policy } from "../policy/policy.ts";
import { ruleSourceText } from "../policy/policy.ts";
import type { ConnectionLogEvent } from "../log/connection_log.ts";
import type { ProcessInfo } from "../proc/process_info.ts";

/** What both components need to write a connection-log line. */
export interface ConnectionLogSink {
  write(event: ConnectionLogEvent): unknown;
}

/** Operational log, as far as these components use it. */
export interface OperationalSink {
  debug(message: string): void;
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

export const silentOperationalLog: OperationalSink = {
  debug() {},
  info() {},
  warn() {},
  error() {},
};

/** Copies the process attributes into a policy event (only those present). */
export function withProcess<T extends ConnectionEvent>(event: T, process: ProcessInfo | undefined): T {
  if (!process) return event;
  if (process.exe !== undefined) event.exe = process.exe;
  if (process.cmdline !== undefined) event.cmdline = process.cmdline;
  if (process.cgroup !== undefined) event.cgroup = process.cgroup;
  if (process.step !== undefined) event.step = process.step;
  if (process.action !== undefined) event.action = process.action;
  if (process.image !== undefined) event.image = process.image;
  return event;
}

/** Appends the process fields of events.md §3 (pid, exe, cmdline, cgroup, image, step, action). */
export function addProcessFields(
  line: ConnectionLogEvent,
  process: ProcessInfo | undefined,
): ConnectionLogEvent {
  if (!process) return line;
  if (process.pid > 0) line.pid = process.pid;
  if (process.exe !== undefined) line.exe = process.exe;
  if (process.cmdline !== undefined) line.cmdline = process.cmdline;
  if (process.cgroup !== undefined) line.cgroup = process.cgroup;
  if (process.image !== undefined) line.image = process.image;
  if (process.step !== undefined) line.step = process.step;
  if (process.action !== undefined) line.action = process.action;
  return line;
}

/** Source text of the rule a decision matched (the policy's line when known, else the target). */
export function ruleTextOf(decision: Decision, policy: Policy | undefined): string | undefined {
  if (!decision.rule) return undefined;
  if (policy !== undefined && decision.index !== undefined) {
    try {
      return ruleSourceText(policy, decision.index);
    } catch {
      // A policy reloaded between decision and logging: fall back to the rule itself.
    }
  }
  return decision.rule.target;
}

/** policy, rule, line, reason and audit fields of a decision. */
export function addDecisionFields(
  line: ConnectionLogEvent,
  decision: Decision,
  policy: Policy | undefined,
  audit: boolean,
): ConnectionLogEvent {
  line.policy = decision.policy;
  const rule = ruleTextOf(decision, policy);
  if (rule !== undefined && decision.rule) {
    line.rule = rule;
    line.line = decision.rule.line;
  }
  if (decision.policy === "deny") line.reason = decision.reason;
  if (audit) line.audit = true;
  return line;
}
