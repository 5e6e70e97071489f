// Fallback for the DNS proxy when the rendezvous has no entry: conntrack by the reply tuple gives
// the original resolver and the pre-NAT client port, attribution then the process.

import { queryOriginalByReply } from "../kernel/conntrack.ts";
import type { ProcessInfo as KernelProcessInfo, Tuple } from "../kernel/attribution.ts";
import type { ProcessInfo } from "../proc/process_info.ts";
import type { DnsOrigin, DnsOriginResolver, TcpEndpoints, UdpClient } from "./dns_proxy.ts";

type ReplyTuple = { protocol: "tcp" | "udp"; srcIp: string; srcPort: number; dstIp: string; dstPort: number };

export type KernelOriginsOptions = {
  attribution?: { lookupOriginal(protocol: "tcp" | "udp", original: Tuple): KernelProcessInfo | undefined };
  describe?: (pid: number) => Promise<ProcessInfo>;
  originalByReply?: (reply: ReplyTuple) => Promise<Tuple | undefined>;
  /** IPv4 interface addresses with netmasks (default Deno.networkInterfaces) */
  interfaces?: () => Array<{ address: string; netmask: string }>;
};

function toNumber(ip: string): number {
  const parts = ip.split(".").map(Number);
  return parts.length === 4 ? ((parts[0] << 24) | (parts[1] << 16) | (parts[2] << 8) | parts[3]) >>> 0 : 0;
}

const MAX_CANDIDATES = 8;

/**
 * Addresses a REDIRECT may have sent the client's query to: 127.0.0.1 for local clients, else the
 * address of the interface whose network holds the client, then the other interface addresses.
 */
export function redirectCandidates(
  clientIp: string,
  interfaces: Array<{ address: string; netmask: string }>,
): string[] {
  if (clientIp.startsWith("127.")) return ["127.0.0.1"];
  const client = toNumber(clientIp);
  const same: string[] = [];
  const other: string[] = [];
  for (const { address, netmask } of interfaces) {
    if (address.startsWith("127.")) continue;
    const mask = toNumber(netmask);
    ((toNumber(address) & mask) === (client & mask) ? same : other).push(address);
  }
  return [...same, ...other].slice(0, MAX_CANDIDATES);
}

function ipv4Interfaces(): Array<{ address: string; netmask: string }> {
  return Deno.networkInterfaces().filter((entry) => entry.family === "IPv4");
}

export function kernelOrigins(options: KernelOriginsOptions = {}): DnsOriginResolver {
  const originalByReply = options.originalByReply ?? ((reply: ReplyTuple) => queryOriginalByReply(reply));
  const interfaces = options.interfaces ?? ipv4Interfaces;

  async function withProcess(protocol: "tcp" | "udp", original: Tuple): Promise<DnsOrigin> {
    const origin: DnsOrigin = { dstIp: original.dstIp, dstPort: original.dstPort, srcPort: original.srcPort };
    const found = options.attribution?.lookupOriginal(protocol, original);
    if (found) origin.process = options.describe ? await options.describe(found.pid) : { pid: found.pid };
    return origin;
  }

  return {
    async udp(client: UdpClient, proxyPort: number): Promise<DnsOrigin | undefined> {
      for (const local of redirectCandidates(client.ip, interfaces())) {
        const original = await originalByReply({
          protocol: "udp",
          srcIp: local,
          srcPort: proxyPort,
          dstIp: client.ip,
          dstPort: client.port,
        });
        if (original) return await withProcess("udp", original);
      }
      return undefined;
    },
    async tcp(connection: TcpEndpoints): Promise<DnsOrigin | undefined> {
      const original = await originalByReply({
        protocol: "tcp",
        srcIp: connection.localIp,
        srcPort: connection.localPort,
        dstIp: connection.peerIp,
        dstPort: connection.peerPort,
      });
      return original ? await withProcess("tcp", original) : undefined;
    },
  };
}
