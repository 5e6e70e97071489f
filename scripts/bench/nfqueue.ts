// Benchmark of the NFQUEUE consumer (root only), three phases with the same send loop:
//   baseline   no rules at all;
//   queued     every packet through the queue and an accept-all consumer (queued packets/s);
//   fast path  egress's real steering rules (src/netfilter/rules.ts) and the real UDP handler with a
//              `udp` rule allowing the flow: the first packet is judged, the connmark then lets the
//              rest of the flow bypass the queue (goal ≥ 0.9× baseline).
// Each phase runs in a network namespace this script creates and removes; traffic stays on the
// namespace's loopback. Bounded: each phase sends for SECONDS, every child is killed after a timeout.
//   deno run -A scripts/bench/nfqueue.ts [seconds=3] [payloadBytes=64]
import { ACCEPT, NfqueueConsumer, readNfqueueStats } from "../../src/udp/nfqueue.ts";
import { createUdpPacketHandler } from "../../src/udp/udp_policy.ts";
import { FlowLogLimiter } from "../../src/udp/flow_table.ts";
import { Rendezvous } from "../../src/dns/rendezvous.ts";
import { DEFAULT_MARKS, steeringRestoreText } from "../../src/netfilter/rules.ts";
import { parsePolicy } from "../../src/policy/policy.ts";
import { Enforcer } from "../../src/policy/enforcer.ts";
import { createCgroup } from "../../src/kernel/cgroup.ts";

const PORT = 9999;
const PYTHON = "/usr/bin/python3";

// Same loop in both phases: sendto() as fast as the kernel lets us for `seconds`.
const SENDER = String.raw`
import socket, sys, time, json
seconds, size, port = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
payload = b"A" * size
sent = 0
start = time.monotonic()
deadline = start + seconds
while True:
    for _ in range(256):
        s.sendto(payload, ("127.0.0.1", port))
    sent += 256
    if time.monotonic() > deadline:
        break
print(json.dumps({"sent": sent, "seconds": time.monotonic() - start}), flush=True)
`;

// Counts arrivals; stops 0.5 s after the last one (or at the deadline).
const RECEIVER = String.raw`
import socket, sys, time, json
deadline, port = time.monotonic() + float(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind(("127.0.0.1", port))
s.settimeout(0.5)
print(json.dumps({"ready": True}), flush=True)
count, first, last = 0, None, None
while time.monotonic() < deadline:
    try:
        s.recv(65536)
    except socket.timeout:
        if count:
            break
        continue
    last = time.monotonic()
    if first is None:
        first = last
    count += 1
print(json.dumps({"received": count, "seconds": (last - first) if count > 1 else 0}), flush=True)
`;

type Json = Record<string, number | boolean | null>;

/** CPU seconds (user + system) this process used so far, from /proc/self/stat (100 Hz ticks). */
function cpuSeconds(): number {
  const stat = Deno.readTextFileSync("/proc/self/stat");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** The daemon's UDP handler with a policy that allows the benchmark flow. */
function fastPathHandler() {
  const policy = parsePolicy(`127.0.0.1:${PORT}/udp`);
  const enforcer = new Enforcer(policy, { corroborate: true });
  return createUdpPacketHandler({
    getEnforcer: () => enforcer,
    getPolicy: () => policy,
    rendezvous: new Rendezvous(),
    log: { write: () => {} },
    marks: DEFAULT_MARKS,
    flowLimiter: new FlowLogLimiter(),
    isLocal: (ip) => ip.startsWith("127."),
  });
}

async function consumerAgent(queueNum: number, mode: string): Promise<void> {
  let first = 0;
  let last = 0;
  const judge = mode === "fastpath" ? fastPathHandler() : () => ACCEPT;
  const consumer = NfqueueConsumer.open({
    queueNum,
    // The real handler checks the IP total length against the bytes it got: it needs all of them.
    copyRange: mode === "fastpath" ? 65535 : 128,
    onPacket(packet) {
      last = performance.now();
      if (first === 0) first = last;
      return judge(packet);
    },
  });
  const cpuAtStart = cpuSeconds();
  console.log(JSON.stringify({ ready: true }));
  for await (const _ of Deno.stdin.readable) break; // any input (or EOF) stops it
  const cpu = cpuSeconds() - cpuAtStart;
  const kernel = readNfqueueStats(queueNum);
  await consumer.close();
  const { received, enobufs } = consumer.counters;
  console.log(JSON.stringify({
    verdicts: received,
    enobufs,
    seconds: (last - first) / 1000,
    cpuSeconds: cpu,
    queueDropped: kernel?.queueDropped ?? null,
    userDropped: kernel?.userDropped ?? null,
  }));
}

class Child {
  readonly #child: Deno.ChildProcess;
  readonly #lines: AsyncIterator<string>;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #killTimer: ReturnType<typeof setTimeout>;

  constructor(netns: string, command: string, args: string[], timeoutMs: number) {
    this.#child = new Deno.Command("nsenter", {
      args: [`--net=/run/netns/${netns}`, command, ...args],
      env: { DENO_NO_UPDATE_CHECK: "1" },
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    this.#lines = this.#child.stdout.pipeThrough(new TextDecoderStream()).pipeThrough(
      new TransformStream<string, string>({
        start() {},
        transform(chunk, controller) {
          for (const line of chunk.split("\n")) {
            if (line.trim().startsWith("{")) controller.enqueue(line.trim());
          }
        },
      }),
    ).values();
    this.#killTimer = setTimeout(() => {
      try {
        this.#child.kill("SIGKILL");
      } catch {
        // already gone
      }
    }, timeoutMs);
  }

  async next(): Promise<Json> {
    const result = await this.#lines.next();
    if (result.done) throw new Error("Cannot read the benchmark child's report: it exited");
    return JSON.parse(result.value);
  }

  async stop(): Promise<void> {
    await this.#writer.write(new TextEncoder().encode("stop\n")).catch(() => {});
    await this.#writer.close().catch(() => {});
  }

  async done(): Promise<void> {
    await this.#child.status;
    clearTimeout(this.#killTimer);
  }
}

