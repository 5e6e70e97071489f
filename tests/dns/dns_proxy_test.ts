// The DNS proxy on 127.0.0.1 against a real upstream server on 127.0.0.2, with real clients (dig,
// node's dns.Resolver, python3, node:dgram sockets). Unprivileged: no steering; the original
// destination comes from rendezvous entries the test records (as the queue consumer would) or
// from an injected origin resolver standing in for conntrack.

import assert from "node:assert/strict";
import { parsePolicy } from "../../src/policy/policy.ts";
import { Enforcer } from "../../src/policy/enforcer.ts";
import type { ConnectionLogEvent } from "../../src/log/connection_log.ts";
import { type DnsOrigin, type DnsOriginResolver, DnsProxy, parseUpstream } from "../../src/dns/dns_proxy.ts";
import { Rendezvous } from "../../src/dns/rendezvous.ts";
import { commandExists, testWhen, unmet } from "../helpers/requirements.ts";
import {
  decode,
  encodeQuery,
  type FakeUpstream,
  freeUdpPort,
  startFakeUpstream,
  udpExchange,
} from "./fake_upstream.ts";

const DIG = "/usr/bin/dig";
const NODE = ["/usr/bin/node", "/usr/local/bin/node"].find(commandExists);
const PYTHON = "/usr/bin/python3";

type Setup = {
  proxy: DnsProxy;
  upstream: FakeUpstream;
  enforcer: Enforcer;
  lines: ConnectionLogEvent[];
  warnings: string[];
  rendezvous: Rendezvous;
  server: { ip: string; port: number };
  close(): Promise<void>;
};

const PROCESS = { pid: 4242, exe: "/usr/bin/dig", cmdline: ["dig", "x"], cgroup: "/test.slice" };

function policyText(upstreamPort: number): string {
  return [
    `127.0.0.2:${upstreamPort}/udp`,
    "allowed.example.com",
    "*.wild.example.com",
    "dns:dnsonly.example.com",
    "[exe=/usr/bin/special]",
    "special.example.com",
  ].join("\n");
}

async function setup(
  options: {
    origin?: "upstream" | "none" | ((client: { ip: string; port: number }) => DnsOrigin | undefined);
    audit?: boolean;
    timeoutMs?: number;
    upstreams?: string[];
  } = {},
): Promise<Setup> {
  const upstream = await startFakeUpstream("127.0.0.2");
  const policy = parsePolicy(policyText(upstream.port));
  const enforcer = new Enforcer(policy, { audit: options.audit === true, corroborate: true });
  const lines: ConnectionLogEvent[] = [];
  const warnings: string[] = [];
  const rendezvous = new Rendezvous();
  const upstreamOrigin = (port: number): DnsOrigin => ({
    dstIp: upstream.ip,
    dstPort: upstream.port,
    srcPort: port,
    process: PROCESS,
  });
  const choice = options.origin ?? "upstream";
  const origins: DnsOriginResolver = {
    udp: (client) =>
      Promise.resolve(
        choice === "none" ? undefined : choice === "upstream" ? upstreamOrigin(client.port) : choice(client),
      ),
    tcp: (conn) =>
      Promise.resolve(
        choice === "none"
          ? undefined
          : choice === "upstream"
          ? upstreamOrigin(conn.peerPort)
          : choice({ ip: conn.peerIp, port: conn.peerPort }),
      ),
  };
  const proxy = await DnsProxy.start({
    port: 0,
    hostname: "127.0.0.1",
    getEnforcer: () => enforcer,
    getPolicy: () => policy,
    rendezvous,
    log: { write: (line) => lines.push(line) },
    oplog: { debug() {}, info() {}, warn: (m) => warnings.push(m), error: (m) => warnings.push(m) },
    origins,
    isLocal: (ip) => ip.startsWith("127."),
    audit: options.audit,
    timeoutMs: options.timeoutMs,
    upstreams: options.upstreams?.map(parseUpstream),
  });
  return {
    proxy,
    upstream,
    enforcer,
    lines,
    warnings,
    rendezvous,
    server: { ip: "127.0.0.1", port: proxy.port },
    async close() {
      await proxy.close();
      await upstream.close();
    },
  };
}

async function run(cmd: string, args: string[], stdin?: string): Promise<string> {
  const child = new Deno.Command(cmd, {
    args,
    stdout: "piped",
    stderr: "piped",
    stdin: stdin ? "piped" : "null",
  })
    .spawn();
  if (stdin) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(stdin));
    await writer.close();
  }
  const output = await child.output();
  return new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
}

