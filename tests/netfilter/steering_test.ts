// Real-kernel tests of the packet steering: the rules are installed in a "runner" network namespace
// the test creates (never the root one) and traffic is sent from unprivileged clients, from a process
// in the exempt cgroup and from a "container" namespace routed through the runner.
import assert from "node:assert/strict";
import { testWhen } from "../helpers/requirements.ts";
import {
  findLeftovers,
  flushUdpConntrack,
  installSteering,
  removeSteering,
  revokeFastPath,
  verifySteering,
} from "../../src/netfilter/iptables.ts";
import { DEFAULT_MARKS, type SteeringConfig } from "../../src/netfilter/rules.ts";
import { normalizeSave } from "../../src/netfilter/save.ts";
import { createCgroup, removeCgroup } from "../../src/kernel/cgroup.ts";
import { netnsTestsUnmet, Peer, RUN, tcpClient, Topology, udpClient } from "./topology.ts";

const reason = netnsTestsUnmet();
const PROXY = 15080;
const DNS = 15053;
const QUEUE = 15;

/** Rules of "somebody else" (Docker-like) that must survive install and removal untouched. */
const FOREIGN_RULES = [
  ["-t", "filter", "-A", "OUTPUT", "-p", "tcp", "--dport", "9999", "-j", "ACCEPT"],
  ["-t", "nat", "-N", "FOREIGN-NAT"],
  ["-t", "nat", "-A", "FOREIGN-NAT", "-p", "tcp", "--dport", "9998", "-j", "RETURN"],
  ["-t", "nat", "-A", "PREROUTING", "-j", "FOREIGN-NAT"],
  // Another user's connmark bit: it must survive our --save-mark with masks.
  ["-t", "mangle", "-A", "OUTPUT", "-p", "udp", "-j", "CONNMARK", "--set-xmark", "0x10/0x10"],
];

function conntrackMarks(listing: string, port: number): number[] {
  return listing.split("\n")
    .filter((line) => line.includes(`dport=${port} `))
    .map((line) => Number(/\bmark=(\d+)/.exec(line)?.[1] ?? NaN));
}

