// The UDP packet handler with hand-built IPv4/UDP packets, a real Enforcer and fake attribution.
import assert from "node:assert/strict";
import { parsePolicy } from "../../src/policy/policy.ts";
import { Enforcer } from "../../src/policy/enforcer.ts";
import type { ConnectionLogEvent } from "../../src/log/connection_log.ts";
import { Rendezvous } from "../../src/dns/rendezvous.ts";
import { createUdpPacketHandler, procDescriber } from "../../src/udp/udp_policy.ts";
import { FlowLogLimiter } from "../../src/udp/flow_table.ts";
import { DEFAULT_MARKS } from "../../src/netfilter/rules.ts";
import type { QueuedPacket } from "../../src/kernel/attribution.ts";

function ip(text: string): number[] {
  return text.split(".").map(Number);
}

/** IPv4 + UDP packet, placed at `offset` inside a larger buffer like the nfqueue receive buffer. */
function udpPacket(src: string, sport: number, dst: string, dport: number, payload: Uint8Array, offset = 64) {
  const total = 20 + 8 + payload.length;
  const bytes = new Uint8Array(offset + total + 16);
  const p = bytes.subarray(offset);
  p.set([0x45, 0, total >> 8, total & 0xff, 0, 1, 0x40, 0, 64, 17, 0, 0, ...ip(src), ...ip(dst)]);
  p.set([
    sport >> 8,
    sport & 0xff,
    dport >> 8,
    dport & 0xff,
    (8 + payload.length) >> 8,
    (8 + payload.length) & 0xff,
    0,
    0,
  ], 20);
  p.set(payload, 28);
  return { bytes, payloadOffset: offset, payloadLength: total, mark: 0 };
}

function dnsQuery(id: number, name: string): Uint8Array {
  const labels = name.split(".").flatMap((label) => [label.length, ...new TextEncoder().encode(label)]);
  return new Uint8Array([id >> 8, id & 0xff, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, ...labels, 0, 0, 1, 0, 1]);
}

function setup(policyText: string, options: { audit?: boolean } = {}) {
  let clock = 1_000_000;
  const lines: ConnectionLogEvent[] = [];
  const errors: string[] = [];
  const lookups: QueuedPacket[] = [];
  const rendezvous = new Rendezvous();
  const policy = parsePolicy(policyText);
  const enforcer = new Enforcer(policy, { audit: options.audit });
  const handler = createUdpPacketHandler({
    getEnforcer: () => enforcer,
    getPolicy: () => policy,
    attribution: {
      lookupPacket(packet) {
        lookups.push({ ...packet });
        return packet.srcPort === 9999
          ? undefined
          : { pid: 321, uid: 0, comm: "app", cgroupId: 1n, dst_ip: packet.dstIp, dst_port: packet.dstPort };
      },
    },
    describe: (pid) => ({ pid, exe: "/usr/bin/app", cmdline: ["app", "--x"], cgroup: "/ci.slice" }),
    rendezvous,
    log: { write: (line) => lines.push(line) },
    oplog: { debug() {}, info() {}, warn: (m) => errors.push(m), error: (m) => errors.push(m) },
    marks: DEFAULT_MARKS,
    flowLimiter: new FlowLogLimiter({ now: () => clock }),
    isLocal: (address) => address.startsWith("10.0.0.") || address.startsWith("127."),
    audit: options.audit,
    now: () => clock,
  });
  return { handler, lines, errors, lookups, rendezvous, advance: (ms: number) => (clock += ms) };
}

const POLICY = "9.9.9.9:443/udp\n[exe=/usr/bin/other]\n8.8.8.8:3478/udp";