function dig(server: { port: number }, ...args: string[]): Promise<string> {
  return run(DIG, ["@127.0.0.1", "-p", String(server.port), "+tries=1", "+time=3", ...args]);
}

function status(digOutput: string): string | undefined {
  return /status: ([A-Z]+)/.exec(digOutput)?.[1];
}

function dnsLines(lines: ConnectionLogEvent[], type: "dns" | "dns_response" = "dns"): ConnectionLogEvent[] {
  return lines.filter((line) => line.type === type);
}

const noDig = unmet([[commandExists(DIG), "needs dig (dnsutils)"]]);

testWhen(noDig, "dns proxy: allowed name is forwarded, answered and logged with process fields", async () => {
  const s = await setup();
  try {
    const out = await dig(s.server, "+short", "allowed.example.com", "A");
    assert.equal(out.trim(), "192.0.2.1");
    assert.equal(s.upstream.seen.length, 1);
    const [query] = dnsLines(s.lines);
    assert.equal(query.policy, "allow");
    assert.equal(query.name, "allowed.example.com");
    assert.equal(query.dst_ip, "127.0.0.2");
    assert.equal(query.dst_port, s.upstream.port);
    assert.equal(query.rule, "allowed.example.com");
    assert.equal(query.line, 2);
    assert.equal(query.pid, 4242);
    assert.equal(query.exe, "/usr/bin/dig");
    const [response] = dnsLines(s.lines, "dns_response");
    assert.deepEqual(response.answers, ["192.0.2.1"]);
    assert.equal(response.ttl, 120);
    assert.equal(response.policy, "allow");
  } finally {
    await s.close();
  }
});

testWhen(
  noDig,
  "dns proxy: denied name gets REFUSED with the same id and question, nothing forwarded",
  async () => {
    const s = await setup();
    try {
      const query = encodeQuery(0xbeef, ["denied.example.org"]);
      const reply = await udpExchange(s.server, query);
      assert.ok(reply, "no reply");
      const decoded = decode(reply);
      assert.equal(decoded.id, 0xbeef);
      assert.equal(decoded.rcode, "REFUSED");
      assert.equal(decoded.questions?.[0].name, "denied.example.org");
      assert.equal(decoded.answers?.length, 0);
      assert.equal(s.upstream.seen.length, 0);
      const [line] = dnsLines(s.lines);
      assert.equal(line.policy, "deny");
      assert.equal(line.reason, "name not allowed");
      // And dig sees the same.
      assert.equal(status(await dig(s.server, "other.invalid-name.org")), "REFUSED");
    } finally {
      await s.close();
    }
  },
);

testWhen(noDig, "dns proxy: wildcard, dns: rules and attributes", async () => {
  const s = await setup();
  try {
    assert.equal((await dig(s.server, "+short", "a.wild.example.com")).trim(), "192.0.2.1");
    assert.equal(status(await dig(s.server, "wild.example.com")), "REFUSED");
    s.upstream.answers.set("dnsonly.example.com", ["192.0.2.77"]);
    assert.equal((await dig(s.server, "+short", "dnsonly.example.com")).trim(), "192.0.2.77");
    // dns: rules only permit the name: a TCP connection to the answer is still denied.
    const tcp = s.enforcer.decide({ type: "tcp", dst_ip: "192.0.2.77", dst_port: 443 });
    assert.equal(tcp.policy, "deny");
    // special.example.com needs exe=/usr/bin/special; the injected process is /usr/bin/dig.
    assert.equal(status(await dig(s.server, "special.example.com")), "REFUSED");
    const names = dnsLines(s.lines).map((line) => `${line.name}:${line.policy}`);
    assert.deepEqual(names, [
      "a.wild.example.com:allow",
      "wild.example.com:deny",
      "dnsonly.example.com:allow",
      "special.example.com:deny",
    ]);
  } finally {
    await s.close();
  }
});

testWhen(noDig, "dns proxy: resolver not allowed by a udp rule is refused", async () => {
  const s = await setup({
    origin: (client) => ({ dstIp: "127.0.0.3", dstPort: 53, srcPort: client.port }),
  });
  try {
    assert.equal(status(await dig(s.server, "allowed.example.com")), "REFUSED");
    const [line] = dnsLines(s.lines);
    assert.equal(line.reason, "resolver not allowed");
    assert.equal(line.dst_ip, "127.0.0.3");
    assert.equal(s.upstream.seen.length, 0);
  } finally {
    await s.close();
  }
});