async function run(command: string, ...args: string[]): Promise<void> {
  const output = await new Deno.Command(command, { args, stdout: "null", stderr: "piped" }).output();
  if (!output.success) {
    throw new Error(
      `Cannot run ${command} ${args.join(" ")}: ${new TextDecoder().decode(output.stderr).trim()}`,
    );
  }
}

type Phase = {
  sentPerSecond: number;
  deliveredPerSecond: number;
  received: number;
  sent: number;
  consumer?: Json;
};

type Mode = "baseline" | "queued" | "fastpath";

async function phase(netns: string, seconds: number, size: number, mode: Mode, queueNum: number) {
  const timeoutMs = (seconds + 20) * 1000;
  let consumer: Child | undefined;
  if (mode !== "baseline") {
    consumer = new Child(netns, Deno.execPath(), [
      "run",
      "-A",
      import.meta.filename!,
      "agent",
      String(queueNum),
      mode,
    ], timeoutMs);
    await consumer.next();
  }
  const receiver = new Child(netns, PYTHON, ["-c", RECEIVER, String(seconds + 10), String(PORT)], timeoutMs);
  await receiver.next();
  const sender = new Child(
    netns,
    PYTHON,
    ["-c", SENDER, String(seconds), String(size), String(PORT)],
    timeoutMs,
  );
  const sent = await sender.next();
  const received = await receiver.next();
  await Promise.all([sender.done(), receiver.done()]);
  let consumerReport: Json | undefined;
  if (consumer) {
    await consumer.stop();
    consumerReport = await consumer.next();
    await consumer.done();
  }
  const result: Phase = {
    sent: Number(sent.sent),
    sentPerSecond: Number(sent.sent) / Number(sent.seconds),
    received: Number(received.received),
    deliveredPerSecond: Number(received.seconds) > 0
      ? Number(received.received) / Number(received.seconds)
      : 0,
    consumer: consumerReport,
  };
  return result;
}

