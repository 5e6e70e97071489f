// Pure parts of sidecar mode: policy forms, name judging, address ranges, nft transaction text,
// DNS error replies.
import assert from "node:assert/strict";
import {
  compilePolicy,
  deleteTargets,
  judgeName,
  MAX_RULES,
  parseJsonPolicy,
  parsePolicyBody,
  parseTextPolicy,
  patchPolicy,
  policyToJson,
} from "../../src/sidecar/policy.ts";
import { formatIpv6, mergeRanges, parseAddressTarget, parseIpv6 } from "../../src/sidecar/address.ts";
import {
  buildDynamicUpdate,
  buildTableTransaction,
  clampTtl,
  dynamicElementsFor,
  parseCounterPackets,
  staticElements,
} from "../../src/sidecar/nft.ts";
import { answerAddresses, errorReply, RCODE_NXDOMAIN } from "../../src/sidecar/dns.ts";
import { answersQuery, parseUpstream, resolvConfNameservers, withId } from "../../src/sidecar/upstream.ts";
import { hostNetworkReason } from "../../src/sidecar/sidecar.ts";
import { readDnsQuestions } from "../../src/proto/dns_detect.ts";
import dnsPacket from "dns-packet";
import { Buffer } from "node:buffer";

function ok(result: ReturnType<typeof parseJsonPolicy>) {
  if (!result.ok) throw new Error(`unexpected errors: ${JSON.stringify(result.errors)}`);
  return result.policy;
}

Deno.test("json policy: the spec example parses and round-trips through the API view", () => {
  const text = `{"defaultAction": "deny",
   "egress": [{"action": "allow", "target": "pypi.org"},
              {"action": "allow", "target": "*.pythonhosted.org"},
              {"action": "deny",  "target": "10.0.0.0/8"},
              {"action": "allow", "target": "2001:db8::/32", "ports": [443], "protocol": "tcp"}]}`;
  const policy = ok(parseJsonPolicy(text));
  assert.deepEqual(policyToJson(policy), {
    defaultAction: "deny",
    egress: [
      { action: "allow", target: "pypi.org" },
      { action: "allow", target: "*.pythonhosted.org" },
      { action: "deny", target: "10.0.0.0/8" },
      { action: "allow", target: "2001:db8::/32", ports: [443], protocol: "tcp" },
    ],
  });
  assert.deepEqual(compilePolicy(policy).counts, { allow: 3, deny: 1 });
});

Deno.test("json policy: entry errors carry line = index + 1 and column 0; all are reported", () => {
  const result = parseJsonPolicy(JSON.stringify({
    egress: [
      { action: "allow", target: "ok.example.com" },
      { action: "maybe", target: "x.com" },
      { action: "allow", target: "localhost" },
      { action: "allow", target: "x.com", ports: [70000] },
      { action: "allow", target: "1.2.3.4/33" },
      { action: "allow", target: "x.com", exe: "/bin/sh" },
    ],
  }));
  assert.equal(result.ok, false);
  if (result.ok) return;
  assert.deepEqual(result.errors.map((e) => [e.line, e.column]), [[2, 0], [3, 0], [4, 0], [5, 0], [6, 0]]);
  assert.match(result.errors[0].message, /"action" must be "allow" or "deny"/);
  assert.match(result.errors[2].message, /ports/);
  assert.match(result.errors[4].message, /unknown key "exe"/);
  assert.equal(result.errors[1].text, JSON.stringify({ action: "allow", target: "localhost" }));
});

Deno.test("json policy: syntax errors point at the line, bad shapes are line 0", () => {
  const bad = parseJsonPolicy('{"egress": [\n  {"target": "a.com",}\n]}');
  assert.equal(bad.ok, false);
  if (!bad.ok) {
    assert.match(bad.errors[0].message, /^invalid JSON/);
    assert.ok(bad.errors[0].line >= 1);
  }
  const notObject = parseJsonPolicy("[1,2]");
  assert.equal(notObject.ok, false);
  if (!notObject.ok) assert.equal(notObject.errors[0].line, 0);
});