Deno.test("dns proxy: no question ⇒ FORMERR, several ⇒ REFUSED, malformed ⇒ dropped", async () => {
  const s = await setup();
  try {
    const empty = encodeQuery(7, []);
    const formerr = decode((await udpExchange(s.server, empty))!);
    assert.equal(formerr.id, 7);
    assert.equal(formerr.rcode, "FORMERR");
    const multiple = decode(
      (await udpExchange(s.server, encodeQuery(8, ["allowed.example.com", "b.example.com"])))!,
    );
    assert.equal(multiple.id, 8);
    assert.equal(multiple.rcode, "REFUSED");
    assert.equal(multiple.questions?.length, 2);
    const lines = dnsLines(s.lines).map((line) => [line.name, line.policy, line.reason]);
    assert.deepEqual(lines, [["", "deny", "no question"], [
      "allowed.example.com",
      "deny",
      "multiple questions",
    ]]);
    // Garbage, a truncated question and a response are dropped without a reply.
    const garbage = new Uint8Array([1, 2, 3, 4, 5]);
    assert.equal(await udpExchange(s.server, garbage, { timeoutMs: 300 }), undefined);
    const truncated = encodeQuery(9, ["allowed.example.com"]).subarray(0, 20);
    assert.equal(await udpExchange(s.server, truncated, { timeoutMs: 300 }), undefined);
    const response = encodeQuery(10, ["allowed.example.com"]);
    response[2] |= 0x80;
    assert.equal(await udpExchange(s.server, response, { timeoutMs: 300 }), undefined);
    assert.equal(s.proxy.stats.dropped, 3);
    assert.ok(s.warnings.some((w) => w.startsWith("DNS query dropped: malformed")), s.warnings.join("\n"));
    assert.equal(s.upstream.seen.length, 0);
    // Still serving.
    const ok = decode((await udpExchange(s.server, encodeQuery(11, ["allowed.example.com"])))!);
    assert.equal(ok.rcode, "NOERROR");
  } finally {
    await s.close();
  }
});

Deno.test("dns proxy: TXT random-subdomain exfiltration is refused and logged", async () => {
  const s = await setup();
  try {
    for (let i = 0; i < 5; i++) {
      const label = crypto.getRandomValues(new Uint8Array(12)).reduce((t, b) => t + b.toString(16), "");
      const reply = decode(
        (await udpExchange(s.server, encodeQuery(100 + i, [`${label}.exfil.example.net`], { type: "TXT" })))!,
      );
      assert.equal(reply.rcode, "REFUSED");
    }
    const lines = dnsLines(s.lines);
    assert.equal(lines.length, 5);
    for (const line of lines) {
      assert.equal(line.policy, "deny");
      assert.match(line.name!, /^[0-9a-f]+\.exfil\.example\.net$/);
    }
    assert.equal(s.upstream.seen.length, 0);
  } finally {
    await s.close();
  }
});

Deno.test("dns proxy: upstream timeout ⇒ SERVFAIL and an operational warning", async () => {
  const s = await setup({ timeoutMs: 300 });
  try {
    const started = Date.now();
    const reply = decode((await udpExchange(s.server, encodeQuery(21, ["slow.wild.example.com"])))!);
    assert.equal(reply.rcode, "SERVFAIL");
    assert.equal(reply.id, 21);
    assert.ok(Date.now() - started >= 290);
    assert.ok(s.warnings.some((w) => w.includes("DNS upstream failed")), s.warnings.join("\n"));
    assert.equal(dnsLines(s.lines, "dns_response").length, 0);
  } finally {
    await s.close();
  }
});

Deno.test("dns proxy: 5 s default deadline", async () => {
  const s = await setup();
  try {
    const started = Date.now();
    const reply = decode(
      (await udpExchange(s.server, encodeQuery(22, ["slow.wild.example.com"]), { timeoutMs: 7000 }))!,
    );
    const elapsed = Date.now() - started;
    assert.equal(reply.rcode, "SERVFAIL");
    assert.ok(elapsed >= 4900 && elapsed < 6500, `elapsed ${elapsed}`);
  } finally {
    await s.close();
  }
});

