// DNS proxy benchmark: queries per second and latency p50/p99 through the proxy vs directly to the
// same upstream, sequential and concurrent. The upstream is dnsmasq on 127.0.0.2 and the load
// comes from dnsperf (separate processes, so the proxy has the JS thread to itself); without them
// it falls back to a dns-packet server and a node:dgram load loop in this process (they then share
// the event loop with the proxy: lower numbers). Loopback only, bounded in time and count.
// Usage: deno run -A scripts/bench/dns.ts [--seconds N] [--concurrency N] [--js]

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
const DNSPERF = "/usr/bin/dnsperf";
const DNSMASQ = "/usr/sbin/dnsmasq";
const PYTHON = "/usr/bin/python3";
const FORCE_JS = args.includes("--js");

type Upstream = { port: number; close(): Promise<void> };

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

async function freeUdpPort(): Promise<number> {
  const socket = dgram.createSocket("udp4");
  await new Promise<void>((resolve) => socket.bind(0, "127.0.0.2", () => resolve()));
  const port = socket.address().port;
  await new Promise<void>((resolve) => socket.close(() => resolve()));
  return port;
}

/** dnsmasq answering every *.bench.example.com name itself (no recursion, no cache misses). */
async function startDnsmasq(): Promise<Upstream> {
  const port = await freeUdpPort();
  const child = new Deno.Command(DNSMASQ, {
    args: [
      "--keep-in-foreground",
      "--conf-file=/dev/null",
      "--no-resolv",
      "--no-hosts",
      "--bind-interfaces",
      "--listen-address=127.0.0.2",
      `--port=${port}`,
      "--address=/bench.example.com/192.0.2.1",
      "--pid-file=",
      ...(Deno.uid() === 0 ? ["--user=root"] : []),
      "--log-facility=-",
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  const close = async () => {
    try {
      child.kill("SIGKILL");
    } catch {
      // exited
    }
    await child.status;
  };
  for (let i = 0; i < 50; i++) {
    const probe = await dnsperfRun({ ip: "127.0.0.2", port }, { seconds: 0.2, outstanding: 1, clients: 1 });
    if (probe.count > 0) return { port, close };
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  await close();
  throw new Error(`Cannot run benchmark: dnsmasq did not answer on 127.0.0.2:${port}`);
}

let queryFile: string | undefined;
function queries(): string {
  if (!queryFile) {
    queryFile = Deno.makeTempFileSync({ prefix: "egress-dnsperf-" });
    const lines = Array.from({ length: 1000 }, (_, i) => `q${i}.bench.example.com A`);
    Deno.writeTextFileSync(queryFile, lines.join("\n") + "\n");
  }
  return queryFile;
}

/** dnsperf against target: throughput, and dnsperf's average latency (reported as the mean). */
async function dnsperfRun(
  target: { ip: string; port: number },
  run: { seconds: number; outstanding: number; clients: number },
): Promise<Result> {
  const output = await new Deno.Command(DNSPERF, {
    args: [
      "-s",
      target.ip,
      "-p",
      String(target.port),
      "-d",
      queries(),
      "-l",
      String(run.seconds),
      "-q",
      String(run.outstanding),
      "-c",
      String(run.clients),
      "-t",
      "2",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(output.stdout);
  const completed = Number(/Queries completed:\s+(\d+)/.exec(text)?.[1] ?? 0);
  const seconds = Number(/Run time \(s\):\s+([\d.]+)/.exec(text)?.[1] ?? run.seconds);
  const average = Number(/Average Latency \(s\):\s+([\d.]+)/.exec(text)?.[1] ?? NaN) * 1000;
  const latencies = [average];
  const lost = Number(/Queries lost:\s+(\d+)/.exec(text)?.[1] ?? 0);
  return { count: completed - lost, seconds, latencies: Float64Array.from(latencies), lost };
}

// Sequential loop in its own process: one query, wait for its answer, next (latency per query).
const PY_SEQUENTIAL = String.raw`
import json, socket, struct, sys, time
ip, port, seconds, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
latencies, i = [], 0
start = time.monotonic()
while time.monotonic() - start < seconds and len(latencies) < limit:
    i += 1
    name = b"".join(bytes([len(p)]) + p for p in (b"q%d" % (i % 1000), b"bench", b"example", b"com"))
    q = struct.pack(">HHHHHH", i & 0xffff, 0x0100, 1, 0, 0, 0) + name + b"\0\0\x01\0\x01"
    t0 = time.perf_counter()
    s.sendto(q, (ip, port))
    try:
        while s.recv(512)[:2] != q[:2]:
            pass
    except socket.timeout:
        continue
    latencies.append((time.perf_counter() - t0) * 1000)
print(json.dumps({"seconds": time.monotonic() - start, "latencies": latencies}))
`;

async function pythonSequential(target: { ip: string; port: number }, seconds: number): Promise<Result> {
  const output = await new Deno.Command(PYTHON, {
    args: ["-c", PY_SEQUENTIAL, target.ip, String(target.port), String(seconds), String(MAX_QUERIES)],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!output.success) {
    throw new Error(`Cannot run the sequential DNS client: ${new TextDecoder().decode(output.stderr)}`);
  }
  const report = JSON.parse(new TextDecoder().decode(output.stdout));
  return {
    count: report.latencies.length,
    seconds: report.seconds,
    latencies: Float64Array.from(report.latencies),
  };
}

async function startJsUpstream(): Promise<Upstream> {
  const { socket, port } = await startUpstream();
  return { port, close: () => new Promise<void>((resolve) => socket.close(() => resolve())) };
}

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

type Result = { count: number; seconds: number; latencies: Float64Array; lost?: number };

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
  const lost = result.lost ? `  lost ${result.lost}` : "";
  const qps = result.count / result.seconds;
  const p50 = percentile(sorted, 50);
  const p99 = percentile(sorted, 99);
  console.log(
    `${label.padEnd(28)} ${String(result.count).padStart(7)} queries  ${qps.toFixed(0).padStart(7)} q/s  ` +
      (result.latencies.length === 1
        ? `mean ${p50.toFixed(3)} ms`
        : `p50 ${p50.toFixed(3)} ms  p99 ${p99.toFixed(3)} ms`) +
      lost,
  );
  return { qps, p50, p99 };
}

const external = !FORCE_JS && exists(DNSPERF) && exists(DNSMASQ) && exists(PYTHON);
const upstream = external ? await startDnsmasq() : await startJsUpstream();
const policy = parsePolicy(`127.0.0.2:${upstream.port}/udp\n*.bench.example.com`);
const enforcer = new Enforcer(policy, { corroborate: true });
// Each line serialized as the connection log would, so its cost is part of the numbers.
let logged = 0;
let loggedBytes = 0;
const proxy: DnsProxy = await DnsProxy.start({
  port: 0,
  hostname: "127.0.0.1",
  getEnforcer: () => enforcer,
  getPolicy: () => policy,
  rendezvous: new Rendezvous(),
  log: {
    write: (line) => {
      logged++;
      loggedBytes += JSON.stringify(line).length;
    },
  },
  origins: {
    udp: (client) => Promise.resolve({ dstIp: "127.0.0.2", dstPort: upstream.port, srcPort: client.port }),
    tcp: () => Promise.resolve(undefined),
  },
  isLocal: (ip) => ip.startsWith("127."),
  upstreamPool: { sockets: option("--sockets", 4) },
});

try {
  const direct = { ip: "127.0.0.2", port: upstream.port };
  const viaProxy = { ip: "127.0.0.1", port: proxy.port };
  const sequential = (target: typeof direct) =>
    external ? pythonSequential(target, SECONDS) : load(target, 1, SECONDS);
  const concurrent = (target: typeof direct) =>
    external
      ? dnsperfRun(target, { seconds: SECONDS, outstanding: CONCURRENCY, clients: 4 })
      : load(target, CONCURRENCY, SECONDS);
  console.log(
    `DNS benchmark: ${SECONDS} s per run, ${CONCURRENCY} queries outstanding, loopback only, ` +
      (external
        ? "dnsmasq upstream, dnsperf load"
        : "in-process upstream and load (--js or no dnsperf/dnsmasq)"),
  );
  if (external) await dnsperfRun(viaProxy, { seconds: 0.5, outstanding: 8, clients: 1 }); // warm-up (JIT)
  else await load(viaProxy, 4, 0.3);
  const seqDirect = summary("sequential direct", await sequential(direct));
  const seqProxy = summary("sequential via proxy", await sequential(viaProxy));
  const conDirect = summary(`concurrent(${CONCURRENCY}) direct`, await concurrent(direct));
  const conProxy = summary(`concurrent(${CONCURRENCY}) via proxy`, await concurrent(viaProxy));
  console.log(
    `ratios proxy/direct: sequential q/s ${(seqProxy.qps / seqDirect.qps).toFixed(2)}, ` +
      `added p50 ${(seqProxy.p50 - seqDirect.p50).toFixed(3)} ms, added p99 ${
        (seqProxy.p99 - seqDirect.p99).toFixed(3)
      } ms; concurrent q/s ${(conProxy.qps / conDirect.qps).toFixed(2)}`,
  );
  console.log(
    `goals: added p50 ≤ 0.3 ms: ${seqProxy.p50 - seqDirect.p50 <= 0.3 ? "met" : "NOT met"}; ` +
      `≥ 20k q/s: ${conProxy.qps >= 20_000 ? "met" : "NOT met"}`,
  );
  console.log(
    `proxy stats: ${JSON.stringify(proxy.stats)}, upstream pool: ${JSON.stringify(proxy.upstreamStats)}, ` +
      `log lines ${logged} (${(loggedBytes / Math.max(1, logged)).toFixed(0)} B each)`,
  );
} finally {
  await proxy.close();
  await upstream.close();
  if (queryFile) Deno.removeSync(queryFile);
}