Deno.test("text policy: network rules become allow entries with ports and protocol", () => {
  const policy = ok(
    parseTextPolicy(
      "pypi.org\n# comment\n  *.svc.cluster.local:*   # inline\n10.1.2.3/8:53/udp\ndns:only.example.com\n",
    ),
  );
  assert.deepEqual(policy, {
    defaultAction: "deny",
    egress: [
      { action: "allow", target: "pypi.org", ports: [443], protocol: "tcp", source: "pypi.org" },
      {
        action: "allow",
        target: "*.svc.cluster.local",
        ports: "*",
        protocol: "tcp",
        source: "*.svc.cluster.local:*",
      },
      { action: "allow", target: "10.1.2.3/8", ports: [53], protocol: "udp", source: "10.1.2.3/8:53/udp" },
      { action: "allow", target: "dns:only.example.com", source: "dns:only.example.com" },
    ],
  });
  // the API view leaves the source out
  assert.deepEqual(Object.keys(policyToJson(policy).egress[0]), ["action", "target", "ports", "protocol"]);
});

Deno.test("text policy: URL rules, attributes and flags are not supported in sidecar mode", () => {
  const result = parseTextPolicy(
    "ok.com\nhttps://a.com/x\nb.com exe=/bin/sh\nc.com passthrough\n[cgroup=@docker]\nd.com\n",
  );
  assert.equal(result.ok, false);
  if (result.ok) return;
  assert.deepEqual(result.errors.map((e) => [e.line, e.column]), [[2, 1], [3, 7], [4, 7], [6, 1]]);
  for (const e of result.errors) assert.match(e.message, /not supported in sidecar mode/);
});

Deno.test("text policy: syntax errors keep the library's line and column", () => {
  const result = parseTextPolicy("a.com\nb.com:70000\n");
  assert.equal(result.ok, false);
  if (result.ok) return;
  assert.equal(result.errors[0].line, 2);
  assert.equal(result.errors[0].column, 7);
  assert.match(result.errors[0].message, /70000/);
});

Deno.test("policy cap: 4096 rules are fine, 4097 are refused", () => {
  const entries = (n: number) =>
    Array.from({ length: n }, (_, i) => ({ target: `10.${i >> 8}.${i & 255}.1` }));
  assert.equal(parseJsonPolicy(JSON.stringify({ egress: entries(MAX_RULES) })).ok, true);
  const over = parseJsonPolicy(JSON.stringify({ egress: entries(MAX_RULES + 1) }));
  assert.equal(over.ok, false);
  if (!over.ok) assert.equal(over.errors[0].message, "at most 4096 rules");
  const text = Array.from({ length: MAX_RULES + 1 }, (_, i) => `h${i}.example.com`).join("\n");
  const overText = parseTextPolicy(text);
  assert.equal(overText.ok, false);
  const base = ok(parseJsonPolicy(JSON.stringify({ egress: entries(MAX_RULES) })));
  const patched = patchPolicy(
    base,
    { defaultAction: "deny", egress: [{ action: "allow", target: "x.com" }] },
    false,
  );
  assert.equal(patched.ok, false);
});

Deno.test("empty body is deny-all", () => {
  assert.deepEqual(ok(parsePolicyBody("  \n", "json")), { defaultAction: "deny", egress: [] });
  assert.deepEqual(ok(parsePolicyBody("", "text")), { defaultAction: "deny", egress: [] });
});

Deno.test("patch replaces same targets (case-insensitive), delete removes them", () => {
  const base = ok(parseJsonPolicy('{"egress":[{"target":"A.com"},{"target":"b.com"}]}'));
  const patched = patchPolicy(
    base,
    ok(parseJsonPolicy('{"egress":[{"target":"a.com","ports":[22]}]}')),
    false,
  );
  assert.ok(patched.ok);
  if (!patched.ok) return;
  assert.deepEqual(patched.policy.egress, [{ action: "allow", target: "b.com" }, {
    action: "allow",
    target: "a.com",
    ports: [22],
  }]);
  assert.deepEqual(deleteTargets(patched.policy, ["B.COM"]).egress.map((e) => e.target), ["a.com"]);
});

