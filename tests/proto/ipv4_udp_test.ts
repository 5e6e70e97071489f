import assert from "node:assert/strict";
import fc from "fast-check";
import {
  ipv4FromString,
  ipv4HeaderChecksumOk,
  ipv4ToString,
  newIpv4UdpInfo,
  parseIpv4Udp,
  parseIpv4UdpInto,
} from "../../src/proto/ipv4_udp.ts";

type PacketSpec = {
  src?: string;
  dst?: string;
  srcPort?: number;
  dstPort?: number;
  payload?: number[];
  protocol?: number;
  options?: number[];
  flags?: number; // 3 bits
  fragmentOffset?: number; // in 8-byte units
  udpLength?: number;
  totalLength?: number;
};

function buildPacket(spec: PacketSpec = {}): Uint8Array {
  const payload = spec.payload ?? [1, 2, 3, 4, 5];
  const options = spec.options ?? [];
  const headerLength = 20 + options.length;
  const udp = spec.fragmentOffset ? [] : [
    (spec.srcPort ?? 40000) >> 8,
    (spec.srcPort ?? 40000) & 0xff,
    (spec.dstPort ?? 53) >> 8,
    (spec.dstPort ?? 53) & 0xff,
    (spec.udpLength ?? 8 + payload.length) >> 8,
    (spec.udpLength ?? 8 + payload.length) & 0xff,
    0,
    0,
  ];
  const total = spec.totalLength ?? headerLength + udp.length + payload.length;
  const ff = ((spec.flags ?? 0b010) << 13) | (spec.fragmentOffset ?? 0);
  const addr = (s: string) => s.split(".").map(Number);
  const header = [
    0x40 | (headerLength / 4),
    0,
    total >> 8,
    total & 0xff,
    0x12,
    0x34,
    ff >> 8,
    ff & 0xff,
    64,
    spec.protocol ?? 17,
    0,
    0,
    ...addr(spec.src ?? "10.0.0.2"),
    ...addr(spec.dst ?? "192.168.1.1"),
    ...options,
  ];
  let sum = 0;
  for (let i = 0; i < header.length; i += 2) sum += (header[i] << 8) | header[i + 1];
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  const checksum = ~sum & 0xffff;
  header[10] = checksum >> 8;
  header[11] = checksum & 0xff;
  return new Uint8Array([...header, ...udp, ...payload]);
}

Deno.test("IPv4/UDP: fields, addresses, ports, payload", () => {
  const p = buildPacket({
    src: "10.1.2.3",
    dst: "203.0.113.9",
    srcPort: 5353,
    dstPort: 8053,
    payload: [9, 8, 7],
  });
  const info = parseIpv4Udp(p);
  assert.equal(info.status, "udp");
  assert.equal(info.error, "");
  assert.equal(info.version, 4);
  assert.equal(info.ihl, 5);
  assert.equal(info.totalLength, p.length);
  assert.equal(ipv4ToString(info.srcAddr), "10.1.2.3");
  assert.equal(ipv4ToString(info.dstAddr), "203.0.113.9");
  assert.equal(info.srcAddr, ipv4FromString("10.1.2.3"));
  assert.equal(info.srcPort, 5353);
  assert.equal(info.dstPort, 8053);
  assert.equal(info.udpLength, 11);
  assert.equal(info.payloadOffset, 28);
  assert.equal(info.payloadLength, 3);
  assert.deepEqual([...p.subarray(info.payloadOffset, info.payloadOffset + info.payloadLength)], [9, 8, 7]);
  assert.equal(info.dontFragment, true);
  assert.equal(info.isFragment, false);
  assert.equal(info.hasUdpHeader, true);
  assert.equal(info.ttl, 64);
  assert.equal(ipv4HeaderChecksumOk(p), true);
  p[8] = 63;
  assert.equal(ipv4HeaderChecksumOk(p), false, "checksum detects a changed TTL");

  // Options move the payload; a packet inside a larger buffer is parsed at its offset.
  const withOptions = buildPacket({ options: [1, 1, 1, 0], payload: [42] });
  const framed = new Uint8Array([0xaa, 0xbb, ...withOptions, 0xcc]);
  const out = newIpv4UdpInfo();
  assert.equal(parseIpv4UdpInto(framed, out, 2, withOptions.length), "udp");
  assert.equal(out.headerLength, 24);
  assert.equal(out.payloadOffset, 2 + 24 + 8);
  assert.equal(framed[out.payloadOffset], 42);
  // UDP length shorter than the IP payload (padding) is honoured.
  const padded = buildPacket({ payload: [1, 2, 3, 0, 0], udpLength: 11 });
  assert.equal(parseIpv4Udp(padded).payloadLength, 3);
  // Address extremes stay unsigned.
  assert.equal(
    ipv4ToString(parseIpv4Udp(buildPacket({ src: "255.255.255.255" })).srcAddr),
    "255.255.255.255",
  );
  assert.equal(ipv4FromString("256.1.1.1"), undefined);
  assert.equal(ipv4FromString("01.1.1.1"), undefined);
});

