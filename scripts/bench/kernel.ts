// Benchmark of the kernel layer (root only): attribution lookup latency, entries the BPF side
// writes per second under a connect storm, and the map miss rate at the end. Ratios are against a
// baseline measured in the same run: the same storm with no program attached.
// Everything runs in a netns and a cgroup this script creates and removes; traffic stays on the
// netns's loopback. Bounded: STORM connections or STORM_SECONDS, whichever comes first.
//   deno run -A scripts/bench/kernel.ts [connections=100000] [seconds=30]
import { EGRESS_CONN_ENTRIES, loadEgressBpf } from "../../src/kernel/bpf_loader.ts";
import { Attribution } from "../../src/kernel/attribution.ts";
import { createCgroup, removeCgroup } from "../../src/kernel/cgroup.ts";

const STORM = Number(Deno.args[0] ?? 100_000);
const STORM_SECONDS = Number(Deno.args[1] ?? 30);
const RUN = `egb${(Deno.pid % 46656).toString(36)}`;
const NETNS = `${RUN}-bench`;
const PORT = 18090;
const PYTHON = "/usr/bin/python3";

if (Deno.uid() !== 0) {
  console.error("bench kernel: needs root (netns, cgroup, BPF)");
  Deno.exit(1);
}

const SERVER = String.raw`
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(4096)
print("listening", flush=True)
while True:
    c, _ = s.accept()
    c.close()
`;

// Short connections closed with RST (SO_LINGER 0) so no TIME_WAIT exhausts the ports.
const STORM_CLIENT = String.raw`
import socket, struct, sys, time
count, seconds, port = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
linger = struct.pack("ii", 1, 0)
ports = []
start = time.monotonic()
deadline = start + seconds
for i in range(count):
    c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    # Eight destinations spread the keys so the map can overflow (ports alone repeat quickly).
    host = "127.0.0.%d" % (1 + (i & 7))
    c.connect((host, port))
    ports.append("%s %d" % (host, c.getsockname()[1]))
    c.close()
    if (i & 255) == 0 and time.monotonic() > deadline:
        break
elapsed = time.monotonic() - start
sys.stdout.write("%f\n" % elapsed)
sys.stdout.write("\n".join(ports) + "\n")
`;

const COOKIE = String.raw`
import socket
print(int.from_bytes(socket.socket().getsockopt(socket.SOL_SOCKET, 71, 8), "little"))
`;