Deno.test("judgeName: deny beats allow, wildcards, dns: rules grant no addresses, defaultAction", () => {
  const compiled = compilePolicy(ok(parseJsonPolicy(JSON.stringify({
    egress: [
      { target: "*.example.com", ports: [443] },
      { action: "deny", target: "bad.example.com" },
      { target: "dns:resolve-only.net" },
      { target: "Api.Example.com", protocol: "udp" },
    ],
  }))));
  const api = judgeName(compiled, "API.example.com.");
  assert.equal(api.policy, "allow");
  assert.deepEqual(api.grants.map((g) => g.index), [0, 3]);
  const bad = judgeName(compiled, "bad.example.com");
  assert.equal(bad.policy, "deny");
  assert.equal(bad.entry?.index, 1);
  assert.equal(bad.reason, "rule matched"); // policy.md §10.7 reasons
  const dnsOnly = judgeName(compiled, "resolve-only.net");
  assert.equal(dnsOnly.policy, "allow");
  assert.deepEqual(dnsOnly.grants, []);
  assert.equal(judgeName(compiled, "example.com").policy, "deny");
  assert.equal(judgeName(compiled, "example.com").reason, "name not allowed");
  const open = compilePolicy(
    ok(parseJsonPolicy('{"defaultAction":"allow","egress":[{"action":"deny","target":"x.org"}]}')),
  );
  assert.equal(judgeName(open, "y.org").policy, "allow");
  assert.equal(judgeName(open, "x.org").policy, "deny");
});

Deno.test("addresses: IPv6 parsing and formatting, CIDR ranges, merging", () => {
  assert.equal(formatIpv6(parseIpv6("2001:0db8:0:0:0:0:0:1")!), "2001:db8::1");
  assert.equal(formatIpv6(parseIpv6("::ffff:1.2.3.4")!), "::ffff:102:304");
  assert.equal(parseIpv6("1::2::3"), undefined);
  assert.equal(parseIpv6("12345::"), undefined);
  assert.equal(parseAddressTarget("2001:db8::/129"), undefined);
  const v6 = parseAddressTarget("2001:db8::1/32")!;
  assert.equal(formatIpv6(v6.first), "2001:db8::");
  assert.equal(formatIpv6(v6.last), "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff");
  const merged = mergeRanges([
    parseAddressTarget("10.1.0.0/16")!,
    parseAddressTarget("10.0.0.0/8")!,
    parseAddressTarget("11.0.0.0/8")!,
    parseAddressTarget("13.0.0.1")!,
  ]);
  assert.deepEqual(merged.map((r) => [r.first, r.last]), [
    [0x0a000000n, 0x0bffffffn],
    [0x0d000001n, 0x0d000001n],
  ]);
});

