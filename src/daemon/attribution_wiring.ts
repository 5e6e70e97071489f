// Attribution for the proxy: accepted connection → conntrack by reply tuple (original destination
// and pre-NAT client port) → BPF map lookup → pid → /proc description. A conntrack miss means the
// connection was not redirected (or its entry vanished): the destination is unknown and the proxy
// denies. A BPF miss leaves the process unknown (runner-scoped rules cannot match).

import type { Attribution, Tuple } from "../kernel/attribution.ts";
import type { ProcessInfo } from "../proc/process_info.ts";
import type { ConnectionAddresses, ResolvedConnection } from "./parts.ts";

export type ResolverDeps = {
  originalByReply: (reply: {
    protocol: "tcp";
    srcIp: string;
    srcPort: number;
    dstIp: string;
    dstPort: number;
  }) => Promise<Tuple | undefined>;
  attribution?: Pick<Attribution, "lookupOriginal">;
  describe: (pid: number) => Promise<ProcessInfo>;
  onError?: (message: string) => void;
};

function stripMapped(ip: string): string {
  return ip.toLowerCase().startsWith("::ffff:") ? ip.slice(7) : ip;
}

export function createConnectionResolver(deps: ResolverDeps) {
  return async (conn: ConnectionAddresses): Promise<ResolvedConnection | undefined> => {
    const local = conn.localAddr, remote = conn.remoteAddr;
    if (local.transport !== "tcp" || remote.transport !== "tcp") return undefined;
    const original = await deps.originalByReply({
      protocol: "tcp",
      srcIp: stripMapped(local.hostname),
      srcPort: local.port,
      dstIp: stripMapped(remote.hostname),
      dstPort: remote.port,
    });
    if (!original) return undefined;
    const resolved: ResolvedConnection = {
      dst_ip: stripMapped(original.dstIp),
      dst_port: original.dstPort,
      src_port: original.srcPort,
    };
    try {
      const kernel = deps.attribution?.lookupOriginal("tcp", original);
      if (kernel && kernel.pid > 0) resolved.process = await deps.describe(kernel.pid);
    } catch (error) {
      deps.onError?.(
        `attribution failed for ${resolved.dst_ip}:${resolved.dst_port}: ${(error as Error).message}`,
      );
    }
    return resolved;
  };
}
