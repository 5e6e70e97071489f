// End to end: what a killed daemon leaves (traffic denied, not open), the restart that cleans it,
// audit mode, a refused policy, and streaming through the proxy. Root only.
import assert from "node:assert/strict";
import { testWhen } from "../helpers/requirements.ts";
import {
  cgroupProgramCount,
  client,
  fileExists,
  iptablesState,
  netnsTestsUnmet,
  type Topology,
  withTopology,
} from "../helpers/netns.ts";
import { daemonPaths, DaemonRun, egressCommand, removeDaemonLeftovers, startInternet } from "./daemon_rig.ts";
import { loadRealParts } from "../../src/daemon/parts.ts";
import { instanceName } from "../../src/daemon/config.ts";

const reason = netnsTestsUnmet() ??
  await loadRealParts().then(() => undefined, (error: Error) => error.message);

function curl(topology: Topology, ca: string, args: string[]) {
  return client(
    { netns: topology.runner, cgroup: topology.cgroup },
    [
      "/usr/bin/curl",
      "-sS",
      "--max-time",
      "5",
      "--cacert",
      ca,
      "--resolve",
      `allowed.egress.test:443:${topology.internetIp}`,
      "--resolve",
      `denied.egress.test:443:${topology.internetIp}`,
      ...args,
    ],
  );
}

const PY_UDP = String.raw`
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1.5)
s.sendto(b"egress-udp", (sys.argv[1], 9000))
try:
    print(s.recvfrom(100)[0].decode(), s.getsockname()[1])
except socket.timeout:
    print("timeout")
`;

const PY_CONNECT6 = String.raw`
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM); s.settimeout(1)
try:
    s.connect(("fd00:e9::99", 80)); print("connected")
except OSError as e:
    print(e.errno)
`;

testWhen(reason, "e2e: kill -9 leaves traffic denied; the next start cleans up and works", async () => {
  await withTopology("k", async (topology) => {
    const paths = await daemonPaths("crash");
    const internet = await startInternet(topology, paths.dir);
    const before = await iptablesState(topology.runner);
    const policy = `allowed.egress.test\n${topology.internetIp}:9000/udp\n`;
    let first: DaemonRun | undefined;
    let second: DaemonRun | undefined;
    try {
      first = await DaemonRun.start(topology, paths, { policy, upstreamCa: internet.pki.caPath });
      const ok = await curl(topology, paths.egressCa, ["https://allowed.egress.test/one"]);
      assert.equal(ok.stdout, "GET /one allowed.egress.test\n", ok.stderr);
      const udp = await client({ netns: topology.runner, cgroup: topology.cgroup }, [
        "/usr/bin/python3",
        "-c",
        PY_UDP,
        topology.internetIp,
      ]);
      assert.match(udp.stdout.trim(), /^egress-udp \d+$/);

      await first.kill();
      // Dead daemon: TCP is redirected to a closed port (refused), UDP is queued with no consumer
      // (dropped), the pinned deny hooks still refuse IPv6.
      const started = performance.now();
      const tcp = await curl(topology, paths.egressCa, ["https://allowed.egress.test/two"]);
      assert.notEqual(tcp.code, 0);
      assert.match(tcp.stderr, /Connection refused|Failed to connect/);
      assert.ok(performance.now() - started < 4000, "refused at once, not timed out");
      const udpDead = await client({ netns: topology.runner, cgroup: topology.cgroup }, [
        "/usr/bin/python3",
        "-c",
        PY_UDP,
        topology.internetIp,
      ]);
      if (udpDead.stdout.trim() !== "timeout") {
        const queues = await topology.runner.tryExec(["cat", "/proc/net/netfilter/nfnetlink_queue"]);
        const flows = await topology.runner.tryExec(["conntrack", "-L", "-p", "udp"]);
        assert.fail(
          `UDP answered while the daemon is dead: ${udpDead.stdout}\nqueues: ${queues.stdout}\nflows: ${flows.stdout}`,
        );
      }
      const v6 = await client({ netns: topology.runner, cgroup: topology.cgroup }, [
        "/usr/bin/python3",
        "-c",
        PY_CONNECT6,
      ]);
      assert.equal(v6.stdout.trim(), "1", `EPERM from the pinned connect6 hook: ${v6.stdout}${v6.stderr}`);
      assert.ok(fileExists(`/sys/fs/bpf/egress-${instanceName(paths.stateDir)}`), "pins survive the kill");
      assert.notEqual(await iptablesState(topology.runner), before, "rules survive the kill");

      second = await DaemonRun.start(topology, paths, { policy, upstreamCa: internet.pki.caPath });
      const oplog = await Deno.readTextFile(paths.oplog);
      assert.match(oplog, /leftover: removed stale socket/);
      assert.match(oplog, /leftover: removed stale ready file/);
      assert.match(oplog, /leftover: removed \d+ steering chains of an earlier run/);
      assert.match(oplog, /leftover: removed empty cgroup \/egress-\d+\.scope/);
      assert.match(oplog, /removed \d+ pinned BPF links left by an earlier egress-/);
      const again = await curl(topology, paths.egressCa, ["https://allowed.egress.test/three"]);
      assert.equal(again.stdout, "GET /three allowed.egress.test\n", again.stderr);
      const denied = await curl(topology, paths.egressCa, ["https://denied.egress.test/"]);
      assert.notEqual(denied.code, 0);

      assert.equal((await second.stop()).code, 0, second.process.stderr.slice(-3000));
      assert.equal(await iptablesState(topology.runner), before);
      assert.equal(await cgroupProgramCount(topology.cgroup), 0);
      assert.ok(!fileExists(`/sys/fs/bpf/egress-${instanceName(paths.stateDir)}`), "pins removed");
    } finally {
      for (const run of [first, second]) if (run && !run.process.exited) await run.kill();
      await internet.stop();
      removeDaemonLeftovers(paths);
      await Deno.remove(paths.dir, { recursive: true }).catch(() => {});
    }
  });
});