Deno.test("nft: static elements are merged per protocol/port key; table text has the chain order", () => {
  const compiled = compilePolicy(ok(parseJsonPolicy(JSON.stringify({
    egress: [
      { target: "10.0.0.0/8", ports: [443], protocol: "tcp" },
      { target: "10.1.0.0/16", ports: [443], protocol: "tcp" },
      { target: "10.2.0.0/16", ports: [53] },
      { action: "deny", target: "2001:db8::/32" },
      { target: "192.0.2.1", protocol: "udp" },
    ],
  }))));
  assert.deepEqual(staticElements(compiled, "allow", 4, "port"), [
    "10.0.0.0-10.255.255.255 . tcp . 443",
    "10.2.0.0-10.2.255.255 . tcp . 53",
    "10.2.0.0-10.2.255.255 . udp . 53",
  ]);
  assert.deepEqual(staticElements(compiled, "deny", 6, "addr"), [
    "2001:db8::-2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
  ]);
  assert.deepEqual(staticElements(compiled, "allow", 4, "proto"), ["192.0.2.1 . udp"]);
  const text = buildTableTransaction({
    filter: true,
    mark: 1,
    uid: 0,
    upstreams: [{ address: "192.0.2.53", port: 53 }, { address: "2001:db8::53", port: 5353 }],
    dnsPort: 15053,
    defaultAction: "deny",
    compiled,
    doh: [parseAddressTarget("9.9.9.9")!],
    dynamic: [{ family: 4, shape: "addr", address: "1.2.3.4", timeoutSeconds: 60 }],
    recreate: false,
  });
  const lines = text.trim().split("\n");
  assert.deepEqual(lines.slice(0, 2), ["add table inet egress", "flush table inet egress"]);
  const order = [
    "oif lo fib saddr type != local counter name", // forged loopback sources, before anything else
    "oif lo accept",
    "ct state established,related accept",
    "meta mark 0x1 meta skuid 0 ip daddr . udp dport @upstream4 accept",
    "th dport 853",
    "@doh4",
    "@deny4_addr",
    "@allow4_addr",
    "@dyn4_addr",
    "output counter name",
  ];
  const positions = order.map((needle) =>
    lines.findIndex((l) => l.startsWith("add rule inet egress output") && l.includes(needle))
  );
  assert.ok(positions.every((p) => p >= 0), JSON.stringify(positions));
  assert.deepEqual([...positions].sort((a, b) => a - b), positions);
  assert.ok(lines.includes("add element inet egress doh4 { 9.9.9.9 }"));
  assert.ok(lines.includes("add element inet egress dyn4_addr { 1.2.3.4 timeout 60s }"));
  assert.ok(lines.some((l) => l.includes("policy drop;")));
  assert.ok(lines.includes("add rule inet egress dns_redirect meta mark 0x1 meta skuid 0 return"));
  // the mark alone never accepts: CAP_NET_RAW can set it (see docs/sidecar.md, Limits)
  assert.ok(!lines.some((l) => /meta mark 0x1 accept/.test(l)));
  assert.ok(lines.includes("add element inet egress upstream4 { 192.0.2.53 . 53 }"));
  assert.ok(lines.includes("add element inet egress upstream6 { 2001:db8::53 . 5353 }"));
  assert.ok(lines.includes("flush set inet egress upstream6"));
  const dnsOnly = buildTableTransaction({
    filter: false,
    mark: 2,
    uid: 7,
    upstreams: [],
    dnsPort: 5353,
    defaultAction: "deny",
    compiled,
    doh: [],
    dynamic: [],
    recreate: true,
  });
  assert.ok(!dnsOnly.includes("chain inet egress output"));
  assert.ok(dnsOnly.includes("udp dport 53 redirect to :5353"));
  assert.ok(dnsOnly.includes("dns_redirect meta mark 0x2 meta skuid 7 return"));
  assert.ok(dnsOnly.includes("delete table inet egress"));
});

Deno.test("nft: TTL clamp and dynamic refresh transaction", () => {
  assert.deepEqual([clampTtl(0), clampTtl(30), clampTtl(200), clampTtl(86400)], [60, 60, 200, 360]);
  const compiled = compilePolicy(ok(parseTextPolicy("a.com:80|443\nb.com:*/udp\n")));
  const elements = dynamicElementsFor(compiled.entries, 4, 0x01020304n, 120);
  assert.deepEqual(elements.map((e) => [e.shape, e.protocol, e.port]), [
    ["port", "tcp", 80],
    ["port", "tcp", 443],
    ["proto", "udp", undefined],
  ]);
  // new elements: a plain add; existing ones: add/delete/add so the new timeout takes effect
  const update = buildDynamicUpdate([elements[2]], elements.slice(0, 2)).trim().split("\n");
  assert.deepEqual(update, [
    "add element inet egress dyn4_port { 1.2.3.4 . tcp . 80 timeout 120s, 1.2.3.4 . tcp . 443 timeout 120s }",
    "delete element inet egress dyn4_port { 1.2.3.4 . tcp . 80, 1.2.3.4 . tcp . 443 }",
    "add element inet egress dyn4_port { 1.2.3.4 . tcp . 80 timeout 120s, 1.2.3.4 . tcp . 443 timeout 120s }",
    "add element inet egress dyn4_proto { 1.2.3.4 . udp timeout 120s }",
  ]);
  assert.deepEqual(
    buildDynamicUpdate([elements[0], { ...elements[0], timeoutSeconds: 300 }]).trim().split("\n"),
    [
      "add element inet egress dyn4_port { 1.2.3.4 . tcp . 80 timeout 300s }",
    ],
  );
  assert.equal(buildDynamicUpdate([]), "");
  assert.equal(parseCounterPackets("counter dropped {\n packets 17 bytes 900\n}"), 17);
});