testWhen(
  reason,
  "steering: redirect, exemption, direct-port drop, UDP queue, forwarding, verify and clean removal",
  async (t) => {
    const topology = await Topology.create();
    const { runner, internet, container, exempt } = topology;
    const options = { netnsPath: runner.path, log: (_: string) => {} };
    const config: SteeringConfig = {
      proxyPort: PROXY,
      dnsPort: DNS,
      queueNum: QUEUE,
      exemptCgroupPath: exempt.hierarchyPath,
      resolvedCgroupPath: `/${RUN}-no-such-resolved`,
    };
    const steered = { unprivileged: true };
    const exemptClient = { cgroup: exempt, unprivileged: true };
    try {
      for (const rule of FOREIGN_RULES) await runner.exec(["iptables", ...rule]);
      const before = normalizeSave(await runner.exec(["iptables-save"]));

      // egress's listeners run in the exempt cgroup, like the daemon.
      const proxy = await topology.startPeer(runner, exempt, "tcp-server", PROXY, "proxy");
      let consumer: Peer | undefined;
      await topology.startPeer(runner, exempt, "tcp-server", DNS, "dns-tcp");
      await topology.startPeer(runner, exempt, "udp-server", DNS, "dns-udp");
      await topology.startPeer(internet, undefined, "tcp-server", 8080, "internet");
      await topology.startPeer(internet, undefined, "tcp-server", 53, "internet-dns");
      await topology.startPeer(internet, undefined, "udp-server", 7000, "internet-udp");
      await topology.startPeer(internet, undefined, "udp-server", 7001, "internet-udp2");
      await topology.startPeer(internet, undefined, "udp-server", 53, "internet-dns-udp");

      // Control: without rules everything reaches the internet namespace.
      assert.equal(await tcpClient(runner, steered, "192.0.2.2", 8080), "internet 192.0.2.2:8080");
      assert.equal(await udpClient(runner, steered, "192.0.2.2", 7000), "internet-udp");

      let used!: SteeringConfig;
      await t.step("install: verified, missing resolved cgroup skipped, foreign rules kept", async () => {
        const lines: string[] = [];
        used = await installSteering(config, { ...options, log: (line) => lines.push(line) });
        assert.equal(used.resolvedCgroupPath, undefined);
        assert.ok(lines.some((line) => line.includes("no systemd-resolved exemption")), lines.join("\n"));
        const report = await verifySteering(used, options);
        assert.deepEqual(report.problems, []);
        const saved = await runner.exec(["iptables-save"]);
        for (const kept of ["--dport 9999 -j ACCEPT", "-A FOREIGN-NAT", "-A PREROUTING -j FOREIGN-NAT"]) {
          assert.ok(saved.includes(kept), `foreign rule ${kept} lost`);
        }
        assert.ok(!saved.includes("queue-bypass"));
      });

      await t.step("TCP from an unprivileged process is redirected to the proxy port", async () => {
        await runner.exec(["conntrack", "-F"]);
        assert.equal(await tcpClient(runner, steered, "192.0.2.2", 8080), "proxy 127.0.0.1:15080");
        // The original destination stays visible in conntrack (orig tuple → reply from the proxy port).
        const entries = await runner.exec(["conntrack", "-L", "-p", "tcp", "--orig-dst", "192.0.2.2"]);
        assert.match(
          entries,
          /dst=192\.0\.2\.2 sport=\d+ dport=8080 src=127\.0\.0\.1 dst=192\.0\.2\.1 sport=15080 /,
        );
        assert.equal(await tcpClient(runner, steered, "127.0.0.1", 9), "proxy 127.0.0.1:15080");
        assert.equal(await tcpClient(runner, steered, "192.0.2.2", 53), "dns-tcp 127.0.0.1:15053");
      });

      await t.step("the exempt cgroup connects directly, also to egress's own ports", async () => {
        assert.equal(await tcpClient(runner, exemptClient, "192.0.2.2", 8080), "internet 192.0.2.2:8080");
        assert.equal(await tcpClient(runner, exemptClient, "192.0.2.2", 53), "internet-dns 192.0.2.2:53");
        assert.equal(await udpClient(runner, exemptClient, "192.0.2.2", 7000), "internet-udp");
        const direct = await Promise.all([
          tcpClient(runner, exemptClient, "127.0.0.1", PROXY),
          tcpClient(runner, exemptClient, "127.0.0.2", PROXY),
          tcpClient(runner, exemptClient, "192.0.2.1", PROXY),
          tcpClient(runner, exemptClient, "127.0.0.1", DNS),
        ]);
        assert.deepEqual(direct, [
          "proxy 127.0.0.1:15080",
          "proxy 127.0.0.2:15080",
          "proxy 192.0.2.1:15080",
          "dns-tcp 127.0.0.1:15053",
        ]);
      });

      await t.step("direct connections to the proxy and DNS ports time out (SYN dropped)", async () => {
        const direct = await Promise.all([
          tcpClient(runner, steered, "127.0.0.1", PROXY),
          tcpClient(runner, steered, "127.0.0.2", PROXY),
          tcpClient(runner, steered, "192.0.2.1", PROXY),
          tcpClient(runner, steered, "198.51.100.1", PROXY),
          tcpClient(runner, steered, "127.0.0.1", DNS),
          tcpClient(runner, { unprivileged: false }, "127.0.0.1", PROXY),
        ]);
        assert.deepEqual(direct, ["TIMEOUT", "TIMEOUT", "TIMEOUT", "TIMEOUT", "TIMEOUT", "TIMEOUT"]);
        // A datagram dropped in OUTPUT fails the send itself with EPERM; the exempt one is answered.
        assert.equal(await udpClient(runner, steered, "127.0.0.1", DNS), "ERROR 1");
        assert.equal(await udpClient(runner, exemptClient, "127.0.0.1", DNS), "dns-udp");
      });

      await t.step("UDP is dropped while no queue consumer is bound", async () => {
        assert.equal(await udpClient(runner, steered, "192.0.2.2", 7000), "TIMEOUT");
        assert.equal(await udpClient(runner, { unprivileged: false }, "192.0.2.2", 53), "TIMEOUT");
      });

      await t.step("forwarded traffic from a container namespace is steered too", async () => {
        const results = await Promise.all([
          tcpClient(container, steered, "192.0.2.2", 8080),
          tcpClient(container, steered, "192.0.2.2", 53),
          tcpClient(container, steered, "198.51.100.1", PROXY),
          tcpClient(container, steered, "192.0.2.1", DNS),
          udpClient(container, steered, "192.0.2.2", 7000),
        ]);
        assert.deepEqual(results, [
          "proxy 198.51.100.1:15080",
          "dns-tcp 198.51.100.1:15053",
          "TIMEOUT",
          "TIMEOUT",
          "TIMEOUT",
        ]);
      });

      await t.step("with a consumer: DNS mark redirects, allowed connmark skips the queue", async () => {
        const script = new URL("./queue_consumer.ts", import.meta.url).pathname;
        consumer = await Peer.start([
          "nsenter",
          `--net=${runner.path}`,
          Deno.execPath(),
          "run",
          "-A",
          script,
          String(QUEUE),
          String(DEFAULT_MARKS.dns),
          String(DEFAULT_MARKS.allowedFlow),
        ], true);
        topology.peers.push(consumer);
        const queue = consumer;
        const counts = async () => JSON.parse(await queue.exchange("counts")) as Record<string, number>;
        await runner.exec(["conntrack", "-F"]);
        assert.equal(await udpClient(runner, steered, "192.0.2.2", 53), "dns-udp");
        assert.equal(
          await udpClient(runner, steered, "192.0.2.2", 7000, 3),
          "internet-udp internet-udp internet-udp",
        );
        assert.equal(await udpClient(runner, steered, "192.0.2.2", 7001), "TIMEOUT");
        assert.equal(await udpClient(container, steered, "192.0.2.2", 53), "dns-udp");
        assert.equal(await udpClient(container, steered, "192.0.2.2", 7000, 2), "internet-udp internet-udp");
        const seen = await counts();
        // Each allowed flow was queued once; every DNS datagram is queued.
        assert.equal(seen["7000"], 2, JSON.stringify(seen));
        assert.equal(seen["53"], 2, JSON.stringify(seen));
        assert.ok(seen["7001"] >= 1, JSON.stringify(seen));

        // The allowed bit was saved into the connmark next to the foreign 0x10 bit.
        const allowedAndForeign = DEFAULT_MARKS.allowedFlow | 0x10;
        const listing = await runner.exec(["conntrack", "-L", "-p", "udp"]);
        assert.ok(conntrackMarks(listing, 7000).includes(allowedAndForeign), listing);
        const revoked = await revokeFastPath({ ...options, marks: DEFAULT_MARKS });
        assert.ok(revoked >= 1);
        const afterRevoke = await runner.exec(["conntrack", "-L", "-p", "udp"]);
        assert.deepEqual(conntrackMarks(afterRevoke, 7000), [], afterRevoke);
        // DNS flows never had the bit: they stay, with the foreign bit intact.
        const dnsMarks = conntrackMarks(afterRevoke, 53);
        assert.ok(dnsMarks.length >= 1 && dnsMarks.every((mark) => mark === 0x10), afterRevoke);
        assert.equal(await revokeFastPath(options), 0);
        const flushed = await flushUdpConntrack(options);
        assert.ok(flushed >= 1);
        assert.equal(conntrackMarks(await runner.exec(["conntrack", "-L", "-p", "udp"]), 7000).length, 0);
        assert.equal(await flushUdpConntrack(options), 0);
      });

      await t.step("verify reports a foreign rule ahead of our jump and an edited chain", async () => {
        await runner.exec([
          "iptables",
          "-t",
          "nat",
          "-I",
          "OUTPUT",
          "1",
          "-p",
          "tcp",
          "--dport",
          "1",
          "-j",
          "RETURN",
        ]);
        await runner.exec(["iptables", "-t", "mangle", "-A", "EGRESS-OUTPUT", "-j", "RETURN"]);
        const report = await verifySteering(used, options);
        assert.equal(report.ok, false);
        assert.ok(
          report.problems.some((problem) => problem.startsWith("nat OUTPUT: first rule")),
          report.problems.join("\n"),
        );
        assert.ok(
          report.problems.some((problem) => problem.startsWith("mangle EGRESS-OUTPUT rule")),
          report.problems.join("\n"),
        );
        await runner.exec([
          "iptables",
          "-t",
          "nat",
          "-D",
          "OUTPUT",
          "-p",
          "tcp",
          "--dport",
          "1",
          "-j",
          "RETURN",
        ]);
      });

      await t.step("install over leftovers removes them first", async () => {
        await runner.exec(["iptables", "-t", "filter", "-N", "EGRESS-STALE"]);
        await runner.exec(["iptables", "-t", "filter", "-I", "INPUT", "1", "-j", "EGRESS-STALE"]);
        assert.ok((await findLeftovers(options)).some((left) => left.chain === "EGRESS-STALE"));
        used = await installSteering(config, options);
        assert.deepEqual((await verifySteering(used, options)).problems, []);
        assert.ok(!(await findLeftovers(options)).some((left) => left.chain === "EGRESS-STALE"));
        assert.equal(await tcpClient(runner, steered, "192.0.2.2", 8080), "proxy 127.0.0.1:15080");
      });

      await t.step(
        "a UDP flow from before the install cannot slip past NAT; the conntrack flush fixes it",
        async () => {
          await removeSteering(options);
          const session = await Peer.udpSession(runner, steered, "192.0.2.2", 53);
          topology.peers.push(session);
          assert.equal(await session.exchange("before"), "internet-dns-udp");
          used = await installSteering(config, options);
          // The consumer marks it DNS, but NAT only binds new flows: the backstop in filter drops it.
          assert.equal(await session.exchange("after install"), "TIMEOUT");
          const counters = await runner.exec(["iptables-save", "-c", "-t", "filter"]);
          const backstop = counters.split("\n").find((line) =>
            line.includes("-A EGRESS-OUTPUT -p udp") && line.includes("! --ctstate DNAT -j DROP")
          );
          assert.match(backstop ?? "", /^\[[1-9]\d*:\d+\]/, counters);
          assert.ok(await flushUdpConntrack(options) >= 1);
          assert.equal(await session.exchange("after flush"), "dns-udp");
        },
      );

      await t.step("systemd-resolved's cgroup is exempt for port 53 only", async () => {
        const resolved = createCgroup(`/${RUN}-resolved`);
        try {
          used = await installSteering({ ...config, resolvedCgroupPath: resolved.hierarchyPath }, options);
          assert.equal(used.resolvedCgroupPath, resolved.hierarchyPath);
          assert.deepEqual((await verifySteering(used, options)).problems, []);
          const as = { cgroup: resolved, unprivileged: true };
          assert.equal(await tcpClient(runner, as, "192.0.2.2", 53), "internet-dns 192.0.2.2:53");
          assert.equal(await udpClient(runner, as, "192.0.2.2", 53), "internet-dns-udp");
          assert.equal(await tcpClient(runner, as, "192.0.2.2", 8080), "proxy 127.0.0.1:15080");
          assert.equal(await tcpClient(runner, as, "127.0.0.1", PROXY), "TIMEOUT");
        } finally {
          await removeSteering(options);
          await removeCgroup(resolved);
        }
        used = await installSteering(config, options);
      });

      await t.step("a dead daemon leaves traffic denied, not open", async () => {
        await proxy.stop();
        await consumer?.stop();
        await runner.exec(["conntrack", "-F"]);
        assert.equal(await tcpClient(runner, steered, "192.0.2.2", 8080), "REFUSED");
        assert.equal(await tcpClient(container, steered, "192.0.2.2", 8080), "REFUSED");
        assert.equal(await udpClient(runner, steered, "192.0.2.2", 7000), "TIMEOUT");
        assert.equal(await udpClient(runner, steered, "192.0.2.2", 53), "TIMEOUT");
      });

      await t.step("remove restores iptables-save byte for byte; a second remove is a no-op", async () => {
        const first = await removeSteering(options);
        assert.equal(first.jumps, 7);
        assert.equal(first.chains, 7);
        assert.equal(normalizeSave(await runner.exec(["iptables-save"])), before);
        assert.deepEqual(await removeSteering(options), { jumps: 0, chains: 0 });
        assert.equal(normalizeSave(await runner.exec(["iptables-save"])), before);
        assert.deepEqual(await findLeftovers(options), []);
        assert.equal(await tcpClient(runner, steered, "192.0.2.2", 8080), "internet 192.0.2.2:8080");
        assert.equal(await tcpClient(container, steered, "192.0.2.2", 8080), "internet 192.0.2.2:8080");
      });
    } finally {
      await topology.destroy();
    }
  },
  { sanitizeOps: false, sanitizeResources: false },
);

testWhen(reason, "install refuses a missing exempt cgroup before touching any table", async () => {
  await assert.rejects(
    installSteering(
      { proxyPort: PROXY, dnsPort: DNS, queueNum: QUEUE, exemptCgroupPath: `/${RUN}-missing` },
      {
        netnsPath: "/nonexistent-netns-never-used",
      },
    ),
    /Cannot install the packet-steering rules: the exempt cgroup \/nf\w+-missing does not exist/,
  );
});
