// The worker process of `egress start` (runner.md §3): the proxy, the DNS proxy and the NFQUEUE
// consumer. The supervisor (daemon.ts) keeps the control socket, packet steering and BPF; when a
// worker dies, interception stays (fail closed) and the supervisor starts a new one, which re-reads
// `<state-dir>/policy.txt`, reuses the CA and appends to the same logs.
//
// Started as `deno run -A … worker.ts <state-dir>/worker.json`. Protocol on stdio, one line each:
// the worker prints `ready` once its listeners are up; the supervisor sends `counters` (reply:
// `counters {json}`) and `reload` (reply: `reply ok: …` / `reply error: …`). EOF on stdin (the
// supervisor is gone) or SIGTERM stops it.

import { bpfMapLookup, bpfObjGet, closeFd } from "../../ffi/libc.ts";
import { Attribution } from "../kernel/attribution.ts";
import { type EgressBpf, ownNetnsCookie } from "../kernel/bpf_loader.ts";
import { closeConntrack, queryOriginalByReply } from "../kernel/conntrack.ts";
import { ConnectionLog } from "../log/connection_log.ts";
import { OperationalLog } from "../log/operational_log.ts";
import { PolicyError } from "../policy/mod.ts";
import { describeProcess } from "../proc/process_info.ts";
import { EgressCertificates } from "../proxy/certificates.ts";
import { createConnectionResolver } from "./attribution_wiring.ts";
import type { DaemonConfig } from "./config.ts";
import { type Counters, loadRealParts, type PartContext, type RunningPart } from "./parts.ts";
import { formatIssue, parseDaemonPolicy, PolicyState } from "./policy_state.ts";

/** What the supervisor hands to a worker (written 0600 into the state dir). */
export type WorkerSpec = {
  config: DaemonConfig;
  upstreamCaPems: string[];
  /** bpffs path of the pinned egress_conns map (attribution); absent: no attribution */
  connsPin?: string;
};

export const WORKER_SPEC_FILE = "worker.json";

/** Attribution over the pinned map: the same key logic as the supervisor's, read through its fd. */
export function pinnedAttribution(pin: string): { attribution: Attribution; close(): void } {
  const fd = bpfObjGet(pin);
  const conns = {
    lookup: (key: Uint8Array<ArrayBuffer>, value: Uint8Array<ArrayBuffer>) => bpfMapLookup(fd, key, value),
  };
  // Attribution reads only `conns` and `netnsCookie` of the loaded instance.
  const attribution = new Attribution({ conns, netnsCookie: ownNetnsCookie() } as unknown as EgressBpf);
  return { attribution, close: () => closeFd(fd) };
}

function write(line: string): void {
  Deno.stdout.writeSync(new TextEncoder().encode(line + "\n"));
}

async function main(specPath: string): Promise<number> {
  const spec: WorkerSpec = JSON.parse(await Deno.readTextFile(specPath));
  const config = spec.config;
  const oplog = new OperationalLog({ path: config.operationalLogPath, stderr: false });
  const policyPath = `${config.stateDir}/policy.txt`;
  const load = async () =>
    parseDaemonPolicy(await Deno.readTextFile(policyPath), {
      audit: config.audit,
      repository: config.repository,
      runner: config.runner,
    });
  let parsed;
  try {
    parsed = await load();
  } catch (error) {
    const message = error instanceof PolicyError
      ? error.issues.map(formatIssue).join("; ")
      : (error as Error).message;
    oplog.error(`worker: Cannot load the policy ${policyPath}: ${message}`);
    return 1;
  }
  const policy = new PolicyState(parsed.policy, config.audit);
  const certificates = await EgressCertificates.loadOrCreate(config.stateDir);
  const connectionLog = await ConnectionLog.open({
    path: config.logPath,
    // The worker writes nearly every line, so it alone rotates (the supervisor only adds sudo lines).
    maxFileBytes: config.logMaxBytes,
    reporter: { warn: (m) => oplog.warn(m), error: (m) => oplog.error(m) },
  });
  const pinned = spec.connsPin ? pinnedAttribution(spec.connsPin) : undefined;
  const context: PartContext = {
    config,
    policy,
    connectionLog,
    oplog,
    certificates,
    upstreamCaPems: spec.upstreamCaPems,
    attribution: pinned?.attribution,
    resolveConnection: createConnectionResolver({
      originalByReply: (reply) => queryOriginalByReply(reply),
      attribution: pinned?.attribution,
      describe: describeProcess,
      onError: (message) => oplog.warn(message),
    }),
    shared: new Map(),
  };
  const parts = await loadRealParts();
  const running: RunningPart[] = [];
  let stopping: Promise<void> | undefined;
  const stop = () =>
    stopping ??= (async () => {
      for (const part of [...running].reverse()) {
        await part.close().catch((error) =>
          oplog.error(`worker: Cannot stop the ${part.name}: ${error.message}`)
        );
      }
      await connectionLog.close();
      closeConntrack();
      pinned?.close();
      oplog.info(`worker ${Deno.pid}: stopped`);
      oplog.close();
    })();
  Deno.addSignalListener("SIGTERM", () => stop().then(() => Deno.exit(0)));
  // The supervisor decides when to stop and forwards reloads; Ctrl-C and SIGHUP reach both.
  Deno.addSignalListener("SIGINT", () => {});
  Deno.addSignalListener("SIGHUP", () => {});
  try {
    running.push(await parts.startDns(context));
    running.push(await parts.startProxy(context));
    running.push(await parts.startUdp(context));
  } catch (error) {
    oplog.error(`worker: Cannot start: ${(error as Error).message}`);
    await stop();
    return 1;
  }
  oplog.info(
    `worker ${Deno.pid}: listening (proxy ${config.proxyPort}, DNS ${config.dnsPort}, queue ${config.queueNum})`,
  );
  write("ready");

  const lines = Deno.stdin.readable.pipeThrough(new TextDecoderStream());
  let buffer = "";
  for await (const chunk of lines) {
    buffer += chunk;
    let newline;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const request = buffer.slice(0, newline).trim();
      buffer = buffer.slice(newline + 1);
      if (request === "counters") {
        const sum: Counters = { allowed: 0, denied: 0, dns: 0, errors: 0 };
        for (const part of running) {
          const c = part.counters?.() ?? {};
          sum.allowed += c.allowed ?? 0;
          sum.denied += c.denied ?? 0;
          sum.dns += c.dns ?? 0;
          sum.errors += c.errors ?? 0;
        }
        const healthy = running.every((part) => part.healthy?.() ?? true);
        write(`counters ${JSON.stringify({ ...sum, healthy })}`);
      } else if (request === "reload") {
        try {
          const next = await load();
          policy.swap(next.policy);
          write(`reply ok: reloaded ${next.policy.rules.length} rules`);
        } catch (error) {
          const message = error instanceof PolicyError
            ? error.issues.map(formatIssue).join("; ")
            : (error as Error).message;
          write(`reply error: ${message}`);
        }
      }
    }
  }
  await stop(); // stdin closed: the supervisor is gone
  return 0;
}

if (import.meta.main) {
  const specPath = Deno.args[0];
  if (!specPath) {
    console.error("usage: worker.ts <worker.json>");
    Deno.exit(2);
  }
  Deno.exit(await main(specPath));
}
