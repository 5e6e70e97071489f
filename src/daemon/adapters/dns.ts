// The DNS proxy (src/dns/dns_proxy.ts) as a daemon part: UDP and TCP on --dns-port, fed by the
// rendezvous the NFQUEUE consumer fills, with conntrack + BPF as the fallback origin lookup.
//
// UDP is bound once per local IPv4 address instead of on 0.0.0.0: a reply sent from a wildcard
// socket takes the routing source address (e.g. the veth address) instead of the address the
// REDIRECT delivered the query to (127.0.0.1 for local clients), so conntrack cannot un-NAT it and
// the client drops the answer. TCP is connected and has no such problem: it listens on 0.0.0.0.

import { DnsProxy, type DnsProxyOptions } from "../../dns/dns_proxy.ts";
import { kernelOrigins } from "../../dns/kernel_origins.ts";
import { isLocalAddress } from "../../kernel/attribution.ts";
import { describeProcess } from "../../proc/process_info.ts";
import type { PartContext, RunningPart } from "../parts.ts";
import { sharedRendezvous } from "./shared.ts";

function localIpv4Addresses(): string[] {
  const addresses = new Set(["127.0.0.1"]);
  for (const entry of Deno.networkInterfaces()) if (entry.family === "IPv4") addresses.add(entry.address);
  return [...addresses];
}

export async function startDnsPart(context: PartContext): Promise<RunningPart> {
  const base: DnsProxyOptions = {
    port: context.config.dnsPort,
    getEnforcer: () => context.policy.enforcer,
    getPolicy: () => context.policy.policy,
    rendezvous: sharedRendezvous(context),
    log: context.connectionLog,
    oplog: context.oplog,
    upstreams: context.config.dnsUpstreams,
    origins: kernelOrigins({ attribution: context.attribution, describe: describeProcess }),
    isLocal: isLocalAddress,
    audit: context.config.audit,
  };
  const proxies: DnsProxy[] = [];
  const closeAll = async () => {
    for (const proxy of proxies) await proxy.close();
  };
  try {
    const tcp = await DnsProxy.start({ ...base, hostname: "0.0.0.0", udp: false, tcp: true });
    proxies.push(tcp);
    context.shared.set("dnsProxy", tcp);
    for (const address of localIpv4Addresses()) {
      proxies.push(await DnsProxy.start({ ...base, hostname: address, udp: true, tcp: false }));
    }
  } catch (error) {
    await closeAll();
    throw error;
  }
  const sum = (key: keyof DnsProxy["stats"]) => proxies.reduce((total, proxy) => total + proxy.stats[key], 0);
  return {
    name: "DNS proxy",
    close: closeAll,
    counters: () => ({
      dns: sum("queries"),
      denied: sum("refused") + sum("formerr"),
      errors: sum("servfail"),
    }),
  };
}
