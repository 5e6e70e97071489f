// The transparent proxy (src/proxy/server.ts) as a daemon part, listening on 0.0.0.0:--proxy-port
// (the REDIRECT of local traffic lands on 127.0.0.1, forwarded traffic on the interface address;
// direct connections to the port are dropped by the steering rules).

import type { DnsProxy } from "../../dns/dns_proxy.ts";
import { startProxy } from "../../proxy/server.ts";
import { createRequestHooks } from "../../packages/request_hooks.ts";
import denoConfig from "../../../deno.json" with { type: "json" };
import type { PartContext, RunningPart } from "../parts.ts";

export async function startProxyPart(context: PartContext): Promise<RunningPart> {
  const requestHooks = createRequestHooks({
    packageCheck: context.config.packageCheck,
    packageCheckUrl: context.config.packageCheckUrl,
    version: denoConfig.version,
    env: (key) => Deno.env.get(key),
    log: context.oplog,
  });
  const handle = await startProxy({
    requestHooks,
    hostname: "0.0.0.0",
    port: context.config.proxyPort,
    resolveConnection: (conn) => context.resolveConnection(conn),
    getEnforcer: () => context.policy.snapshot,
    dnsCache: context.policy.dnsCache,
    audit: context.config.audit,
    certificates: context.certificates,
    upstreamCaCerts: context.upstreamCaPems,
    connectionLog: context.connectionLog,
    operationalLog: context.oplog,
    dnsOverTcp: (conn, initial, info) => {
      const dns = context.shared.get("dnsProxy") as DnsProxy | undefined;
      if (!dns) {
        conn.close();
        return Promise.resolve();
      }
      return dns.handleDnsOverTcp(conn, initial, {
        dstIp: info.dst_ip,
        dstPort: info.dst_port,
        srcPort: info.src_port,
        process: info.process,
      });
    },
  });
  return {
    name: "transparent proxy",
    close: () => handle.close(),
    counters: () => ({ ...handle.counters }),
  };
}