Deno.test("udp handler: allowed flow ⇒ repeat with the allowed-flow mark bit, one udp line", () => {
  const s = setup(POLICY);
  const packet = udpPacket("10.0.0.5", 50000, "9.9.9.9", 443, new Uint8Array([1, 2, 3]));
  packet.mark = 0x10;
  const verdict = s.handler(packet);
  assert.equal(verdict.verdict, "repeat");
  assert.equal(verdict.mark, (0x10 | DEFAULT_MARKS.allowedFlow) >>> 0);
  assert.equal(s.handler.lastKind, "allowed");
  assert.equal(s.lines.length, 1);
  const [line] = s.lines;
  assert.equal(line.type, "udp");
  assert.equal(line.dst_ip, "9.9.9.9");
  assert.equal(line.dst_port, 443);
  assert.equal(line.src_port, 50000);
  assert.equal(line.policy, "allow");
  assert.equal(line.rule, "9.9.9.9:443/udp");
  assert.equal(line.pid, 321);
  assert.equal(line.exe, "/usr/bin/app");
  assert.deepEqual(s.lookups[0], {
    protocol: "udp",
    srcIp: "10.0.0.5",
    srcPort: 50000,
    dstIp: "9.9.9.9",
    dstPort: 443,
  });
  // A second packet of the flow before the connmark took over is not logged again.
  s.handler(udpPacket("10.0.0.5", 50000, "9.9.9.9", 443, new Uint8Array([4])));
  assert.equal(s.lines.length, 1);
});

Deno.test("udp handler: denied flow ⇒ drop, logged at most every 60 s per 5-tuple", () => {
  const s = setup(POLICY);
  // QUIC to a host without a udp rule; the 8.8.8.8 rule needs another exe.
  const quic = () => udpPacket("10.0.0.5", 50001, "1.2.3.4", 443, new Uint8Array([0xc0, 0, 0, 1]));
  for (let i = 0; i < 5; i++) assert.equal(s.handler(quic()).verdict, "drop");
  assert.equal(s.handler.counters.denied, 5);
  assert.equal(s.lines.length, 1);
  assert.equal(s.lines[0].policy, "deny");
  assert.equal(s.lines[0].reason, "no matching rule");
  assert.equal(s.handler(udpPacket("10.0.0.5", 50002, "8.8.8.8", 3478, new Uint8Array([0]))).verdict, "drop");
  assert.equal(s.lines.length, 2, "another 5-tuple is logged");
  s.advance(59_000);
  s.handler(quic());
  assert.equal(s.lines.length, 2);
  s.advance(1_000);
  s.handler(quic());
  assert.equal(s.lines.length, 3);
});

Deno.test("udp handler: audit mode accepts a denied flow and logs policy deny", () => {
  const s = setup(POLICY, { audit: true });
  const verdict = s.handler(udpPacket("10.0.0.5", 50003, "1.2.3.4", 5000, new Uint8Array([0])));
  assert.equal(verdict.verdict, "repeat");
  assert.equal(s.lines[0].policy, "deny");
  assert.equal(s.lines[0].audit, true);
});

Deno.test("udp handler: DNS on port 5353 ⇒ repeat with the DNS mark and a rendezvous entry", () => {
  const s = setup(POLICY);
  const packet = udpPacket("10.0.0.5", 41000, "192.0.2.53", 5353, dnsQuery(0x2222, "Example.COM"));
  const verdict = s.handler(packet);
  assert.equal(verdict.verdict, "repeat");
  assert.equal(verdict.mark, DEFAULT_MARKS.dns);
  assert.equal(s.lines.length, 0, "the DNS proxy logs DNS, not the handler");
  const entry = s.rendezvous.take({
    scope: "netns",
    clientIp: "10.0.0.5",
    clientPort: 41000,
    id: 0x2222,
    name: "example.com",
  });
  assert.equal(entry?.resolverIp, "192.0.2.53");
  assert.equal(entry?.resolverPort, 5353);
  assert.equal(entry?.process?.pid, 321);
  assert.equal(entry?.process?.exe, "/usr/bin/app");
});

Deno.test("udp handler: forwarded client is scoped by source; unattributed DNS still goes to the proxy", () => {
  const s = setup(POLICY);
  s.handler(udpPacket("172.17.0.2", 9999, "8.8.8.8", 53, dnsQuery(7, "a.b")));
  const entry = s.rendezvous.take({
    scope: "source",
    clientIp: "172.17.0.2",
    clientPort: 9999,
    id: 7,
    name: "a.b",
  });
  assert.ok(entry);
  assert.equal(entry.process, undefined);
});

