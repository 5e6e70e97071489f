// The pieces the daemon composes, each behind a small port so that the composition order lives in
// one place (daemon.ts) and each piece can be wired, or faked in tests, on its own. The real
// adapters live in src/daemon/adapters/ and are imported by a computed specifier: a piece that is
// not part of this build makes the daemon refuse to start with a clear message (never fail open).

import type { Attribution } from "../kernel/attribution.ts";
import type { ConnectionLog } from "../log/connection_log.ts";
import type { OperationalLog } from "../log/operational_log.ts";
import type { EgressCertificates } from "../proxy/certificates.ts";
import type { ProcessInfo } from "../proc/process_info.ts";
import type { DaemonConfig } from "./config.ts";
import type { PolicyState } from "./policy_state.ts";

export type Counters = { allowed: number; denied: number; dns: number; errors: number };

/** What the proxy learns about an accepted connection (conntrack + BPF + /proc). */
export type ResolvedConnection = {
  dst_ip: string;
  dst_port: number;
  src_port: number;
  process?: ProcessInfo;
};

export type ConnectionAddresses = { localAddr: Deno.Addr; remoteAddr: Deno.Addr };

/** Everything a listener part may need; built by the daemon after the CA and BPF steps. */
export type PartContext = {
  config: DaemonConfig;
  policy: PolicyState;
  connectionLog: ConnectionLog;
  oplog: OperationalLog;
  certificates: EgressCertificates;
  /** PEM texts of --upstream-ca */
  upstreamCaPems: string[];
  /** BPF attribution of this instance; undefined only in tests without BPF */
  attribution?: Attribution;
  resolveConnection: (conn: ConnectionAddresses) => Promise<ResolvedConnection | undefined>;
  /** Shared between the UDP consumer (writer) and the DNS proxy (reader). */
  shared: Map<string, unknown>;
};

/** A running listener (proxy, DNS proxy, NFQUEUE consumer). */
export interface RunningPart {
  readonly name: string;
  /** Stop accepting and finish (bounded). */
  close(): Promise<void>;
  counters?(): Partial<Counters>;
  /** false once the part has stopped working on its own (status then reports `degraded`). */
  healthy?(): boolean;
}

export type SteeringSettings = {
  proxyPort: number;
  dnsPort: number;
  queueNum: number;
  /** cgroup v2 path of egress itself, exempt from steering */
  exemptCgroupPath: string;
};

export type StepLog = (message: string) => void;

/** Packet steering in this network namespace (src/netfilter). */
export interface SteeringPart {
  /** Removes chains and jumps an earlier run left; returns a description per thing removed. */
  removeLeftovers(log: StepLog): Promise<number>;
  install(settings: SteeringSettings, log: StepLog): Promise<void>;
  remove(log: StepLog): Promise<void>;
  flushUdpConntrack(): Promise<void>;
  revokeFastPath(): Promise<void>;
}

export interface DaemonParts {
  steering: SteeringPart;
  startProxy(context: PartContext): Promise<RunningPart>;
  startDns(context: PartContext): Promise<RunningPart>;
  startUdp(context: PartContext): Promise<RunningPart>;
}

/** Thrown when a piece is not in this build: the daemon refuses to start (exit 1). */
export class PartMissing extends Error {
  constructor(readonly part: string, reason: string) {
    super(`Cannot start egress: the ${part} is not available in this build (${reason})`);
    this.name = "PartMissing";
  }
}

const ADAPTERS = {
  steering: { file: "steering.ts", what: "packet steering (src/netfilter)" },
  proxy: { file: "proxy.ts", what: "transparent proxy (src/proxy/server.ts)" },
  dns: { file: "dns.ts", what: "DNS proxy (src/dns/dns_proxy.ts)" },
  udp: { file: "udp.ts", what: "NFQUEUE consumer (src/udp)" },
} as const;

async function loadAdapter<T>(key: keyof typeof ADAPTERS, exportName: string): Promise<T> {
  const { file, what } = ADAPTERS[key];
  const specifier = new URL(`./adapters/${file}`, import.meta.url).href;
  let module: Record<string, unknown>;
  try {
    module = await import(specifier);
  } catch (error) {
    const message = (error as Error).message.split("\n")[0];
    throw new PartMissing(what, message);
  }
  const value = module[exportName];
  if (value === undefined) throw new PartMissing(what, `adapter ${file} has no ${exportName}`);
  return value as T;
}

/** Imports every real piece; throws PartMissing naming the first one that is not there. */
export async function loadRealParts(): Promise<DaemonParts> {
  const steering = await loadAdapter<() => SteeringPart>("steering", "createSteering");
  const startProxy = await loadAdapter<DaemonParts["startProxy"]>("proxy", "startProxyPart");
  const startDns = await loadAdapter<DaemonParts["startDns"]>("dns", "startDnsPart");
  const startUdp = await loadAdapter<DaemonParts["startUdp"]>("udp", "startUdpPart");
  return { steering: steering(), startProxy, startDns, startUdp };
}
