// End to end in a test network namespace (root): the steering rules of src/netfilter/rules.ts,
// the real NFQUEUE consumer with the UDP packet handler, and the DNS proxy, in a child process that
// sits in its own (exempt) cgroup. Clients (dig, python3) run in the namespace outside that cgroup.
// iptables only ever runs inside the namespace; the namespace and cgroup are always removed.

import assert from "node:assert/strict";
import { Agent, nfqueueTestRequirements, TestNetns, uniqueQueueNum } from "./netns_helpers.ts";
import { commandExists, testWhen, unmet } from "../helpers/requirements.ts";
import { steeringRestoreText } from "../../src/netfilter/rules.ts";
import { createCgroup } from "../../src/kernel/cgroup.ts";

const AGENT = new URL("./dns_netns_agent.ts", import.meta.url).pathname;
const DNS_PORT = 15053;
const UPSTREAM_PORT = 53;

const reason = nfqueueTestRequirements() ??
  unmet([[commandExists("/usr/bin/dig"), "needs dig"], [commandExists("/usr/bin/python3"), "needs python3"]]);

async function inNetns(netns: TestNetns, command: string, args: string[], stdin?: string): Promise<string> {
  const child = new Deno.Command("nsenter", {
    args: [`--net=/run/netns/${netns.name}`, command, ...args],
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(stdin));
    await writer.close();
  }
  const output = await child.output();
  const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
  if (output.code !== 0 && command !== "/usr/bin/dig") throw new Error(`Cannot run ${command}: ${text}`);
  return text;
}

type Line = {
  log?: Record<string, unknown>;
  received?: number;
  ready?: boolean;
  warn?: string;
  error?: string;
};

