// ctnetlink lookup by reply tuple: pure codec tests, and a real-kernel test in a network namespace
// this test creates (iptables REDIRECT inside that namespace only), always removed afterwards.

import assert from "node:assert/strict";
import {
  CT_GET_TYPE,
  decodeConntrackEntry,
  decodeErrorCode,
  encodeEntryForTest,
  encodeGetByReply,
  formatIpv6,
  parseIpv6,
  splitMessages,
} from "../../src/kernel/ctnetlink_codec.ts";
import { commandExists, needsRoot, testWhen, unmet } from "../helpers/requirements.ts";

Deno.test("ctnetlink codec: CT_GET by reply tuple has the documented layout", () => {
  const bytes = encodeGetByReply(
    { protocol: "tcp", srcIp: "127.0.0.1", srcPort: 15080, dstIp: "10.1.2.3", dstPort: 40000 },
    0x01020304,
  );
  const view = new DataView(bytes.buffer);
  assert.equal(view.getUint32(0, true), bytes.length);
  assert.equal(view.getUint16(4, true), CT_GET_TYPE);
  assert.equal(view.getUint16(6, true), 1); // NLM_F_REQUEST only
  assert.equal(view.getUint32(8, true), 0x01020304);
  assert.equal(bytes[16], 2); // AF_INET
  // CTA_TUPLE_REPLY, nested
  assert.equal(view.getUint16(22, true), 0x8002);
  // first nested: CTA_TUPLE_IP (nested) with V4 src 127.0.0.1 and dst 10.1.2.3
  assert.equal(view.getUint16(26, true), 0x8001);
  assert.deepEqual([...bytes.subarray(32, 36)], [127, 0, 0, 1]);
  assert.deepEqual([...bytes.subarray(40, 44)], [10, 1, 2, 3]);
  assert.equal(bytes.length % 4, 0);
  // ports are big-endian inside CTA_TUPLE_PROTO
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  assert.ok(hex.includes((15080).toString(16).padStart(4, "0")));
  assert.ok(hex.includes((40000).toString(16).padStart(4, "0")));
});

Deno.test("ctnetlink codec: decoding a CT_NEW answer round-trips both tuples (v4 and v6)", () => {
  for (const [a, b] of [["10.0.0.5", "93.184.216.34"], ["fd00::1", "2001:db8::20"]]) {
    const entry = {
      original: { protocol: "udp" as const, srcIp: a, srcPort: 5353, dstIp: b, dstPort: 53 },
      reply: { protocol: "udp" as const, srcIp: b, srcPort: 53, dstIp: a, dstPort: 61000 },
    };
    const messages = splitMessages(encodeEntryForTest(entry, 7));
    assert.equal(messages.length, 1);
    assert.equal(messages[0].seq, 7);
    assert.deepEqual(decodeConntrackEntry(messages[0].payload), entry);
  }
});

Deno.test("ctnetlink codec: malformed input is rejected, never misread", () => {
  assert.throws(
    () => encodeGetByReply({ protocol: "tcp", srcIp: "1.2.3", srcPort: 1, dstIp: "1.2.3.4", dstPort: 2 }, 1),
    /Cannot encode conntrack query/,
  );
  assert.throws(
    () => encodeGetByReply({ protocol: "tcp", srcIp: "::1", srcPort: 1, dstIp: "1.2.3.4", dstPort: 2 }, 1),
    /not two IPv4 or two IPv6/,
  );
  assert.throws(
    () =>
      encodeGetByReply(
        { protocol: "tcp", srcIp: "1.2.3.4", srcPort: 70000, dstIp: "1.2.3.4", dstPort: 2 },
        1,
      ),
    /port/,
  );
  const good = encodeEntryForTest({
    original: { protocol: "tcp", srcIp: "1.1.1.1", srcPort: 1, dstIp: "2.2.2.2", dstPort: 2 },
    reply: { protocol: "tcp", srcIp: "2.2.2.2", srcPort: 2, dstIp: "1.1.1.1", dstPort: 1 },
  }, 1);
  for (let cut = 0; cut < good.length; cut += 3) {
    for (const message of splitMessages(good.subarray(0, cut))) {
      const entry = decodeConntrackEntry(message.payload);
      assert.equal(entry, undefined);
    }
  }
  // NLMSG_ERROR payload carries -errno
  const error = new Uint8Array(4);
  new DataView(error.buffer).setInt32(0, -2, true);
  assert.equal(decodeErrorCode(error), 2);
});

Deno.test("ctnetlink codec: v4-mapped addresses from a dual-stack listener are queried as IPv4", () => {
  const plain = encodeGetByReply({
    protocol: "tcp",
    srcIp: "127.0.0.1",
    srcPort: 1,
    dstIp: "10.0.0.9",
    dstPort: 2,
  }, 5);
  const mapped = encodeGetByReply(
    { protocol: "tcp", srcIp: "::ffff:127.0.0.1", srcPort: 1, dstIp: "::FFFF:10.0.0.9", dstPort: 2 },
    5,
  );
  assert.deepEqual(mapped, plain);
});

