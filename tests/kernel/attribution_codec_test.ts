import assert from "node:assert/strict";
import { decodeValue, encodeKey, KEY_SIZE, parseIpv4, VALUE_SIZE } from "../../src/kernel/attribution.ts";
import { hostLittleEndian } from "../../src/kernel/bpf_loader.ts";

Deno.test("attribution codec: keys match struct egress_conn_key byte for byte", () => {
  const netns = encodeKey({
    protocol: "tcp",
    dstIp: "192.0.2.10",
    dstPort: 443,
    clientPort: 40000,
    scope: { kind: "netns", cookie: 0x0102030405060708n },
  });
  assert.equal(netns.length, KEY_SIZE);
  const view = new DataView(netns.buffer);
  assert.deepEqual([...netns.subarray(0, 4)], [192, 0, 2, 10], "address in network order");
  assert.equal(view.getUint16(4, hostLittleEndian), 443);
  assert.equal(view.getUint16(6, hostLittleEndian), 40000);
  assert.deepEqual([netns[8], netns[9]], [6, 1]);
  assert.deepEqual([...netns.subarray(10, 16)], [0, 0, 0, 0, 0, 0], "padding is zero");
  assert.equal(view.getBigUint64(16, hostLittleEndian), 0x0102030405060708n);

  const source = encodeKey({
    protocol: "udp",
    dstIp: "::ffff:198.51.100.7",
    dstPort: 53,
    clientPort: 1,
    scope: { kind: "source", ip: "10.1.2.3" },
  });
  assert.deepEqual([...source.subarray(0, 4)], [198, 51, 100, 7], "v4-mapped text is IPv4");
  assert.deepEqual([source[8], source[9]], [17, 2]);
  // The BPF side widens the network-order __u32 to __u64.
  const widened = new DataView(new Uint8Array([10, 1, 2, 3]).buffer).getUint32(0, hostLittleEndian);
  assert.equal(new DataView(source.buffer).getBigUint64(16, hostLittleEndian), BigInt(widened));
});

Deno.test("attribution codec: bad input is refused with the place named", () => {
  const base = {
    protocol: "tcp" as const,
    dstPort: 1,
    clientPort: 1,
    scope: { kind: "netns" as const, cookie: 1n },
  };
  assert.throws(
    () => encodeKey({ ...base, dstIp: "2001:db8::1" }),
    /Cannot attribute destination "2001:db8::1"/,
  );
  assert.throws(() => encodeKey({ ...base, dstIp: "1.2.3.256" }), /not an IPv4 address/);
  assert.throws(() => encodeKey({ ...base, dstIp: "1.2.3.4", dstPort: 70000 }), /destination port 70000/);
  assert.equal(parseIpv4("01.2.3.4")?.[0], 1);
  assert.equal(parseIpv4("1.2.3"), undefined);
});

Deno.test("attribution codec: values decode struct egress_conn_value", () => {
  const bytes = new Uint8Array(VALUE_SIZE);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, 4242, hostLittleEndian);
  view.setUint32(4, 65534, hostLittleEndian);
  view.setBigUint64(8, 777n, hostLittleEndian);
  view.setBigUint64(16, 123n, hostLittleEndian);
  bytes.set(new TextEncoder().encode("curl"), 24);
  view.setUint32(40, 4243, hostLittleEndian);
  view.setUint32(44, 65533, hostLittleEndian);
  assert.deepEqual(decodeValue(bytes), {
    tgid: 4242,
    uid: 65534,
    cgroupId: 777n,
    recordedNs: 123n,
    comm: "curl",
    pid: 4243,
    gid: 65533,
  });
  bytes.fill(0x41, 24, 40); // 16 bytes, no NUL
  assert.equal(decodeValue(bytes).comm, "A".repeat(16));
});