for (const mode of ["rendezvous", "conntrack"] as const) {
  testWhen(
    reason,
    `netns: steering + nfqueue handler + DNS proxy judge DNS and UDP end to end (${mode})`,
    async () => {
      const runId = `${Deno.pid.toString(36)}${Math.floor(Math.random() * 36 ** 4).toString(36)}`;
      const cgroup = createCgroup(`/egdns-${runId}`);
      const netns = await TestNetns.create();
      let agent: Agent | undefined;
      try {
        const queueNum = uniqueQueueNum();
        const rules = steeringRestoreText({
          proxyPort: 15080,
          dnsPort: DNS_PORT,
          queueNum,
          exemptCgroupPath: cgroup.hierarchyPath,
        });
        await inNetns(netns, "iptables-restore", ["-w", "--noflush"], rules);
        agent = new Agent(
          new Deno.Command("nsenter", {
            args: [
              `--net=/run/netns/${netns.name}`,
              Deno.execPath(),
              "run",
              "-A",
              AGENT,
              `${cgroup.fsPath}/cgroup.procs`,
              String(queueNum),
              String(DNS_PORT),
              String(UPSTREAM_PORT),
              mode,
            ],
            env: { DENO_NO_UPDATE_CHECK: "1" },
            stdin: "piped",
            stdout: "piped",
            stderr: "piped",
          }).spawn(),
        );
        const ready = await agent.next<Line>(30_000);
        assert.equal(ready.ready, true, JSON.stringify(ready));

        const lines: Line[] = [];
        const collect = async (until: (line: Line) => boolean) => {
          for (;;) {
            const line = await agent!.next<Line>(10_000).catch((error: Error) => {
              throw new Error(`${error.message}; lines so far: ${JSON.stringify(lines)}`);
            });
            lines.push(line);
            if (until(line)) return line;
          }
        };
        const dig = (...args: string[]) => inNetns(netns, "/usr/bin/dig", ["+tries=1", "+time=3", ...args]);

        // Allowed resolver and name: answered by the upstream through the proxy.
        const allowed = await dig("@127.0.0.2", "-p", String(UPSTREAM_PORT), "+short", "allowed.example.com");
        assert.equal(allowed.trim(), "192.0.2.1");
        const dnsLine = (await collect((l) => l.log?.type === "dns")).log!;
        assert.equal(dnsLine.policy, "allow");
        assert.equal(dnsLine.dst_ip, "127.0.0.2", "original destination from the rendezvous");
        assert.equal(dnsLine.dst_port, UPSTREAM_PORT);
        await collect((l) => l.log?.type === "dns_response");

        // Denied name: REFUSED.
        const denied = await dig("@127.0.0.2", "-p", String(UPSTREAM_PORT), "denied.example.org");
        assert.match(denied, /status: REFUSED/);
        assert.equal((await collect((l) => l.log?.type === "dns")).log!.reason, "name not allowed");

        // DNS over TCP to port 53: nat REDIRECTs it to the proxy, conntrack gives the original resolver.
        assert.equal((await dig("@127.0.0.2", "+tcp", "+short", "allowed.example.com")).trim(), "192.0.2.1");
        const tcpLine = (await collect((l) => l.log?.type === "dns")).log!;
        assert.equal(tcpLine.policy, "allow");
        assert.equal(tcpLine.dst_ip, "127.0.0.2");
        assert.equal(tcpLine.dst_port, 53);
        await collect((l) => l.log?.type === "dns_response");
        assert.match(await dig("@127.0.0.2", "+tcp", "denied.example.org"), /status: REFUSED/);
        assert.equal((await collect((l) => l.log?.type === "dns")).log!.reason, "name not allowed");

        // DNS on another port to a resolver without a udp rule: still caught by structure, refused.
        const otherPort = await dig("@127.0.0.2", "-p", "5353", "allowed.example.com");
        assert.match(otherPort, /status: REFUSED/);
        const otherLine = (await collect((l) => l.log?.type === "dns")).log!;
        assert.equal(otherLine.reason, "resolver not allowed");
        assert.equal(otherLine.dst_port, 5353);

        // Plain UDP: allowed flow delivered, denied flow dropped; one udp line each.
        const send = `
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for port in (4000, 4001, 4000, 4001):
    s.sendto(b"hello", ("127.0.0.3", port))
`;
        await inNetns(netns, "/usr/bin/python3", ["-c", send]);
        // Both packets to 4000 arrive (the second by the connmark fast path); the deny line is logged once.
        // The deny line of 4001 and the second delivery to 4000 may come in either order.
        let delivered = 0;
        let denyLogged = false;
        await collect((l) => {
          if (l.received === 4000) delivered++;
          if (l.log?.type === "udp" && l.log.dst_port === 4001) denyLogged = true;
          return delivered === 2 && denyLogged;
        });
        const udpLines = lines.map((l) => l.log).filter((l) => l?.type === "udp");
        assert.deepEqual(udpLines.map((l) => `${l!.dst_port}:${l!.policy}`), ["4000:allow", "4001:deny"]);
        assert.equal(udpLines[0]!.rule, "127.0.0.3:4000/udp");
        // Give a stray delivery to 4001 time to show up; closing stdin ends the agent.
        await new Promise((resolve) => setTimeout(resolve, 300));
        const { code, stderr } = await agent.finish();
        assert.equal(code, 0, stderr);
        assert.ok(!lines.some((l) => l.received === 4001), "denied UDP flow was delivered");
        assert.ok(
          !lines.some((l) => l.error),
          `agent errors: ${JSON.stringify(lines.filter((l) => l.error))}`,
        );
        agent = undefined;
      } finally {
        if (agent) {
          agent.kill();
          await agent.finish().catch(() => {});
        }
        await netns.remove();
        try {
          Deno.removeSync(cgroup.fsPath);
        } catch {
          // still has a process (killed agent exiting): retry once after a moment
          await new Promise((resolve) => setTimeout(resolve, 500));
          try {
            Deno.removeSync(cgroup.fsPath);
          } catch {
            // reported by the next run's leftover check, if any
          }
        }
      }
    },
  );
}