Deno.test("ctnetlink codec: IPv6 text parsing and formatting", () => {
  assert.equal(formatIpv6(parseIpv6("2001:0db8:0:0:0:0:0:1")!), "2001:db8::1");
  assert.equal(formatIpv6(parseIpv6("::ffff:1.2.3.4")!), "::ffff:102:304");
  assert.equal(formatIpv6(parseIpv6("1:0:0:1:0:0:0:1")!), "1:0:0:1::1");
  assert.equal(parseIpv6("1::2::3"), undefined);
  assert.equal(parseIpv6("12345::"), undefined);
});

const kernelReason = unmet([
  [needsRoot() === undefined, "needs root"],
  [commandExists("/usr/sbin/ip") || commandExists("/sbin/ip"), "needs ip (Debian package iproute2)"],
  [
    commandExists("/usr/sbin/iptables") || commandExists("/sbin/iptables"),
    "needs iptables (Debian package iptables)",
  ],
]);

async function run(args: string[]): Promise<string> {
  const output = await new Deno.Command(args[0], { args: args.slice(1), stdout: "piped", stderr: "piped" })
    .output();
  if (!output.success) {
    throw new Error(`${args.join(" ")} failed: ${new TextDecoder().decode(output.stderr)}`);
  }
  return new TextDecoder().decode(output.stdout);
}

type Lookup = { found: boolean; original?: Record<string, unknown>; reason?: string };
type Seen = { peerPort: number; result: Lookup };

testWhen(
  kernelReason,
  "conntrack by reply tuple in a REDIRECT netns: TCP with port remap, UDP, miss",
  async () => {
    const netns = `egct-${Deno.pid}-${Math.random().toString(36).slice(2, 8)}`;
    await run(["ip", "netns", "add", netns]);
    try {
      const inNs = (...args: string[]) => run(["ip", "netns", "exec", netns, ...args]);
      await inNs("ip", "link", "set", "lo", "up");
      for (const protocol of ["tcp", "udp"]) {
        await inNs(
          "iptables",
          "-t",
          "nat",
          "-A",
          "OUTPUT",
          "-p",
          protocol,
          "-d",
          "127.0.0.2/31",
          "-j",
          "REDIRECT",
          "--to-ports",
          protocol === "tcp" ? "15080" : "15053",
        );
      }
      const probe = new URL("./fixtures/conntrack_probe.ts", import.meta.url).pathname;
      const text = await inNs(Deno.execPath(), "run", "-A", probe);
      const seen = JSON.parse(text.trim().split("\n").at(-1)!) as Record<string, Seen> & {
        missing: Lookup;
        latencyMicros: { p50: number; p99: number };
      };

      assert.deepEqual(seen.tcpA.result.original, {
        srcIp: "127.0.0.1",
        srcPort: 40000,
        dstIp: "127.0.0.2",
        dstPort: 80,
      });
      assert.deepEqual(seen.tcpB.result.original, {
        srcIp: "127.0.0.1",
        srcPort: 40000,
        dstIp: "127.0.0.3",
        dstPort: 81,
      });
      // The scenario only proves something if NAT really remapped one of the two client ports.
      assert.notEqual(seen.tcpA.peerPort, seen.tcpB.peerPort);
      assert.ok(seen.tcpA.peerPort !== 40000 || seen.tcpB.peerPort !== 40000);

      assert.deepEqual(seen.udpC.result.original, {
        srcIp: "127.0.0.1",
        srcPort: 40001,
        dstIp: "127.0.0.2",
        dstPort: 53,
      });
      assert.deepEqual(seen.udpD.result.original, {
        srcIp: "127.0.0.1",
        srcPort: 40001,
        dstIp: "127.0.0.3",
        dstPort: 54,
      });
      assert.notEqual(seen.udpC.peerPort, seen.udpD.peerPort);

      assert.equal(seen.missing.found, false);
      assert.match(seen.missing.reason!, /no conntrack entry/);
      console.log(
        `conntrack lookup latency: p50 ${seen.latencyMicros.p50} µs, p99 ${seen.latencyMicros.p99} µs`,
      );
      assert.ok(seen.latencyMicros.p50 < 5000, "a lookup should take well under 5 ms");
    } finally {
      await run(["ip", "netns", "del", netns]).catch((error) => console.error(error.message));
    }
  },
);

testWhen(kernelReason, "conntrack: closed client answers with a reason, never throws", async () => {
  const { ConntrackClient } = await import("../../src/kernel/conntrack.ts");
  const client = new ConntrackClient();
  const first = await client.lookupByReply({
    protocol: "tcp",
    srcIp: "127.0.0.1",
    srcPort: 1,
    dstIp: "127.0.0.1",
    dstPort: 2,
  });
  assert.equal(first.found, false);
  client.close();
  client.close();
  const after = await client.lookupByReply({
    protocol: "tcp",
    srcIp: "127.0.0.1",
    srcPort: 1,
    dstIp: "127.0.0.1",
    dstPort: 2,
  });
  assert.equal(after.found, false);
  assert.match((after as { reason: string }).reason, /closed/);
  const bad = new ConntrackClient();
  const invalid = await bad.lookupByReply({
    protocol: "tcp",
    srcIp: "nope",
    srcPort: 1,
    dstIp: "127.0.0.1",
    dstPort: 2,
  });
  assert.equal(invalid.found, false);
  assert.match((invalid as { reason: string }).reason, /Cannot encode/);
  bad.close();
});