Deno.test("dns: NXDOMAIN reply keeps id and question; answers yield A/AAAA with min TTL", () => {
  const query = new Uint8Array(dnsPacket.encode({
    type: "query",
    id: 0xbeef,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type: "A", name: "Denied.Example.com" }],
    additionals: [{ type: "OPT", name: ".", udpPayloadSize: 1232 }],
  }));
  const reply = errorReply(query, RCODE_NXDOMAIN)!;
  const decoded = dnsPacket.decode(Buffer.from(reply));
  assert.equal(decoded.id, 0xbeef);
  assert.equal(decoded.rcode, "NXDOMAIN");
  assert.equal(decoded.type, "response");
  assert.equal(decoded.flag_rd, true);
  assert.equal(decoded.questions?.[0].name, "Denied.Example.com");
  assert.equal(decoded.additionals?.length, 0);
  const read = readDnsQuestions(reply);
  assert.ok(read.kind === "ok" && read.questions[0].name === "denied.example.com");

  const answer = new Uint8Array(dnsPacket.encode({
    type: "response",
    id: 1,
    questions: [{ type: "A", name: "a.com" }],
    answers: [
      { type: "CNAME", name: "a.com", ttl: 10, data: "b.net" },
      { type: "A", name: "b.net", ttl: 300, data: "192.0.2.7" },
      { type: "AAAA", name: "b.net", ttl: 120, data: "2001:db8::7" },
    ],
  }));
  const parsed = answerAddresses(answer);
  assert.deepEqual(parsed.addresses.map((a) => a.text), ["192.0.2.7", "2001:db8::7"]);
  assert.equal(parsed.ttl, 120);
});

Deno.test("upstreams and host-network check", () => {
  assert.deepEqual(parseUpstream("10.96.0.10"), { address: "10.96.0.10", port: 53 });
  assert.deepEqual(parseUpstream("10.96.0.10:5353"), { address: "10.96.0.10", port: 5353 });
  assert.deepEqual(parseUpstream("[fd00::a]:54"), { address: "fd00::a", port: 54 });
  assert.deepEqual(parseUpstream("fd00::a"), { address: "fd00::a", port: 53 });
  assert.equal(parseUpstream("dns.google"), undefined);
  assert.deepEqual(
    resolvConfNameservers("search x\nnameserver 10.0.0.10\nnameserver fe80::1%eth0\n#nameserver 1.1.1.1\n"),
    [
      { address: "10.0.0.10", port: 53 },
      { address: "fe80::1", port: 53 },
    ],
  );
  const dev = "Inter-|\n face |\n    lo: 0 0\n  eth0: 0 0\n";
  assert.match(
    hostNetworkReason({ podIp: "10.0.0.5", hostIp: "10.0.0.5" }, () => "", () => false)!,
    /EGRESS_POD_IP/,
  );
  assert.match(hostNetworkReason({}, () => dev, (p) => p === "/sys/class/net/eth0/device")!, /eth0/);
  assert.equal(
    hostNetworkReason({ podIp: "10.0.0.5", hostIp: "10.0.0.6" }, () => dev, () => false),
    undefined,
  );
});

Deno.test("upstream replies: our id, a response, and the same question (names case-insensitive)", () => {
  const query = new Uint8Array(dnsPacket.encode({
    id: 0x4242,
    type: "query",
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type: "A", name: "pypi.org" }],
  }));
  const sent = withId(query, 0x0707);
  assert.deepEqual([sent[0], sent[1], query[0], query[1]], [0x07, 0x07, 0x42, 0x42]); // a copy
  const reply = (id: number, name: string, type: "A" | "AAAA" = "A", response = true) =>
    new Uint8Array(dnsPacket.encode({
      id,
      type: response ? "response" : "query",
      flags: response ? 0x8180 : 0x0100,
      questions: [{ type, name }],
      answers: response ? [{ type: "A", name, ttl: 60, data: "192.0.2.1" }] : [],
    }));
  assert.equal(answersQuery(sent, reply(0x0707, "PyPI.org")), true);
  assert.equal(answersQuery(sent, reply(0x4242, "pypi.org")), false); // the client's id: forged
  assert.equal(answersQuery(sent, reply(0x0707, "evil.org")), false);
  assert.equal(answersQuery(sent, reply(0x0707, "pypi.org", "AAAA")), false);
  assert.equal(answersQuery(sent, reply(0x0707, "pypi.org", "A", false)), false); // not a response
  assert.equal(answersQuery(sent, new Uint8Array([0x07, 0x07])), false);
});