async function sh(argv: string[]): Promise<string> {
  const out = await new Deno.Command(argv[0], { args: argv.slice(1), stdout: "piped", stderr: "piped" })
    .output();
  if (!out.success) throw new Error(`${argv.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  return new TextDecoder().decode(out.stdout);
}

interface Connection {
  dstIp: string;
  clientPort: number;
}

async function storm(cgroupFs: string): Promise<{ elapsed: number; ports: Connection[] }> {
  const script = 'echo $$ > "$1/cgroup.procs" && ns=$2 && shift 2 && exec nsenter --net="$ns" "$@"';
  const text = await sh([
    "sh",
    "-c",
    script,
    "sh",
    cgroupFs,
    `/run/netns/${NETNS}`,
    "setpriv",
    "--reuid",
    "65534",
    "--regid",
    "65534",
    "--clear-groups",
    PYTHON,
    "-c",
    STORM_CLIENT,
    String(STORM),
    String(STORM_SECONDS),
    String(PORT),
  ]);
  const [first, ...rest] = text.trim().split("\n");
  const ports = rest.map((line) => {
    const [dstIp, port] = line.split(" ");
    return { dstIp, clientPort: Number(port) };
  });
  return { elapsed: Number(first), ports };
}

await sh(["ip", "netns", "add", NETNS]);
const cgroup = createCgroup(`/${RUN}-bench`);
let server: Deno.ChildProcess | undefined;
try {
  await sh(["nsenter", `--net=/run/netns/${NETNS}`, "ip", "link", "set", "lo", "up"]);
  await sh([
    "nsenter",
    `--net=/run/netns/${NETNS}`,
    "sysctl",
    "-q",
    "-w",
    "net.ipv4.ip_local_port_range=1024 65535",
  ]);
  server = new Deno.Command("nsenter", {
    args: [`--net=/run/netns/${NETNS}`, PYTHON, "-c", SERVER, String(PORT)],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = server.stdout.getReader();
  await reader.read();
  reader.releaseLock();
  const netnsCookie = BigInt(
    (await sh(["nsenter", `--net=/run/netns/${NETNS}`, PYTHON, "-c", COOKIE])).trim(),
  );

  // Baseline: the same storm with nothing attached.
  const baseline = await storm(cgroup.fsPath);
  const baselineRate = baseline.ports.length / baseline.elapsed;

  const loadStart = performance.now();
  const bpf = loadEgressBpf({
    instance: `${RUN}-bench`,
    cgroup: cgroup.hierarchyPath,
    netnsCookie,
    pin: false,
  });
  const loadMs = performance.now() - loadStart;
  try {
    const attribution = new Attribution(bpf, { isLocal: () => true });
    const before = bpf.readStats();
    const measured = await storm(cgroup.fsPath);
    const after = bpf.readStats();
    const rate = measured.ports.length / measured.elapsed;
    const written = Number(after.tcpPublished - before.tcpPublished);

    const lookup = (connection: Connection) =>
      attribution.lookupPacket({
        protocol: "tcp",
        srcIp: "127.0.0.1",
        srcPort: connection.clientPort,
        dstIp: connection.dstIp,
        dstPort: PORT,
      });
    let missAll = 0;
    for (const port of measured.ports) if (!lookup(port)) missAll++;
    // Keys repeat over a long storm (the newest owner wins); the last window shows eviction at work.
    const lastWindow = measured.ports.slice(-Math.min(10_000, measured.ports.length));
    let missLast = 0;
    for (const port of lastWindow) if (!lookup(port)) missLast++;
    const distinct = new Set(measured.ports.map((c) => `${c.dstIp} ${c.clientPort}`)).size;

    // Lookup latency: a hit (full path: encode, map lookup, decode) and a miss.
    const hitPort = measured.ports.at(-1)!;
    const iterations = 200_000;
    let t = performance.now();
    for (let i = 0; i < iterations; i++) lookup(hitPort);
    const hitUs = (performance.now() - t) * 1000 / iterations;
    t = performance.now();
    for (let i = 0; i < iterations; i++) {
      attribution.lookupPacket({
        protocol: "udp",
        srcIp: "127.0.0.1",
        srcPort: 1,
        dstIp: "127.0.0.1",
        dstPort: 1,
      });
    }
    const missUs = (performance.now() - t) * 1000 / iterations;

    const f = (n: number, d = 1) => n.toFixed(d);
    console.log(`kernel bench (${measured.ports.length} connections, map ${EGRESS_CONN_ENTRIES} entries)`);
    console.log(`  load+attach                 ${f(loadMs)} ms`);
    console.log(`  storm baseline (no BPF)     ${f(baselineRate, 0)} connections/s`);
    console.log(
      `  storm with BPF              ${f(rate, 0)} connections/s  (ratio ${f(rate / baselineRate, 3)})`,
    );
    console.log(
      `  entries written by BPF      ${
        f(written / measured.elapsed, 0)
      } /s  (${written} for ${measured.ports.length} connects, stash misses ${
        after.stashMiss - before.stashMiss
      })`,
    );
    console.log(
      `  miss rate, all connections  ${
        f(100 * missAll / measured.ports.length, 2)
      } %  (${distinct} distinct keys)`,
    );
    console.log(`  miss rate, last ${lastWindow.length}       ${f(100 * missLast / lastWindow.length, 2)} %`);
    console.log(`  lookup hit                  ${f(hitUs, 2)} µs`);
    console.log(`  lookup miss                 ${f(missUs, 2)} µs  (ratio hit/miss ${f(hitUs / missUs, 2)})`);
  } finally {
    bpf.close();
  }
} finally {
  try {
    server?.kill("SIGKILL");
    await server?.status;
  } catch {
    // Gone.
  }
  await sh(["ip", "netns", "del", NETNS]).catch(() => {});
  await removeCgroup(cgroup);
}
