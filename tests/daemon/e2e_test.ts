// End to end: `egress start` in a runner namespace over unprivileged clients in a test cgroup,
// real servers in an internet namespace (tests/helpers/netns.ts). Root only.
import assert from "node:assert/strict";
import { testWhen } from "../helpers/requirements.ts";
import { validate } from "../helpers/json_schema.ts";
import {
  bpfProgramIds,
  cgroupProgramCount,
  cgroupProgramIds,
  client,
  fileExists,
  iptablesState,
  netnsTestsUnmet,
  type Topology,
  withTopology,
} from "../helpers/netns.ts";
import { daemonPaths, DaemonRun, egressCommand, removeDaemonLeftovers, startInternet } from "./daemon_rig.ts";
import { loadRealParts } from "../../src/daemon/parts.ts";

const schema = JSON.parse(await Deno.readTextFile(new URL("../../src/log/schema.json", import.meta.url)));

async function partsUnmet(): Promise<string | undefined> {
  try {
    await loadRealParts();
    return undefined;
  } catch (error) {
    return (error as Error).message;
  }
}

const reason = netnsTestsUnmet(["/usr/bin/node"]) ?? await partsUnmet();

function policyFor(ip: string, extraIp: string): string {
  return `# e2e policy
allowed.egress.test
*.wild.egress.test
GET https://api.egress.test/v1/*
pass.egress.test passthrough
insecure.egress.test:8443 insecure
strict.egress.test:8443
spoof.egress.test:80
GET http://${ip}/plain
${extraIp}
${ip}:7000
banner.egress.test:7001
# the resolver, and one UDP service
${ip}:53|9000/udp
`;
}

type Rig = { topology: Topology; run: DaemonRun; caPath: string; ip: string };

function curl(rig: Rig, args: string[], env?: Record<string, string>) {
  const resolves = [
    "allowed.egress.test:443",
    "denied.egress.test:443",
    "api.egress.test:443",
    "pass.egress.test:443",
    "insecure.egress.test:8443",
    "strict.egress.test:8443",
    "a.wild.egress.test:443",
    "wild.egress.test:443",
  ].flatMap((hostPort) => ["--resolve", `${hostPort}:${rig.ip}`]);
  return client(
    { netns: rig.topology.runner, cgroup: rig.topology.cgroup, env },
    ["/usr/bin/curl", "-sS", "--max-time", "8", "--cacert", rig.run.paths.egressCa, ...resolves, ...args],
  );
}

/** Resolves a name through egress (fills its DNS cache); returns dig's +short answer or status. */
async function dig(rig: Rig, name: string, extra: string[] = []): Promise<string> {
  const out = await client(
    { netns: rig.topology.runner, cgroup: rig.topology.cgroup },
    ["/usr/bin/dig", "+time=2", "+tries=1", `@${rig.ip}`, name, ...extra],
  );
  const status = /status: (\w+)/.exec(out.stdout)?.[1] ??
    `no answer (${out.stdout.trim().split("\n").at(-1)})`;
  const answer = out.stdout.split("\n").find((line) => line.startsWith(name + "."))?.split(/\s+/).at(-1);
  return status === "NOERROR" ? answer ?? "NOERROR without answer" : status;
}

function python(rig: Rig, code: string, args: string[] = [], env?: Record<string, string>) {
  return client(
    { netns: rig.topology.runner, cgroup: rig.topology.cgroup, env },
    ["/usr/bin/python3", "-c", code, ...args],
  );
}

const PY_TCP = String.raw`
import json, os, socket, sys
ip, port, send = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(); s.settimeout(4)
try:
    s.connect((ip, port))
    if send: s.sendall(send.encode())
    data = s.recv(200)
    print(json.dumps({"ok": True, "data": data.decode(), "port": s.getsockname()[1], "pid": os.getpid()}))
except OSError as e:
    print(json.dumps({"ok": False, "error": str(e), "pid": os.getpid()}))
`;

const PY_DIRECT = String.raw`
import json, socket, sys, threading
results = {}
def probe(ip, port):
    s = socket.socket(); s.settimeout(1.5)
    try:
        s.connect((ip, port)); results[f"{ip}:{port}"] = "connected"
    except socket.timeout:
        results[f"{ip}:{port}"] = "timeout"
    except OSError as e:
        results[f"{ip}:{port}"] = f"error {e.errno}"
threads = [threading.Thread(target=probe, args=(ip, int(port))) for ip in sys.argv[1].split(",") for port in sys.argv[2].split(",")]
[t.start() for t in threads]; [t.join() for t in threads]
print(json.dumps(results))
`;

const PY_UDP = String.raw`
import json, socket, sys
result = {}
for port in sys.argv[2].split(","):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1.5)
    s.sendto(b"egress-udp", (sys.argv[1], int(port)))
    try:
        result[port] = s.recvfrom(100)[0].decode()
    except socket.timeout:
        result[port] = "timeout"
print(json.dumps(result))
`;

