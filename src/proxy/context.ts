// What one proxied connection knows and needs: its original destination and process, the
// policy snapshot source, and the log/counters. Shared by the server, the HTTP request loop and
// the raw relay so that every log line is filled the same way.

import type { Enforcer, Policy } from "../policy/mod.ts";
import type { ConnectionEvent, Decision } from "../policy/types.ts";
import { ruleSourceText } from "../policy/policy.ts";
import type { ConnectionLogEvent } from "../log/connection_log.ts";
import type { PackageVerdict } from "../packages/reputation.ts";
import type { ProcessFields } from "../proc/process_fields.ts";

/** What the daemon's conntrack + BPF + /proc lookup says about an accepted connection. */
export type ResolvedConnection = {
  dst_ip: string;
  dst_port: number;
  src_port: number;
  process?: ProcessFields;
};

/** The policy in force; swapped atomically by a reload (both fields from the same load). */
export type EnforcerSnapshot = { enforcer: Enforcer; policy: Policy };

export type ConnectionLogSink = { write(event: ConnectionLogEvent): unknown };
export type OperationalLogSink = {
  debug(message: string): void;
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
};

export type ProxyTimeouts = {
  /** client sends nothing for this long ⇒ server-speaks-first raw TCP (runner.md §8) */
  firstByteMs: number;
  /** from the first byte of a request head (or ClientHello) to its end (slowloris bound) */
  headMs: number;
  /** keep-alive wait for the next request on a client connection */
  idleMs: number;
  /** TCP connect to the original destination */
  connectMs: number;
  /** TLS handshakes, client and upstream side */
  handshakeMs: number;
  /** upstream silence while a response is awaited or streamed */
  upstreamIdleMs: number;
  /** close(): how long in-flight connections may finish before they are aborted */
  closeGraceMs: number;
};

export const DEFAULT_TIMEOUTS: ProxyTimeouts = {
  firstByteMs: 250,
  headMs: 10_000,
  idleMs: 60_000,
  connectMs: 10_000,
  handshakeMs: 10_000,
  upstreamIdleMs: 300_000,
  closeGraceMs: 5_000,
};

export type ProxyCounters = { allowed: number; denied: number; errors: number };

/** Per-request checks beyond the policy (extras.md), injected by the daemon; absent = off. */
export type RequestHooks = {
  /** §1: verdict on a forwarded request's URL (src/packages/reputation.ts PackageChecker fits). */
  packageCheck?: { checkRequest(url: string): Promise<PackageVerdict> };
  /** §2: whether the request carries the job's or the OIDC token (src/packages/token_tagging.ts). */
  tagToken?: (url: string, headers: ReadonlyArray<readonly [string, string]>) => boolean;
};

/** Decision plus the policy it came from (for the `rule` text). */
export type Judgement = { decision: Decision; policy?: Policy };

export type JudgeFields = Pick<ConnectionEvent, "type" | "host" | "url" | "method">;

export class ConnectionContext {
  readonly info: ResolvedConnection;
  readonly audit: boolean;
  readonly timeouts: ProxyTimeouts;
  readonly hooks: RequestHooks;
  readonly #getEnforcer: () => EnforcerSnapshot;
  readonly #log: ConnectionLogSink;
  readonly ops: OperationalLogSink;
  readonly #counters: ProxyCounters;

  constructor(options: {
    info: ResolvedConnection;
    audit: boolean;
    timeouts: ProxyTimeouts;
    hooks?: RequestHooks;
    getEnforcer: () => EnforcerSnapshot;
    log: ConnectionLogSink;
    ops: OperationalLogSink;
    counters: ProxyCounters;
  }) {
    this.info = options.info;
    this.audit = options.audit;
    this.timeouts = options.timeouts;
    this.hooks = options.hooks ?? {};
    this.#getEnforcer = options.getEnforcer;
    this.#log = options.log;
    this.ops = options.ops;
    this.#counters = options.counters;
  }

  /** The event for the Enforcer: the given fields plus destination and process attributes. */
  event(fields: JudgeFields): ConnectionEvent {
    const event: ConnectionEvent = {
      type: fields.type,
      dst_ip: this.info.dst_ip,
      dst_port: this.info.dst_port,
    };
    if (fields.host !== undefined) event.host = fields.host;
    if (fields.url !== undefined) event.url = fields.url;
    if (fields.method !== undefined) event.method = fields.method;
    const process = this.info.process;
    if (process) {
      if (process.exe) event.exe = process.exe;
      if (process.cmdline && process.cmdline.length > 0) event.cmdline = process.cmdline;
      if (process.cgroup) event.cgroup = process.cgroup;
      if (process.step) event.step = process.step;
      if (process.action) event.action = process.action;
      if (process.image) event.image = process.image;
    }
    return event;
  }

  /**
   * Decides with the policy in force now. The Enforcer never throws, but a broken snapshot
   * source might: that denies with `internal error: …` and an ERROR line (fail closed).
   */
  judge(fields: JudgeFields, options: { mitm?: boolean } = {}): Judgement {
    try {
      const { enforcer, policy } = this.#getEnforcer();
      const decision = enforcer.decide(this.event(fields), options);
      if (decision.reason.startsWith("internal error")) {
        this.ops.error(`Cannot decide ${this.#describe(fields)}: ${decision.reason}`);
        this.#counters.errors++;
      }
      return { decision, policy };
    } catch (error) {
      const detail = error instanceof Error ? error.message : String(error);
      this.ops.error(`Cannot decide ${this.#describe(fields)}: ${detail}`);
      this.#counters.errors++;
      return {
        decision: {
          allowed: false,
          policy: "deny",
          passthrough: false,
          insecure: false,
          reason: `internal error: ${detail}`,
        },
      };
    }
  }

  #describe(fields: JudgeFields): string {
    const target = fields.url ?? fields.host ?? `${this.info.dst_ip}:${this.info.dst_port}`;
    return `${fields.type} ${target}`;
  }

  /** Writes one connection-log line: the base fields, the verdict, then `extra`. */
  logLine(
    extra: ConnectionLogEvent,
    judgement: Judgement | undefined,
  ): void {
    const line: ConnectionLogEvent = {
      ...extra,
      dst_ip: this.info.dst_ip,
      dst_port: this.info.dst_port,
      src_port: this.info.src_port,
    };
    if (judgement) {
      const { decision, policy } = judgement;
      line.policy = decision.policy;
      if (decision.rule && decision.index !== undefined && policy) {
        try {
          line.rule = ruleSourceText(policy, decision.index);
          line.line = decision.rule.line;
        } catch {
          // a rule index the policy does not know: log the verdict without the rule
        }
      }
      if (decision.policy === "deny") line.reason = decision.reason;
      if (decision.policy === "deny") this.#counters.denied++;
      else this.#counters.allowed++;
    }
    if (this.audit) line.audit = true;
    if (line.error) this.#counters.errors++;
    const process = this.info.process;
    if (process) {
      line.pid = process.pid;
      if (process.exe) line.exe = process.exe;
      if (process.cmdline && process.cmdline.length > 0) line.cmdline = process.cmdline;
      if (process.cgroup) line.cgroup = process.cgroup;
      if (process.image) line.image = process.image;
      if (process.step) line.step = process.step;
      if (process.action) line.action = process.action;
    }
    try {
      this.#log.write(line);
    } catch (error) {
      this.ops.error(`Cannot write connection log line: ${error instanceof Error ? error.message : error}`);
    }
  }
}