Deno.test("udp handler: port 53 garbage still goes to the proxy (no entry); garbage elsewhere is a flow", () => {
  const s = setup(POLICY);
  const verdict = s.handler(udpPacket("10.0.0.5", 41001, "8.8.8.8", 53, new Uint8Array([1, 2, 3])));
  assert.equal(verdict.verdict, "repeat");
  assert.equal(verdict.mark, DEFAULT_MARKS.dns);
  assert.equal(s.rendezvous.size, 0);
  assert.equal(
    s.handler(udpPacket("10.0.0.5", 41002, "8.8.8.8", 54, new Uint8Array([1, 2, 3]))).verdict,
    "drop",
  );
  assert.equal(s.handler.lastKind, "denied");
});

Deno.test("udp handler: malformed, non-UDP, fragments and looped packets ⇒ drop", () => {
  const s = setup("0.0.0.0/0:*/udp");
  const good = udpPacket("10.0.0.5", 1000, "9.9.9.9", 443, new Uint8Array([1]));
  assert.equal(s.handler(good).verdict, "repeat");

  const truncated = { ...good, payloadLength: 24 };
  assert.equal(s.handler(truncated).verdict, "drop");
  assert.equal(s.handler.lastKind, "malformed");

  const tcp = udpPacket("10.0.0.5", 1000, "9.9.9.9", 443, new Uint8Array([1]));
  tcp.bytes[tcp.payloadOffset + 9] = 6;
  assert.equal(s.handler(tcp).verdict, "drop");
  assert.equal(s.handler.lastKind, "not_udp");

  const fragment = udpPacket("10.0.0.5", 1000, "9.9.9.9", 443, new Uint8Array([1]));
  fragment.bytes[fragment.payloadOffset + 6] = 0x20; // more fragments
  assert.equal(s.handler(fragment).verdict, "drop");
  assert.equal(s.handler.lastKind, "fragment");

  const ipv6 = udpPacket("10.0.0.5", 1000, "9.9.9.9", 443, new Uint8Array([1]));
  ipv6.bytes[ipv6.payloadOffset] = 0x60;
  assert.equal(s.handler(ipv6).verdict, "drop");

  const looped = udpPacket("10.0.0.5", 1000, "9.9.9.9", 443, new Uint8Array([1]));
  looped.mark = DEFAULT_MARKS.dns;
  assert.equal(s.handler(looped).verdict, "drop");
  assert.equal(s.handler.lastKind, "loop");
  assert.equal(s.errors.length, 1);
});

Deno.test("udp handler: an exception while judging ⇒ drop and an ERROR line", () => {
  const rendezvous = new Rendezvous();
  const errors: string[] = [];
  const handler = createUdpPacketHandler({
    getEnforcer: () => {
      throw new Error("boom");
    },
    rendezvous,
    log: { write() {} },
    oplog: { debug() {}, info() {}, warn() {}, error: (m) => errors.push(m) },
    marks: DEFAULT_MARKS,
    flowLimiter: new FlowLogLimiter(),
    isLocal: () => true,
  });
  assert.equal(handler(udpPacket("10.0.0.5", 1000, "9.9.9.9", 443, new Uint8Array([1]))).verdict, "drop");
  assert.equal(handler.lastKind, "error");
  assert.match(errors[0], /Cannot judge UDP packet: boom/);
});

Deno.test("udp handler: bad marks are rejected", () => {
  const base = {
    getEnforcer: () => new Enforcer(parsePolicy("")),
    rendezvous: new Rendezvous(),
    log: { write() {} },
    flowLimiter: new FlowLogLimiter(),
    isLocal: () => true,
  };
  assert.throws(() => createUdpPacketHandler({ ...base, marks: { dns: 3, allowedFlow: 4 } }), /single bit/);
  assert.throws(() => createUdpPacketHandler({ ...base, marks: { dns: 4, allowedFlow: 4 } }), /must differ/);
});

Deno.test("udp handler: procDescriber reads exe, cmdline and cgroup of a live process", () => {
  const describe = procDescriber();
  const self = describe(Deno.pid);
  assert.equal(self?.pid, Deno.pid);
  assert.equal(self?.exe, Deno.execPath());
  assert.ok(self?.cmdline && self.cmdline.length > 0);
  // A pid that cannot exist yields just the pid (unknown process, never an error).
  assert.deepEqual(describe(0x7ffffff0), { pid: 0x7ffffff0 });
});