testWhen(
  reason,
  "e2e: audit mode lets denied traffic through and logs policy deny; SIGHUP reloads",
  async () => {
    await withTopology("a", async (topology) => {
      const paths = await daemonPaths("audit");
      const internet = await startInternet(topology, paths.dir);
      let run: DaemonRun | undefined;
      try {
        run = await DaemonRun.start(topology, paths, {
          policy: "allowed.egress.test\n",
          upstreamCa: internet.pki.caPath,
          extra: ["--audit"],
        });
        const out = await curl(topology, paths.egressCa, ["https://denied.egress.test/audit"]);
        assert.equal(out.stdout, "GET /audit denied.egress.test\n", out.stderr);
        const line = await run.waitForLine("audit deny", (l) => l.url === "https://denied.egress.test/audit");
        assert.equal(line.policy, "deny");
        assert.equal(line.audit, true);
        assert.equal(line.reason, "no matching rule");
        const status = await egressCommand(topology, "status", ["--control-socket", paths.socket]);
        assert.equal(status.code, 1, "status exits 1 in audit mode");
        assert.match(status.stdout, /^mode: audit$/m);

        await Deno.writeTextFile(paths.policy, "allowed.egress.test\ndenied.egress.test\n");
        run.process.signal("SIGHUP");
        await run.process.waitFor(
          "reload",
          () => Deno.readTextFile(paths.oplog).then((t) => t.includes("policy reloaded: 2 rules")),
        );
        await curl(topology, paths.egressCa, ["https://denied.egress.test/after"]);
        const after = await run.waitForLine(
          "after reload",
          (l) => l.url === "https://denied.egress.test/after",
        );
        assert.equal(after.policy, "allow");
        assert.equal((await run.stop()).code, 0);
      } finally {
        if (run && !run.process.exited) await run.kill();
        await internet.stop();
        removeDaemonLeftovers(paths);
        await Deno.remove(paths.dir, { recursive: true }).catch(() => {});
      }
    });
  },
);

testWhen(reason, "e2e: streaming a large download and a slow response through the proxy", async () => {
  await withTopology("s", async (topology) => {
    const paths = await daemonPaths("stream");
    const internet = await startInternet(topology, paths.dir);
    let run: DaemonRun | undefined;
    try {
      run = await DaemonRun.start(topology, paths, {
        policy: "allowed.egress.test\n",
        upstreamCa: internet.pki.caPath,
      });
      const bytes = 64 * 1024 * 1024;
      const large = await curl(topology, paths.egressCa, [
        "-o",
        "/dev/null",
        "-w",
        "%{size_download}",
        `https://allowed.egress.test/large?bytes=${bytes}`,
      ]);
      assert.equal(large.stdout, String(bytes), large.stderr);
      const started = performance.now();
      const slow = await curl(topology, paths.egressCa, ["https://allowed.egress.test/slow?ms=1500"]);
      assert.equal(slow.stdout, "GET /slow allowed.egress.test\n", slow.stderr);
      assert.ok(performance.now() - started >= 1500);
      assert.equal((await run.stop()).code, 0);
    } finally {
      if (run && !run.process.exited) await run.kill();
      await internet.stop();
      removeDaemonLeftovers(paths);
      await Deno.remove(paths.dir, { recursive: true }).catch(() => {});
    }
  });
});