Deno.test("dns proxy: answers fill the DNS cache before the reply (later tcp decision by IP)", async () => {
  const s = await setup();
  try {
    s.upstream.answers.set("allowed.example.com", ["192.0.2.55"]);
    const before = s.enforcer.decide({ type: "tcp", dst_ip: "192.0.2.55", dst_port: 443 });
    assert.equal(before.policy, "deny");
    const reply = decode((await udpExchange(s.server, encodeQuery(31, ["Allowed.Example.COM."])))!);
    assert.equal(reply.rcode, "NOERROR");
    // Same id, relayed unchanged (name case as the upstream echoed it).
    assert.equal(reply.id, 31);
    const after = s.enforcer.decide({ type: "tcp", dst_ip: "192.0.2.55", dst_port: 443 });
    assert.equal(after.policy, "allow");
    assert.equal(after.hostname, "allowed.example.com");
    // A denied name's answer never reaches the cache (it is never forwarded).
    await udpExchange(s.server, encodeQuery(32, ["denied.example.org"]));
    assert.equal(s.enforcer.decide({ type: "tcp", dst_ip: "192.0.2.1", dst_port: 443 }).policy, "deny");
  } finally {
    await s.close();
  }
});

testWhen(
  noDig,
  "dns proxy: EDNS passes through; TC answers are relayed and dig retries over TCP",
  async () => {
    const s = await setup();
    try {
      const edns = decode(
        (await udpExchange(s.server, encodeQuery(41, ["allowed.example.com"], { udpPayloadSize: 4000 })))!,
      );
      assert.equal(edns.rcode, "NOERROR");
      assert.equal(s.upstream.seen[0].udpPayloadSize, 4000);
      assert.ok(edns.additionals?.some((r: { type: string }) => r.type === "OPT"), "OPT record not relayed");

      const truncated = decode((await udpExchange(s.server, encodeQuery(42, ["big.wild.example.com"])))!);
      assert.equal(truncated.flag_tc, true);
      assert.equal(truncated.answers?.length, 0);

      const out = await dig(s.server, "+short", "big.wild.example.com");
      assert.deepEqual(out.trim().split("\n").sort(), ["192.0.2.101", "192.0.2.102", "192.0.2.103"]);
      const transports = s.upstream.seen.filter((q) => q.name === "big.wild.example.com").map((q) =>
        q.transport
      );
      assert.deepEqual(transports, ["udp", "udp", "tcp"]);
      const [tcpResponse] = dnsLines(s.lines, "dns_response").filter((l) => l.answers?.length === 3);
      assert.equal(tcpResponse.ttl, 120);
    } finally {
      await s.close();
    }
  },
);

testWhen(noDig, "dns proxy: DNS over TCP is judged the same way", async () => {
  const s = await setup();
  try {
    assert.equal((await dig(s.server, "+tcp", "+short", "allowed.example.com")).trim(), "192.0.2.1");
    assert.equal(status(await dig(s.server, "+tcp", "denied.example.org")), "REFUSED");
    assert.deepEqual(s.upstream.seen.map((q) => q.transport), ["tcp"]);
    const lines = dnsLines(s.lines).map((line) => `${line.name}:${line.policy}`);
    assert.deepEqual(lines, ["allowed.example.com:allow", "denied.example.org:deny"]);
    // Unknown original destination over TCP ⇒ refused.
  } finally {
    await s.close();
  }
  const unknown = await setup({ origin: "none" });
  try {
    assert.equal(status(await dig(unknown.server, "+tcp", "allowed.example.com")), "REFUSED");
    const [line] = dnsLines(unknown.lines);
    assert.equal(line.dst_ip, "unknown");
    assert.equal(line.reason, "original destination unknown");
  } finally {
    await unknown.close();
  }
});

Deno.test("dns proxy: handleDnsOverTcp serves a stream whose first bytes were already read", async () => {
  const s = await setup();
  try {
    const framed = (bytes: Uint8Array) => {
      const out = new Uint8Array(bytes.length + 2);
      out[0] = bytes.length >> 8;
      out[1] = bytes.length & 0xff;
      out.set(bytes, 2);
      return out;
    };
    const first = framed(encodeQuery(51, ["allowed.example.com"]));
    const second = framed(encodeQuery(52, ["denied.example.org"]));
    const written: Uint8Array[] = [];
    let reads = 0;
    const stream = {
      read: (buffer: Uint8Array) => {
        if (reads++ > 0) return Promise.resolve(null);
        buffer.set(second);
        return Promise.resolve(second.length);
      },
      write: (bytes: Uint8Array) => {
        written.push(bytes.slice());
        return Promise.resolve(bytes.length);
      },
      close() {},
    };
    await s.proxy.handleDnsOverTcp(stream, first, {
      dstIp: s.upstream.ip,
      dstPort: s.upstream.port,
      srcPort: 40000,
      process: PROCESS,
    });
    assert.equal(written.length, 2);
    assert.equal(decode(written[0].subarray(2)).rcode, "NOERROR");
    assert.equal(decode(written[0].subarray(2)).id, 51);
    assert.equal(decode(written[1].subarray(2)).rcode, "REFUSED");
    assert.equal(dnsLines(s.lines)[0].src_port, 40000);
  } finally {
    await s.close();
  }
});

