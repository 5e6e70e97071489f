// Child process for tests/udp/dns_netns_test.ts, run INSIDE the test's network namespace:
//   dns_netns_agent.ts <cgroupProcsFile> <queueNum> <dnsPort> <upstreamPort> <rendezvous|conntrack>
// Joins the exempt cgroup first (as the daemon runs in its own), then runs the fake upstream on
// 127.0.0.2:<upstreamPort>, the DNS proxy on 0.0.0.0:<dnsPort>, the real NFQUEUE consumer with the
// UDP packet handler, and UDP receivers on 127.0.0.3:4000 and :4001. In "conntrack" mode the proxy
// gets a rendezvous table of its own (always a miss), so it must fall back to conntrack. Prints JSON lines: {"ready"},
// {"log": <connection-log event>}, {"received": <port>}. Exits when stdin closes.

import dgram from "node:dgram";
import { parsePolicy } from "../../src/policy/policy.ts";
import { Enforcer } from "../../src/policy/enforcer.ts";
import { DnsProxy } from "../../src/dns/dns_proxy.ts";
import { Rendezvous } from "../../src/dns/rendezvous.ts";
import { createUdpPacketHandler } from "../../src/udp/udp_policy.ts";
import { NfqueueConsumer } from "../../src/udp/nfqueue.ts";
import { FlowLogLimiter } from "../../src/udp/flow_table.ts";
import { DEFAULT_MARKS } from "../../src/netfilter/rules.ts";
import { kernelOrigins } from "../../src/dns/kernel_origins.ts";
import { closeConntrack } from "../../src/kernel/conntrack.ts";
import { startFakeUpstream } from "../dns/fake_upstream.ts";

const [procsFile, queueText, dnsPortText, upstreamPortText, mode] = Deno.args;
Deno.writeTextFileSync(procsFile, String(Deno.pid));
const print = (value: unknown) => console.log(JSON.stringify(value));

const upstream = await startFakeUpstream("127.0.0.2", Number(upstreamPortText));
const policy = parsePolicy(`127.0.0.2:${upstream.port}/udp\nallowed.example.com\n127.0.0.3:4000/udp`);
const enforcer = new Enforcer(policy, { corroborate: true });
const rendezvous = new Rendezvous();
const log = { write: (event: unknown) => print({ log: event }) };
const oplog = {
  debug() {},
  info() {},
  warn: (m: string) => print({ warn: m }),
  error: (m: string) => print({ error: m }),
};
const isLocal = (ip: string) => ip.startsWith("127.");
const proxy = await DnsProxy.start({
  port: Number(dnsPortText),
  getEnforcer: () => enforcer,
  getPolicy: () => policy,
  rendezvous: mode === "conntrack" ? new Rendezvous() : rendezvous,
  origins: kernelOrigins(),
  log,
  oplog,
  isLocal,
});
const handler = createUdpPacketHandler({
  getEnforcer: () => enforcer,
  getPolicy: () => policy,
  rendezvous,
  log,
  oplog,
  marks: DEFAULT_MARKS,
  flowLimiter: new FlowLogLimiter(),
  isLocal,
});
const consumer = NfqueueConsumer.open({ queueNum: Number(queueText), onPacket: handler });
const receivers = [4000, 4001].map((port) => {
  const socket = dgram.createSocket("udp4");
  socket.on("message", () => print({ received: port }));
  socket.bind(port, "127.0.0.3");
  return socket;
});
await new Promise((resolve) => setTimeout(resolve, 100));
print({ ready: true, upstreamPort: upstream.port, dnsPort: proxy.port });

for await (const _ of Deno.stdin.readable) {
  // Only waiting for stdin to close.
}
consumer.close();
for (const socket of receivers) socket.close();
await proxy.close();
await upstream.close();
closeConntrack();
print({ counters: handler.counters });
Deno.exit(0);