testWhen(
  reason,
  "e2e: a policy with an error in enforce mode is refused before anything is touched",
  async () => {
    await withTopology("p", async (topology) => {
      const paths = await daemonPaths("badpolicy");
      try {
        const before = await iptablesState(topology.runner);
        const mount = (await Deno.readTextFile("/proc/self/mountinfo")).split("\n")
          .find((line) => line.includes(" - cgroup2 "))!.split(" ")[4];
        const scopes = () =>
          [...Deno.readDirSync(mount)].filter((e) => /^egress-\d+\.scope$/.test(e.name)).length;
        const scopesBefore = scopes();
        await Deno.writeTextFile(paths.policy, "allowed.egress.test\nbad..name\n");
        const out = await egressCommand(topology, "start", [
          "--policy",
          paths.policy,
          "--cgroup",
          topology.cgroup.hierarchyPath,
          "--state-dir",
          paths.stateDir,
          "--log",
          paths.log,
          "--control-socket",
          paths.socket,
          "--ready-file",
          paths.ready,
        ]);
        assert.equal(out.code, 1);
        assert.match(out.stderr, /ERROR policy: 2:\d+: /);
        assert.match(out.stderr, /Cannot start egress: the policy has 1 error/);
        assert.equal(await iptablesState(topology.runner), before);
        assert.ok(!fileExists(paths.stateDir) && !fileExists(paths.log) && !fileExists(paths.socket));
        assert.equal(await cgroupProgramCount(topology.cgroup), 0);
        assert.ok(scopes() <= scopesBefore, "no egress cgroup was created");
      } finally {
        removeDaemonLeftovers(paths);
        await Deno.remove(paths.dir, { recursive: true }).catch(() => {});
      }
    });
  },
);

testWhen(reason, "e2e: two daemons at once in two network namespaces do not collide", async () => {
  await withTopology("x", async (one) => {
    await withTopology("y", async (two) => {
      const pathsOne = await daemonPaths("one");
      const pathsTwo = await daemonPaths("two");
      const internetOne = await startInternet(one, pathsOne.dir);
      const internetTwo = await startInternet(two, pathsTwo.dir);
      const runs: DaemonRun[] = [];
      try {
        const [a, b] = await Promise.all([
          DaemonRun.start(one, pathsOne, {
            policy: "allowed.egress.test\n",
            upstreamCa: internetOne.pki.caPath,
          }),
          DaemonRun.start(two, pathsTwo, {
            policy: "denied.egress.test\n",
            upstreamCa: internetTwo.pki.caPath,
          }),
        ]);
        runs.push(a, b);
        const allowedOne = await curl(one, pathsOne.egressCa, ["https://allowed.egress.test/1"]);
        assert.equal(allowedOne.stdout, "GET /1 allowed.egress.test\n", allowedOne.stderr);
        const deniedTwo = await curl(two, pathsTwo.egressCa, ["https://allowed.egress.test/2"]);
        assert.notEqual(deniedTwo.code, 0, "the second daemon's policy applies in its namespace");
        const allowedTwo = await curl(two, pathsTwo.egressCa, ["https://denied.egress.test/3"]);
        assert.equal(allowedTwo.stdout, "GET /3 denied.egress.test\n", allowedTwo.stderr);
        const line = await b.waitForLine("two", (l) => l.url === "https://denied.egress.test/3");
        assert.equal(line.cgroup, two.cgroup.hierarchyPath);
        assert.equal((await a.stop()).code, 0);
        // The first daemon's cleanup left the second one intact.
        const still = await curl(two, pathsTwo.egressCa, ["https://denied.egress.test/4"]);
        assert.equal(still.stdout, "GET /4 denied.egress.test\n", still.stderr);
        assert.equal((await b.stop()).code, 0);
      } finally {
        for (const run of runs) if (!run.process.exited) await run.kill();
        await internetOne.stop();
        await internetTwo.stop();
        removeDaemonLeftovers(pathsOne);
        removeDaemonLeftovers(pathsTwo);
        await Deno.remove(pathsOne.dir, { recursive: true }).catch(() => {});
        await Deno.remove(pathsTwo.dir, { recursive: true }).catch(() => {});
      }
    });
  });
});