Deno.test("dns proxy: rendezvous entries from two clients with colliding ids are not mixed", async () => {
  const s = await setup({ origin: "none" });
  try {
    const ports = [await freeUdpPort(), await freeUdpPort()];
    const common = {
      scope: "netns" as const,
      clientIp: "127.0.0.1",
      id: 0x4444,
      name: "allowed.example.com",
    };
    s.rendezvous.record({
      ...common,
      clientPort: ports[0],
      resolverIp: s.upstream.ip,
      resolverPort: s.upstream.port,
      process: { pid: 1001, exe: "/usr/bin/first" },
    });
    s.rendezvous.record({
      ...common,
      clientPort: ports[1],
      resolverIp: "127.0.0.9",
      resolverPort: 53,
      process: { pid: 1002, exe: "/usr/bin/second" },
    });
    const query = encodeQuery(0x4444, ["allowed.example.com"]);
    const [a, b] = await Promise.all([
      udpExchange(s.server, query, { bindPort: ports[0] }),
      udpExchange(s.server, query, { bindPort: ports[1] }),
    ]);
    assert.equal(decode(a!).rcode, "NOERROR");
    assert.equal(decode(b!).rcode, "REFUSED");
    const byPid = new Map(dnsLines(s.lines).map((line) => [line.pid, line]));
    assert.equal(byPid.get(1001)?.policy, "allow");
    assert.equal(byPid.get(1001)?.exe, "/usr/bin/first");
    assert.equal(byPid.get(1002)?.reason, "resolver not allowed");
    assert.equal(byPid.get(1002)?.dst_ip, "127.0.0.9");
    assert.equal(s.rendezvous.size, 0);
    // A third query from the first port has no entry left and no fallback: unknown.
    const third = decode((await udpExchange(s.server, query, { bindPort: ports[0] }))!);
    assert.equal(third.rcode, "REFUSED");
    assert.equal(dnsLines(s.lines).at(-1)?.reason, "original destination unknown");
  } finally {
    await s.close();
  }
});

Deno.test("dns proxy: a client on a fixed port meets its rendezvous entry (name case-insensitive)", async () => {
  const s = await setup({ origin: "none" });
  try {
    const port = await freeUdpPort();
    s.rendezvous.record({
      scope: "netns",
      clientIp: "127.0.0.1",
      clientPort: port,
      id: 0x1234,
      name: "allowed.example.com",
      resolverIp: s.upstream.ip,
      resolverPort: s.upstream.port,
      process: PROCESS,
    });
    const query = encodeQuery(0x1234, ["ALLOWED.example.com"]);
    const reply = decode((await udpExchange(s.server, query, { bindPort: port }))!);
    assert.equal(reply.rcode, "NOERROR");
    assert.equal(dnsLines(s.lines)[0].pid, 4242);
  } finally {
    await s.close();
  }
});

testWhen(
  unmet([[NODE !== undefined, "needs node"]]),
  "dns proxy: node dns.Resolver with setServers resolves allowed and is refused for denied",
  async () => {
    const s = await setup();
    try {
      const script = `
        const { Resolver } = require("node:dns");
        const r = new Resolver({ timeout: 3000, tries: 1 });
        r.setServers(["127.0.0.1:${s.server.port}"]);
        r.resolve4("allowed.example.com", (e, a) => {
          console.log("allowed", e ? e.code : a.join(","));
          r.resolve4("denied.example.org", (e2, a2) => console.log("denied", e2 ? e2.code : a2.join(",")));
        });`;
      const out = await run(NODE!, ["-e", script]);
      assert.match(out, /allowed 192\.0\.2\.1/);
      assert.match(out, /denied EREFUSED/);
    } finally {
      await s.close();
    }
  },
);