async function main(): Promise<void> {
  const seconds = Number(Deno.args[0] ?? 3);
  const size = Number(Deno.args[1] ?? 64);
  if (!(seconds > 0 && seconds <= 60) || !(Number.isInteger(size) && size >= 0 && size <= 1400)) {
    console.error(
      "Cannot run the nfqueue benchmark: usage: nfqueue.ts [seconds 1..60] [payloadBytes 0..1400]",
    );
    Deno.exit(2);
  }
  if (Deno.uid() !== 0) {
    console.error("Cannot run the nfqueue benchmark: needs root (network namespace, iptables, nfqueue)");
    Deno.exit(1);
  }
  const runId = `${(Deno.pid % 46656).toString(36)}${Math.floor(Math.random() * 1296).toString(36)}`;
  const queueNum = 1000 + Math.floor(Math.random() * 50_000);
  const k = (value: number) => `${(value / 1000).toFixed(1)}k/s`;
  console.log(
    `nfqueue benchmark: ${seconds} s per phase, ${size}-byte UDP payloads, loopback in netns egnfqb-${runId}-*`,
  );

  const baseline = await inNetns(
    `egnfqb-${runId}-b`,
    (netns) => phase(netns, seconds, size, "baseline", queueNum),
  );
  console.log(
    `  baseline (no rules): sent ${k(baseline.sentPerSecond)}, delivered ${k(baseline.deliveredPerSecond)} ` +
      `(${baseline.received}/${baseline.sent})`,
  );

  const queued = await inNetns(`egnfqb-${runId}-q`, async (netns) => {
    await run(
      "ip",
      "netns",
      "exec",
      netns,
      "iptables",
      "-w",
      "-t",
      "mangle",
      "-A",
      "OUTPUT",
      "-p",
      "udp",
      "--dport",
      String(PORT),
      "-j",
      "NFQUEUE",
      "--queue-num",
      String(queueNum),
    );
    return await phase(netns, seconds, size, "queued", queueNum);
  });
  const verdicts = Number(queued.consumer?.verdicts ?? 0);
  const verdictSeconds = Number(queued.consumer?.seconds ?? 0);
  const verdictsPerSecond = verdictSeconds > 0 ? verdicts / verdictSeconds : 0;
  console.log(
    `  through the queue:   sent ${k(queued.sentPerSecond)}, delivered ${k(queued.deliveredPerSecond)} ` +
      `(${queued.received}/${queued.sent}), verdicts ${k(verdictsPerSecond)} (${verdicts}), ` +
      `enobufs ${queued.consumer?.enobufs}, queue dropped ${queued.consumer?.queueDropped}, ` +
      `user dropped ${queued.consumer?.userDropped}`,
  );
  const cpu = Number(queued.consumer?.cpuSeconds ?? 0);
  if (verdicts > 0 && cpu > 0) {
    const perPacket = (cpu / verdicts) * 1e6;
    console.log(
      `  consumer CPU: ${cpu.toFixed(2)} s for ${verdicts} packets = ${perPacket.toFixed(2)} µs/packet ` +
        `(≈ ${k(1e6 / perPacket)} on one free core)`,
    );
  }

  // Conntrack alone (one rule that makes the namespace track connections): the floor under any
  // connmark fast path, to tell the cost of tracking from the cost of egress's rules.
  const tracked = await inNetns(`egnfqb-${runId}-c`, async (netns) => {
    await run(
      "ip",
      "netns",
      "exec",
      netns,
      "iptables",
      "-w",
      "-t",
      "mangle",
      "-A",
      "OUTPUT",
      "-p",
      "udp",
      "-m",
      "conntrack",
      "--ctstate",
      "INVALID",
      "-j",
      "DROP",
    );
    return await phase(netns, seconds, size, "baseline", queueNum);
  });
  console.log(
    `  conntrack only:      sent ${k(tracked.sentPerSecond)}, delivered ${k(tracked.deliveredPerSecond)} ` +
      `(${tracked.received}/${tracked.sent})`,
  );

  // The real steering rules exempt egress's own cgroup; the benchmark needs one to exist.
  const cgroup = createCgroup(`/egnfqb-${runId}`);
  let fast: Phase;
  try {
    fast = await inNetns(`egnfqb-${runId}-f`, async (netns) => {
      const rules = steeringRestoreText({
        proxyPort: 15080,
        dnsPort: 15053,
        queueNum,
        exemptCgroupPath: cgroup.hierarchyPath,
      });
      const restore = new Deno.Command("ip", {
        args: ["netns", "exec", netns, "iptables-restore", "-w", "--noflush"],
        stdin: "piped",
        stderr: "piped",
      }).spawn();
      const writer = restore.stdin.getWriter();
      await writer.write(new TextEncoder().encode(rules));
      await writer.close();
      const restored = await restore.output();
      if (!restored.success) {
        throw new Error(`Cannot install the steering rules: ${new TextDecoder().decode(restored.stderr)}`);
      }
      return await phase(netns, seconds, size, "fastpath", queueNum);
    });
  } finally {
    await Deno.remove(cgroup.fsPath).catch(() => {});
  }
  console.log(
    `  fast path (connmark): sent ${k(fast.sentPerSecond)}, delivered ${k(fast.deliveredPerSecond)} ` +
      `(${fast.received}/${fast.sent}), packets judged ${fast.consumer?.verdicts}`,
  );

  const ratio = (a: number, b: number) => (b > 0 ? a / b : 0).toFixed(2);
  console.log(
    `  ratio queued/baseline: send loop ${ratio(queued.sentPerSecond, baseline.sentPerSecond)}, ` +
      `delivered ${ratio(queued.deliveredPerSecond, baseline.deliveredPerSecond)}`,
  );
  const fastRatio = baseline.deliveredPerSecond > 0
    ? fast.deliveredPerSecond / baseline.deliveredPerSecond
    : 0;
  console.log(
    `  ratio fast path/baseline: send loop ${ratio(fast.sentPerSecond, baseline.sentPerSecond)}, ` +
      `delivered ${fastRatio.toFixed(2)} (goal ≥ 0.9: ${fastRatio >= 0.9 ? "met" : "NOT met"}), ` +
      `vs conntrack only ${ratio(fast.deliveredPerSecond, tracked.deliveredPerSecond)}; ` +
      `queued verdicts ≥ 50k/s: ${verdictsPerSecond >= 50_000 ? "met" : "NOT met"}`,
  );
}

/** Runs fn in a fresh network namespace with lo up; always removes it. */
async function inNetns<T>(netns: string, fn: (netns: string) => Promise<T>): Promise<T> {
  await run("ip", "netns", "add", netns);
  try {
    await run("ip", "-n", netns, "link", "set", "lo", "up");
    return await fn(netns);
  } finally {
    await run("ip", "netns", "del", netns).catch(() => {});
  }
}

if (Deno.args[0] === "agent") await consumerAgent(Number(Deno.args[1]), Deno.args[2]);
else await main();
