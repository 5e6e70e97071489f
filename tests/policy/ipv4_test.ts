import assert from "node:assert/strict";
import {
  cidrContains,
  eventIpv4,
  formatIpv4,
  ipInCidr,
  parseCidr,
  parseIpv4,
} from "../../src/policy/ipv4.ts";

Deno.test("parseIpv4 accepts strict dotted quads only", () => {
  assert.equal(parseIpv4("0.0.0.0"), 0);
  assert.equal(parseIpv4("255.255.255.255"), 0xffffffff);
  assert.equal(parseIpv4("10.1.2.3"), (10 << 24) + (1 << 16) + (2 << 8) + 3);
  for (
    const bad of [
      "256.1.1.1",
      "1.2.3",
      "1.2.3.4.5",
      "01.2.3.4",
      "1.2.3.a",
      "",
      "1..2.3",
      " 1.2.3.4",
      "1.2.3.-4",
    ]
  ) {
    assert.equal(parseIpv4(bad), undefined, bad);
  }
});

Deno.test("eventIpv4 maps ::ffff:a.b.c.d and rejects other IPv6", () => {
  assert.equal(eventIpv4("::ffff:8.8.8.8"), parseIpv4("8.8.8.8"));
  assert.equal(eventIpv4("::FFFF:8.8.8.8"), parseIpv4("8.8.8.8"));
  assert.equal(eventIpv4("::1"), undefined);
  assert.equal(eventIpv4("2001:db8::1"), undefined);
  assert.equal(eventIpv4("unknown"), undefined);
});

Deno.test("formatIpv4 round-trips", () => {
  assert.equal(formatIpv4(parseIpv4("192.168.0.254")!), "192.168.0.254");
});

Deno.test("CIDR membership, host bits in the rule allowed", () => {
  assert.equal(ipInCidr("10.200.3.4", "10.0.0.0/8"), true);
  assert.equal(ipInCidr("11.0.0.1", "10.0.0.0/8"), false);
  assert.equal(ipInCidr("10.9.9.9", "10.1.2.3/8"), true);
  assert.equal(ipInCidr("1.2.3.4", "0.0.0.0/0"), true);
  assert.equal(ipInCidr("1.2.3.4", "1.2.3.4/32"), true);
  assert.equal(ipInCidr("1.2.3.5", "1.2.3.4/32"), false);
  assert.equal(ipInCidr("172.31.255.255", "172.16.0.0/12"), true);
  assert.equal(ipInCidr("172.32.0.0", "172.16.0.0/12"), false);
  assert.equal(ipInCidr("::ffff:10.0.0.1", "10.0.0.0/8"), true);
  assert.equal(ipInCidr("::1", "0.0.0.0/0"), false);
  const cidr = parseCidr("192.168.7.9/24")!;
  assert.equal(formatIpv4(cidr.network), "192.168.7.0");
  assert.equal(cidrContains(cidr, parseIpv4("192.168.7.200")!), true);
});

Deno.test("parseCidr rejects malformed masks", () => {
  for (const bad of ["10.0.0.0/33", "10.0.0.0/08", "10.0.0.0/", "10.0.0.0", "10.0.0/8", "10.0.0.0/-1"]) {
    assert.equal(parseCidr(bad), undefined, bad);
  }
});