Deno.test("IPv4/UDP: fragments, other protocols, malformed packets", () => {
  const later = parseIpv4Udp(buildPacket({ flags: 0b001, fragmentOffset: 185, payload: [1, 2, 3] }));
  assert.equal(later.status, "fragment");
  assert.equal(later.hasUdpHeader, false, "a non-first fragment has no UDP header");
  assert.equal(later.fragmentOffset, 1480);
  assert.equal(later.isFragment, true);
  assert.equal(later.srcPort, 0);

  const first = parseIpv4Udp(buildPacket({ flags: 0b001, payload: [1, 2, 3], udpLength: 2000 }));
  assert.equal(first.status, "udp");
  assert.equal(first.isFragment, true);
  assert.equal(first.moreFragments, true);
  assert.equal(first.hasUdpHeader, true);
  assert.equal(first.payloadLength, 3, "only the part this fragment carries");

  const tcp = parseIpv4Udp(buildPacket({ protocol: 6 }));
  assert.equal(tcp.status, "not_udp");
  assert.equal(tcp.protocol, 6);
  assert.equal(ipv4ToString(tcp.dstAddr), "192.168.1.1");

  const bad = (p: Uint8Array, error: RegExp) => {
    const info = parseIpv4Udp(p);
    assert.equal(info.status, "malformed");
    assert.match(info.error, error);
  };
  bad(new Uint8Array(19), /shorter than an IPv4 header/);
  const v6 = buildPacket();
  v6[0] = 0x60;
  bad(v6, /not IPv4/);
  const ihl = buildPacket();
  ihl[0] = 0x44;
  bad(ihl, /IHL below 5/);
  const longOptions = buildPacket();
  longOptions[0] = 0x4f;
  bad(longOptions.subarray(0, 40), /truncated IPv4 options/);
  bad(buildPacket({ totalLength: 10 }), /total length below header length/);
  bad(buildPacket().subarray(0, 30), /truncated packet/);
  bad(buildPacket({ flags: 0b100 }), /reserved flag/);
  bad(buildPacket({ payload: [], totalLength: 24 }).subarray(0, 24), /truncated UDP header/);
  bad(buildPacket({ udpLength: 4 }), /UDP length below 8/);
  bad(buildPacket({ udpLength: 100 }), /beyond the IP packet/);
  bad(buildPacket({ flags: 0b001, payload: [1, 2, 3], udpLength: 9 }), /below the fragment/);
  const out = newIpv4UdpInfo();
  assert.equal(parseIpv4UdpInto(buildPacket(), out, 5, 1000), "malformed");
  assert.equal(out.error, "bad buffer range");
});

Deno.test("IPv4/UDP: the reusable result object is fully reset between packets", () => {
  const out = newIpv4UdpInfo();
  parseIpv4UdpInto(buildPacket({ srcPort: 1234, payload: [1, 2] }), out);
  assert.equal(out.srcPort, 1234);
  parseIpv4UdpInto(buildPacket({ flags: 0b001, fragmentOffset: 10 }), out);
  assert.equal(out.status, "fragment");
  assert.equal(out.srcPort, 0);
  assert.equal(out.payloadLength, 0);
  assert.equal(out.hasUdpHeader, false);
  parseIpv4UdpInto(new Uint8Array(3), out);
  assert.equal(out.srcAddr, 0);
  assert.equal(out.version, 0);
});

Deno.test("property: arbitrary bytes never throw; udp results stay inside the buffer", () => {
  const out = newIpv4UdpInfo();
  const check = (packet: Uint8Array) => {
    const status = parseIpv4UdpInto(packet, out);
    assert.equal(status, out.status);
    if (status === "udp") {
      assert.ok(out.payloadOffset + out.payloadLength <= packet.length);
      assert.ok(out.payloadOffset >= 28);
    }
    if (status === "malformed") assert.ok(out.error.length > 0);
  };
  fc.assert(fc.property(fc.uint8Array({ maxLength: 120 }), check), { numRuns: 3000 });
  // Valid packets with random mutations exercise the deeper branches.
  const base = buildPacket({ payload: [1, 2, 3, 4, 5, 6, 7, 8] });
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.nat(base.length - 1), fc.integer({ min: 0, max: 255 })), { maxLength: 3 }),
      fc.nat(base.length),
      (muts, cut) => {
        const p = base.slice(0, cut);
        for (const [at, v] of muts) if (at < p.length) p[at] = v;
        check(p);
      },
    ),
    { numRuns: 3000 },
  );
});

Deno.test("hot path: parsing into a reused object is fast (measured, printed)", () => {
  const packet = buildPacket({ payload: new Array(40).fill(0) });
  const out = newIpv4UdpInfo();
  const n = 200_000;
  for (let i = 0; i < 10_000; i++) parseIpv4UdpInto(packet, out); // warm up
  const started = performance.now();
  let ports = 0;
  for (let i = 0; i < n; i++) {
    parseIpv4UdpInto(packet, out);
    ports += out.dstPort;
  }
  const ms = performance.now() - started;
  assert.equal(ports, 53 * n);
  console.log(`parseIpv4UdpInto: ${((ms * 1e6) / n).toFixed(0)} ns/packet`);
  assert.ok(ms / n < 0.05, `${ms / n} ms per packet`);
});