function lastJson(output: { stdout: string; stderr: string; code: number }) {
  const line = output.stdout.trim().split("\n").at(-1) ?? "";
  try {
    return JSON.parse(line);
  } catch {
    throw new Error(`no JSON from the client (exit ${output.code}): ${output.stdout} ${output.stderr}`);
  }
}

testWhen(reason, "e2e: enforce mode over real clients, servers and kernel; clean removal", async (t) => {
  await withTopology("e", async (topology) => {
    const paths = await daemonPaths("enforce");
    const internet = await startInternet(topology, paths.dir);
    const pki = internet.pki;
    const before = await iptablesState(topology.runner);
    const ip = topology.internetIp;
    let run: DaemonRun | undefined;
    try {
      run = await DaemonRun.start(topology, paths, {
        policy: policyFor(ip, topology.extraIp),
        upstreamCa: pki.caPath,
      });
      const rig: Rig = { topology, run, caPath: pki.caPath, ip };
      const ourPrograms = await cgroupProgramCount(topology.cgroup);
      assert.ok(ourPrograms > 0, "BPF programs attached to the test cgroup");

      await t.step("allowed host over HTTPS (curl), with process fields", async () => {
        const out = await curl(rig, ["https://allowed.egress.test/hello"]);
        assert.equal(out.stdout, "GET /hello allowed.egress.test\n", out.stderr);
        const line = await run!.waitForLine(
          "allowed https",
          (l) => l.url === "https://allowed.egress.test/hello",
        );
        assert.equal(line.type, "https");
        assert.equal(line.policy, "allow");
        assert.equal(line.rule, "allowed.egress.test");
        assert.equal(line.line, 2);
        assert.equal(line.dst_ip, ip);
        assert.equal(line.dst_port, 443);
        assert.equal(line.exe, "/usr/bin/curl");
        assert.equal(typeof line.pid, "number");
        assert.equal(line.cgroup, topology.cgroup.hierarchyPath);
        assert.ok((line.cmdline as string[]).includes("https://allowed.egress.test/hello"));
      });

      await t.step("denied host: the handshake is aborted and logged", async () => {
        const out = await curl(rig, ["https://denied.egress.test/"]);
        assert.notEqual(out.code, 0);
        assert.equal(out.stdout, "");
        const line = await run!.waitForLine("denied https", (l) => l.host === "denied.egress.test");
        assert.equal(line.policy, "deny");
        assert.equal(line.reason, "no matching rule");
      });

      await t.step("wildcard host matches one label, not the apex", async () => {
        const yes = await curl(rig, ["https://a.wild.egress.test/"]);
        assert.equal(yes.stdout, "GET / a.wild.egress.test\n", yes.stderr);
        const no = await curl(rig, ["https://wild.egress.test/"]);
        assert.notEqual(no.code, 0);
      });

      await t.step("URL rule: GET allowed, POST denied on the same keep-alive connection", async () => {
        const out = await curl(rig, [
          "-w",
          "|%{http_code}|%{num_connects}\n",
          "https://api.egress.test/v1/items",
          "--next",
          "--cacert",
          run!.paths.egressCa,
          "--resolve",
          `api.egress.test:443:${ip}`,
          "-w",
          "|%{http_code}|%{num_connects}\n",
          "-X",
          "POST",
          "-d",
          "x=1",
          "https://api.egress.test/v1/items",
        ]);
        // num_connects 0 on the second transfer: it reused the first one's connection.
        assert.equal(
          out.stdout,
          "GET /v1/items api.egress.test\n|200|1\nBlocked by egress policy|403|0\n",
          out.stderr,
        );
        const post = await run!.waitForLine("POST", (l) => l.method === "POST");
        const get = await run!.waitForLine(
          "GET",
          (l) => l.method === "GET" && l.url === "https://api.egress.test/v1/items",
        );
        assert.equal(post.policy, "deny");
        assert.equal(get.policy, "allow");
        assert.equal(post.src_port, get.src_port, "same client connection");
      });

      await t.step(
        "DNS: allowed name answered (fills the cache), denied name REFUSED, both logged",
        async () => {
          assert.equal(await dig(rig, "allowed.egress.test"), ip);
          assert.equal(await dig(rig, "denied.egress.test"), "REFUSED");
          assert.equal(await dig(rig, "allowed.egress.test", ["+tcp"]), ip);
          const answer = await run!.waitForLine(
            "dns_response",
            (l) => l.type === "dns_response" && l.name === "allowed.egress.test",
          );
          assert.deepEqual(answer.answers, [ip]);
          const refused = await run!.waitForLine(
            "dns deny",
            (l) => l.type === "dns" && l.name === "denied.egress.test",
          );
          assert.equal(refused.policy, "deny");
          assert.equal(refused.dst_ip, ip);
          assert.equal(refused.dst_port, 53);
          assert.equal(refused.exe, "/usr/bin/dig");
        },
      );

      await t.step("passthrough: the client sees the upstream certificate", async () => {
        assert.equal(await dig(rig, "pass.egress.test"), ip, "corroborates the name for the flag");
        const out = await client(
          { netns: topology.runner, cgroup: topology.cgroup },
          [
            "/usr/bin/curl",
            "-sS",
            "--max-time",
            "8",
            "--cacert",
            pki.caPath,
            "--resolve",
            `pass.egress.test:443:${ip}`,
            "https://pass.egress.test/p",
          ],
        );
        assert.equal(
          out.stdout,
          "GET /p pass.egress.test\n",
          out.stderr + JSON.stringify(await run!.logLines()),
        );
        const line = await run!.waitForLine("passthrough", (l) => l.host === "pass.egress.test");
        assert.equal(line.passthrough, true);
      });

      await t.step("insecure: self-signed upstream accepted only with the flag", async () => {
        assert.equal(await dig(rig, "insecure.egress.test"), ip);
        const ok = await curl(rig, ["https://insecure.egress.test:8443/i"]);
        assert.equal(
          ok.stdout,
          "GET /i insecure.egress.test\n",
          ok.stderr + JSON.stringify(await run!.logLines()),
        );
        const strict = await curl(rig, ["-w", "|%{http_code}", "https://strict.egress.test:8443/s"]);
        assert.match(strict.stdout, /\|502$/);
        const line = await run!.waitForLine("upstream_tls_failed", (l) => l.error === "upstream_tls_failed");
        assert.equal(line.url, "https://strict.egress.test:8443/s");
        const insecure = await run!.waitForLine(
          "insecure",
          (l) => l.url === "https://insecure.egress.test:8443/i",
        );
        assert.equal(insecure.insecure, true);
      });

      await t.step("HTTPS to a bare IP (no SNI) gets an IP certificate", async () => {
        const extra = topology.extraIp;
        const out = await curl(rig, [`https://${extra}/bare`]);
        assert.equal(out.stdout, `GET /bare ${extra}\n`, out.stderr);
      });

      await t.step("node and python trust the egress CA through the environment", async () => {
        const node = await client(
          {
            netns: topology.runner,
            cgroup: topology.cgroup,
            env: { NODE_EXTRA_CA_CERTS: run!.paths.egressCa },
          },
          [
            "/usr/bin/node",
            "-e",
            `require("https").get({host: "${ip}", servername: "allowed.egress.test", headers: {host: "allowed.egress.test"}, path: "/node"}, (r) => { let b = ""; r.on("data", (c) => b += c); r.on("end", () => console.log(b.trim())); }).on("error", (e) => { console.log("ERR " + e.message); });`,
          ],
        );
        assert.equal(node.stdout.trim(), "GET /node allowed.egress.test", node.stderr);
        const py = await python(
          rig,
          String.raw`
import http.client, ssl, sys
ctx = ssl.create_default_context()
c = http.client.HTTPSConnection(sys.argv[1], 443, context=ctx, timeout=8)
c.sock = ctx.wrap_socket(__import__("socket").create_connection((sys.argv[1], 443), 8), server_hostname="allowed.egress.test")
c.request("GET", "/py", headers={"Host": "allowed.egress.test"})
print(c.getresponse().read().decode().strip())
`,
          [ip],
          { SSL_CERT_FILE: run!.paths.egressCa },
        );
        assert.equal(py.stdout.trim(), "GET /py allowed.egress.test", py.stderr);
        const line = await run!.waitForLine("node", (l) => l.url === "https://allowed.egress.test/node");
        assert.equal(line.exe, "/usr/bin/node");
      });

      await t.step(
        "raw TCP allowed by IP and by DNS cache name (server speaks first), denied elsewhere",
        async () => {
          const echo = lastJson(await python(rig, PY_TCP, [ip, "7000", "ping"]));
          assert.deepEqual([echo.ok, echo.data], [true, "ping"]);
          const before = lastJson(await python(rig, PY_TCP, [ip, "7001", ""]));
          assert.ok(
            !before.ok || before.data === "",
            `denied before the name was resolved: ${JSON.stringify(before)}`,
          );
          assert.equal(await dig(rig, "banner.egress.test"), ip);
          const banner = lastJson(await python(rig, PY_TCP, [ip, "7001", ""]));
          assert.equal(banner.data, "HELLO from the banner server\n");
          const named = await run!.waitForLine(
            "tcp 7001 by name",
            (l) => l.type === "tcp" && l.dst_port === 7001 && l.policy === "allow",
          );
          assert.equal(named.host, "banner.egress.test");
          const denied = lastJson(await python(rig, PY_TCP, [ip, "7002", "ping"]));
          assert.ok(!denied.ok || denied.data === "", JSON.stringify(denied));
          const line = await run!.waitForLine("tcp 7000", (l) => l.type === "tcp" && l.dst_port === 7000);
          assert.equal(line.policy, "allow");
          assert.equal(line.pid, echo.pid);
          assert.equal(line.src_port, echo.port);
          const deniedLine = await run!.waitForLine(
            "tcp 7002",
            (l) => l.type === "tcp" && l.dst_port === 7002,
          );
          assert.equal(deniedLine.policy, "deny");
        },
      );

      await t.step("plain HTTP: URL rule by IP allowed, spoofed Host header denied", async () => {
        const ok = await curl(rig, [`http://${ip}/plain`]);
        assert.equal(ok.stdout, `GET /plain ${ip}\n`, ok.stderr);
        const spoof = await curl(rig, [
          "-w",
          "|%{http_code}",
          "-H",
          "Host: spoof.egress.test",
          `http://${ip}/x`,
        ]);
        assert.equal(spoof.stdout, "Blocked by egress policy|403");
        const line = await run!.waitForLine("spoof", (l) => l.url === "http://spoof.egress.test/x");
        assert.equal(line.reason, "host not corroborated");
      });

      await t.step(
        "UDP: allowed flow gets the fast-path connmark, denied datagrams are dropped",
        async () => {
          const out = lastJson(await python(rig, PY_UDP, [ip, "9000,9001"]));
          assert.equal(out["9000"], "egress-udp");
          assert.equal(out["9001"], "timeout");
          const entries = await topology.runner.exec(["conntrack", "-L", "-p", "udp", "--dport", "9000"]);
          const mark = Number(/mark=(\d+)/.exec(entries)?.[1] ?? "0");
          assert.ok((mark & 0x2000000) !== 0, entries);
          const allowed = await run!.waitForLine("udp allow", (l) => l.type === "udp" && l.dst_port === 9000);
          assert.equal(allowed.policy, "allow");
          assert.match(String(allowed.exe), /^\/usr\/bin\/python3/);
          const denied = await run!.waitForLine("udp deny", (l) => l.type === "udp" && l.dst_port === 9001);
          assert.equal(denied.policy, "deny");
        },
      );

      await t.step("direct connections to the proxy ports on local addresses are dropped", async () => {
        const result = lastJson(
          await python(rig, PY_DIRECT, [`127.0.0.1,127.0.0.2,${topology.runnerIp}`, "15080,15053"]),
        );
        for (const [target, outcome] of Object.entries(result)) assert.equal(outcome, "timeout", target);
      });

      await t.step("status reports enforce mode and the counters", async () => {
        const status = await egressCommand(topology, "status", ["--control-socket", paths.socket]);
        assert.equal(status.code, 0, status.stderr);
        assert.match(status.stdout, /^mode: enforce$/m);
        assert.match(status.stdout, /^state: running$/m);
        const json = await egressCommand(topology, "status", ["--control-socket", paths.socket, "--json"]);
        const body = JSON.parse(json.stdout);
        assert.ok(body.counters.allowed > 0 && body.counters.denied > 0, json.stdout);
      });

      await t.step("every log line matches the schema", async () => {
        const lines = await run!.logLines();
        assert.ok(lines.length >= 10);
        for (const line of lines) assert.deepEqual(validate(schema, line), [], JSON.stringify(line));
      });

      const attached = await cgroupProgramIds(topology.cgroup);
      await t.step("egress stop removes everything it added", async () => {
        const stop = await egressCommand(topology, "stop", ["--control-socket", paths.socket]);
        assert.equal(stop.code, 0, stop.stderr);
        const status = await run!.process.wait();
        assert.equal(status.code, 0, run!.process.stderr.slice(-3000));
        assert.equal(await iptablesState(topology.runner), before);
        assert.equal(await cgroupProgramCount(topology.cgroup), 0);
        assert.ok(!fileExists(paths.socket) && !fileExists(paths.ready));
        // bpftool shows none of the programs this daemon had attached (other egress instances of
        // parallel runs may have programs of the same names loaded).
        const loaded = await bpfProgramIds();
        assert.deepEqual(attached.filter((id) => loaded.has(id)), []);
        const oplog = await Deno.readTextFile(paths.oplog);
        assert.match(oplog, /shutdown: remove packet steering: done/);
      });
    } finally {
      if (run && !run.process.exited) await run.kill();
      await internet.stop();
      removeDaemonLeftovers(paths);
      await Deno.remove(paths.dir, { recursive: true }).catch(() => {});
    }
  });
});
