// The DNS proxy (src/dns/dns_proxy.ts) as a daemon part: UDP and TCP on 0.0.0.0:--dns-port (the
// proxy adds a loopback UDP socket itself, so answers to locally REDIRECTed queries leave from
// 127.0.0.1 and conntrack maps them back), fed by the rendezvous the NFQUEUE consumer fills, with
// conntrack + BPF as the fallback origin lookup.

import { DnsProxy } from "../../dns/dns_proxy.ts";
import { kernelOrigins } from "../../dns/kernel_origins.ts";
import { isLocalAddress } from "../../kernel/attribution.ts";
import { describeProcess } from "../../proc/process_info.ts";
import type { PartContext, RunningPart } from "../parts.ts";
import { sharedRendezvous } from "./shared.ts";

export async function startDnsPart(context: PartContext): Promise<RunningPart> {
  const proxy = await DnsProxy.start({
    port: context.config.dnsPort,
    hostname: "0.0.0.0",
    getEnforcer: () => context.policy.enforcer,
    getPolicy: () => context.policy.policy,
    rendezvous: sharedRendezvous(context),
    log: context.connectionLog,
    oplog: context.oplog,
    upstreams: context.config.dnsUpstreams,
    origins: kernelOrigins({ attribution: context.attribution, describe: describeProcess }),
    isLocal: isLocalAddress,
    audit: context.config.audit,
  });
  context.shared.set("dnsProxy", proxy);
  return {
    name: "DNS proxy",
    close: () => proxy.close(),
    counters: () => ({
      dns: proxy.stats.queries,
      denied: proxy.stats.refused + proxy.stats.formerr,
      errors: proxy.stats.servfail,
    }),
  };
}
