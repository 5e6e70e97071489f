// DNS proxy benchmark: queries per second and latency p50/p99 through the proxy vs directly to the
// same upstream (a tiny dns-packet server on 127.0.0.2), sequential and concurrent. Loopback only,
// bounded in time and count. Usage: deno run -A scripts/bench/dns.ts [--seconds N] [--concurrency N]

import dgram from "node:dgram";
import dnsPacket from "dns-packet";
import { parsePolicy } from "../../src/policy/policy.ts";
import { Enforcer } from "../../src/policy/enforcer.ts";
import { DnsProxy } from "../../src/dns/dns_proxy.ts";
import { Rendezvous } from "../../src/dns/rendezvous.ts";

const args = Deno.args;
const option = (name: string, fallback: number) => {
  const i = args.indexOf(name);
  const value = i >= 0 ? Number(args[i + 1]) : fallback;
  if (!Number.isFinite(value) || value <= 0) {
    throw new Error(`Cannot run benchmark: ${name} must be a positive number`);
  }
  return value;
};
const SECONDS = option("--seconds", 2);
const CONCURRENCY = option("--concurrency", 32);
const MAX_QUERIES = 200_000;

async function startUpstream(): Promise<{ socket: dgram.Socket; port: number }> {
  const socket = dgram.createSocket("udp4");
  socket.on("message", (message, rinfo) => {
    try {
      const query = dnsPacket.decode(message);
      const question = query.questions![0];
      const reply = dnsPacket.encode({
        type: "response",
        id: query.id,
        flags: dnsPacket.RECURSION_AVAILABLE,
        questions: query.questions,
        answers: [{ type: "A", name: question.name, ttl: 300, data: "192.0.2.1" }],
      });
      socket.send(reply, rinfo.port, rinfo.address);
    } catch {
      // not a query
    }
  });
  await new Promise<void>((resolve) => socket.bind(0, "127.0.0.2", () => resolve()));
  return { socket, port: socket.address().port };
}

type Result = { count: number; seconds: number; latencies: Float64Array };

/** `concurrency` clients, each sending one query and waiting for its answer, until time is up. */
async function load(
  target: { ip: string; port: number },
  concurrency: number,
  seconds: number,
): Promise<Result> {
  const latencies: number[] = [];
  const deadline = performance.now() + seconds * 1000;
  const started = performance.now();
  async function client(index: number): Promise<void> {
    const socket = dgram.createSocket("udp4");
    await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", () => resolve()));
    let pending: ((ok: boolean) => void) | undefined;
    socket.on("message", () => pending?.(true));
    let id = index * 1000;
    try {
      while (performance.now() < deadline && latencies.length < MAX_QUERIES) {
        id = (id + 1) & 0xffff;
        const query = dnsPacket.encode({
          type: "query",
          id,
          flags: dnsPacket.RECURSION_DESIRED,
          questions: [{ type: "A", name: `q${id}.bench.example.com` }],
        });
        const t0 = performance.now();
        const ok = await new Promise<boolean>((resolve) => {
          const timer = setTimeout(() => resolve(false), 2000);
          pending = (value) => {
            clearTimeout(timer);
            resolve(value);
          };
          socket.send(query, target.port, target.ip);
        });
        if (ok) latencies.push(performance.now() - t0);
      }
    } finally {
      await new Promise<void>((resolve) => socket.close(() => resolve()));
    }
  }
  await Promise.all(Array.from({ length: concurrency }, (_, i) => client(i)));
  return {
    count: latencies.length,
    seconds: (performance.now() - started) / 1000,
    latencies: Float64Array.from(latencies),
  };
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function summary(label: string, result: Result) {
  const sorted = result.latencies.slice().sort();
  const qps = result.count / result.seconds;
  const p50 = percentile(sorted, 50);
  const p99 = percentile(sorted, 99);
  console.log(
    `${label.padEnd(28)} ${String(result.count).padStart(7)} queries  ${qps.toFixed(0).padStart(7)} q/s  ` +
      `p50 ${p50.toFixed(3)} ms  p99 ${p99.toFixed(3)} ms`,
  );
  return { qps, p50, p99 };
}

const upstream = await startUpstream();
const policy = parsePolicy(`127.0.0.2:${upstream.port}/udp\n*.bench.example.com`);
const enforcer = new Enforcer(policy, { corroborate: true });
let logged = 0;
const proxy = await DnsProxy.start({
  port: 0,
  hostname: "127.0.0.1",
  getEnforcer: () => enforcer,
  getPolicy: () => policy,
  rendezvous: new Rendezvous(),
  log: { write: () => logged++ },
  origins: {
    udp: (client) => Promise.resolve({ dstIp: "127.0.0.2", dstPort: upstream.port, srcPort: client.port }),
    tcp: () => Promise.resolve(undefined),
  },
  isLocal: (ip) => ip.startsWith("127."),
});

try {
  const direct = { ip: "127.0.0.2", port: upstream.port };
  const viaProxy = { ip: "127.0.0.1", port: proxy.port };
  console.log(`DNS benchmark: ${SECONDS} s per run, concurrency ${CONCURRENCY}, loopback only`);
  await load(viaProxy, 4, 0.3); // warm-up (JIT, sockets)
  const seqDirect = summary("sequential direct", await load(direct, 1, SECONDS));
  const seqProxy = summary("sequential via proxy", await load(viaProxy, 1, SECONDS));
  const conDirect = summary(`concurrent(${CONCURRENCY}) direct`, await load(direct, CONCURRENCY, SECONDS));
  const conProxy = summary(
    `concurrent(${CONCURRENCY}) via proxy`,
    await load(viaProxy, CONCURRENCY, SECONDS),
  );
  console.log(
    `ratios proxy/direct: sequential q/s ${(seqProxy.qps / seqDirect.qps).toFixed(2)}, ` +
      `added p50 ${(seqProxy.p50 - seqDirect.p50).toFixed(3)} ms, added p99 ${
        (seqProxy.p99 - seqDirect.p99).toFixed(3)
      } ms; ` +
      `concurrent q/s ${(conProxy.qps / conDirect.qps).toFixed(2)}, ` +
      `added p50 ${(conProxy.p50 - conDirect.p50).toFixed(3)} ms, added p99 ${
        (conProxy.p99 - conDirect.p99).toFixed(3)
      } ms`,
  );
  console.log(`proxy stats: ${JSON.stringify(proxy.stats)}, log lines ${logged}`);
} finally {
  await proxy.close();
  await new Promise<void>((resolve) => upstream.socket.close(() => resolve()));
}