testWhen(unmet([[commandExists(PYTHON), "needs python3"]]), "dns proxy: python3 socket client", async () => {
  const s = await setup();
  try {
    const script = `
import socket, struct, sys
def q(i, name):
    body = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\\0" + struct.pack(">HH", 1, 1)
    return struct.pack(">HHHHHH", i, 0x0100, 1, 0, 0, 0) + body
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
for i, name in ((0x0a0a, "x.wild.example.com"), (0x0b0b, "nope.example.org")):
    s.sendto(q(i, name), ("127.0.0.1", ${s.server.port}))
    data, _ = s.recvfrom(4096)
    rid, flags, qd, an = struct.unpack(">HHHH", data[:8])
    print(name, hex(rid), flags & 0xf, an)
`;
    const out = await run(PYTHON, ["-c", script]);
    assert.match(out, /x\.wild\.example\.com 0xa0a 0 1/);
    assert.match(out, /nope\.example\.org 0xb0b 5 0/);
  } finally {
    await s.close();
  }
});

testWhen(noDig, "dns proxy: audit mode answers a denied name but logs policy deny", async () => {
  const s = await setup({ audit: true });
  try {
    assert.equal((await dig(s.server, "+short", "denied.example.org")).trim(), "192.0.2.1");
    const [line] = dnsLines(s.lines);
    assert.equal(line.policy, "deny");
    assert.equal(line.audit, true);
    assert.equal(line.reason, "name not allowed");
    const [response] = dnsLines(s.lines, "dns_response");
    assert.equal(response.policy, "deny");
    // Not what enforce mode would have resolved: the cache stays empty.
    assert.equal(s.enforcer.decide({ type: "tcp", dst_ip: "192.0.2.1", dst_port: 443 }).hostname, undefined);
  } finally {
    await s.close();
  }
});

testWhen(noDig, "dns proxy: --dns-upstream replaces the resolver the client asked", async () => {
  const upstreamOnly = await startFakeUpstream("127.0.0.4");
  // The client asked an allowed resolver whose server does not exist; the query goes to 127.0.0.4.
  const s = await setup({ upstreams: [`127.0.0.4:${upstreamOnly.port}`] });
  try {
    assert.equal((await dig(s.server, "+short", "allowed.example.com")).trim(), "192.0.2.1");
    assert.equal(upstreamOnly.seen.length, 1);
    assert.equal(s.upstream.seen.length, 0);
    assert.equal(dnsLines(s.lines)[0].dst_ip, "127.0.0.2");
  } finally {
    await s.close();
    await upstreamOnly.close();
  }
});

Deno.test("dns proxy: parseUpstream", () => {
  assert.deepEqual(parseUpstream("1.1.1.1"), { ip: "1.1.1.1", port: 53 });
  assert.deepEqual(parseUpstream("10.0.0.1:5353"), { ip: "10.0.0.1", port: 5353 });
  assert.throws(() => parseUpstream("1.1.1.256"), /Cannot use DNS upstream/);
  assert.throws(() => parseUpstream("dns.google"), /Cannot use DNS upstream/);
  assert.throws(() => parseUpstream("1.1.1.1:0"), /Cannot use DNS upstream/);
});

Deno.test("dns proxy: an exception while judging ⇒ REFUSED, deny line and an ERROR", async () => {
  const upstream = await startFakeUpstream("127.0.0.2");
  const lines: ConnectionLogEvent[] = [];
  const errors: string[] = [];
  const proxy = await DnsProxy.start({
    port: 0,
    hostname: "127.0.0.1",
    getEnforcer: () => {
      throw new Error("no policy loaded");
    },
    rendezvous: new Rendezvous(),
    log: { write: (line) => lines.push(line) },
    oplog: { debug() {}, info() {}, warn() {}, error: (m) => errors.push(m) },
    origins: {
      udp: (client) => Promise.resolve({ dstIp: upstream.ip, dstPort: upstream.port, srcPort: client.port }),
      tcp: () => Promise.resolve(undefined),
    },
    isLocal: () => true,
  });
  try {
    const reply = decode(
      (await udpExchange({ ip: "127.0.0.1", port: proxy.port }, encodeQuery(61, ["a.example.com"])))!,
    );
    assert.equal(reply.rcode, "REFUSED");
    assert.equal(lines[0].reason, "internal error: no policy loaded");
    assert.match(errors[0], /Cannot judge DNS query/);
    assert.equal(upstream.seen.length, 0);
  } finally {
    await proxy.close();
    await upstream.close();
  }
});
