// Raw TCP, server-speaks-first, unknown destinations, internal errors, DNS over TCP, TLS with
// a non-HTTP inner protocol, and close(). Loopback only, no root needed.
import assert from "node:assert/strict";
import {
  decode,
  echoUpstream,
  encode,
  eventually,
  proxyUnderTest,
  rawUpstream,
  readAll,
  schemaErrors,
  testCa,
  tlsClient,
  writeAll,
} from "./harness.ts";

function connect(port: number) {
  return Deno.connect({ hostname: "127.0.0.1", port });
}

Deno.test("tcp: allowed by IP rule, relayed with half-close, one line", async () => {
  const upstream = echoUpstream("127.0.0.5");
  const proxy = await proxyUnderTest({
    policy: `127.0.0.5:${upstream.port}`,
    target: { ip: "127.0.0.5", port: upstream.port },
    process: { pid: 77, exe: "/usr/bin/nc", step: "__run_2", action: "__run" },
  });
  try {
    const conn = await connect(proxy.port);
    try {
      await writeAll(conn, encode("\x00\x01binary-hello"));
      await conn.closeWrite();
      const echoed = await readAll(conn, 1 << 20, 3000);
      assert.equal(decode(echoed), "\x00\x01binary-hello");
    } finally {
      conn.close();
    }
    await eventually(() => proxy.log.lines.length >= 1);
    assert.equal(proxy.log.lines.length, 1);
    const line = proxy.log.lines[0];
    assert.deepEqual(
      [
        line.type,
        line.dst_ip,
        line.dst_port,
        line.policy,
        line.rule,
        line.line,
        line.pid,
        line.step,
        line.action,
      ],
      ["tcp", "127.0.0.5", upstream.port, "allow", `127.0.0.5:${upstream.port}`, 1, 77, "__run_2", "__run"],
    );
    assert.equal(line.host, undefined);
    assert.deepEqual(schemaErrors(proxy.log), []);
  } finally {
    await proxy.close();
    await upstream.close();
  }
});

Deno.test("tcp: allowed by a DNS-cache name; denied connections are closed and logged", async () => {
  const upstream = echoUpstream("127.0.0.5");
  const proxy = await proxyUnderTest({
    policy: `echo.test:${upstream.port}`,
    target: { ip: "127.0.0.5", port: upstream.port },
  });
  try {
    // Not in the cache yet: denied.
    const denied = await connect(proxy.port);
    await writeAll(denied, encode("x"));
    assert.equal((await readAll(denied, 10, 2000)).length, 0);
    denied.close();
    proxy.dnsCache.add("other.test", ["127.0.0.5"], 300);
    proxy.dnsCache.add("echo.test", ["127.0.0.5"], 300);
    proxy.dnsCache.add("newest.test", ["127.0.0.5"], 300);
    const conn = await connect(proxy.port);
    await writeAll(conn, encode("ping"));
    await conn.closeWrite();
    assert.equal(decode(await readAll(conn, 100, 3000)), "ping");
    conn.close();
    await eventually(() => proxy.log.lines.length >= 2);
    const [no, yes] = proxy.log.lines;
    assert.equal(no.policy, "deny");
    assert.equal(no.reason, "no matching rule");
    assert.equal(no.host, undefined);
    assert.equal(yes.policy, "allow");
    assert.equal(yes.host, "echo.test", "the cached name that matched");
    proxy.setPolicy("nothing.test");
    const again = await connect(proxy.port);
    await writeAll(again, encode("x"));
    assert.equal((await readAll(again, 10, 2000)).length, 0);
    again.close();
    await eventually(() => proxy.log.lines.length >= 3);
    assert.equal(proxy.log.lines[2].host, "newest.test", "denied: the most recent cached name");
    assert.deepEqual(schemaErrors(proxy.log), []);
  } finally {
    await proxy.close();
    await upstream.close();
  }
});

Deno.test("tcp: a silent client is judged as raw TCP after 250 ms (server speaks first)", async () => {
  const upstream = rawUpstream("127.0.0.5", async (conn) => {
    await writeAll(conn, encode("220 banner\r\n"));
    const buffer = new Uint8Array(100);
    const n = await conn.read(buffer);
    if (n) await writeAll(conn, encode(`got ${decode(buffer.subarray(0, n))}`));
  });
  const proxy = await proxyUnderTest({
    policy: `127.0.0.5:${upstream.port}`,
    target: { ip: "127.0.0.5", port: upstream.port },
  });
  try {
    const started = performance.now();
    const conn = await connect(proxy.port);
    try {
      const buffer = new Uint8Array(100);
      const n = await conn.read(buffer);
      const waited = performance.now() - started;
      assert.equal(decode(buffer.subarray(0, n!)), "220 banner\r\n");
      assert.ok(waited >= 200 && waited < 2000, `banner after ${waited} ms`);
      await writeAll(conn, encode("HELO"));
      const m = await conn.read(buffer);
      assert.equal(decode(buffer.subarray(0, m!)), "got HELO");
    } finally {
      conn.close();
    }
    assert.equal(proxy.log.lines[0].type, "tcp");
  } finally {
    await proxy.close();
    await upstream.close();
  }
});

Deno.test("tcp: unknown original destination and resolver errors are denied", async () => {
  const proxy = await proxyUnderTest({ policy: "0.0.0.0/0:*" });
  try {
    const conn = await connect(proxy.port);
    assert.equal((await readAll(conn, 10, 2000)).length, 0);
    conn.close();
    await eventually(() => proxy.log.lines.length >= 1);
    const line = proxy.log.lines[0];
    assert.equal(line.dst_ip, "unknown");
    assert.equal(line.dst_port, 0);
    assert.ok((line.src_port as number) > 0);
    assert.equal(line.policy, "deny");
    assert.equal(line.reason, "original destination unknown");
    assert.deepEqual(schemaErrors(proxy.log), []);
  } finally {
    await proxy.close();
  }
  const failing = await proxyUnderTest({
    policy: "0.0.0.0/0:*",
    extra: { resolveConnection: () => Promise.reject(new Error("conntrack exploded")) },
  });
  try {
    const conn = await connect(failing.port);
    assert.equal((await readAll(conn, 10, 2000)).length, 0);
    conn.close();
    await eventually(() => failing.log.lines.length >= 1);
    assert.match(String(failing.log.lines[0].reason), /^internal error: conntrack exploded/);
    assert.ok(failing.ops.lines.some((l) => l.startsWith("ERROR") && l.includes("conntrack exploded")));
    assert.equal(failing.proxy.counters.errors, 1);
  } finally {
    await failing.close();
  }
});

Deno.test("tcp: an exception while deciding denies with an ERROR line", async () => {
  const upstream = echoUpstream("127.0.0.5");
  const proxy = await proxyUnderTest({
    policy: `127.0.0.5:${upstream.port}`,
    target: { ip: "127.0.0.5", port: upstream.port },
    extra: {
      getEnforcer: () => {
        throw new Error("policy store broken");
      },
    },
  });
  try {
    const conn = await connect(proxy.port);
    await writeAll(conn, encode("x"));
    assert.equal((await readAll(conn, 10, 2000)).length, 0);
    conn.close();
    await eventually(() => proxy.log.lines.length >= 1);
    assert.equal(proxy.log.lines[0].policy, "deny");
    assert.equal(proxy.log.lines[0].reason, "internal error: policy store broken");
    assert.ok(proxy.ops.lines.some((l) => l.startsWith("ERROR")));
  } finally {
    await proxy.close();
    await upstream.close();
  }
});

const DNS_QUERY = new Uint8Array([
  0x00,
  0x1d, // length 29
  0x12,
  0x34,
  0x01,
  0x00,
  0x00,
  0x01,
  0x00,
  0x00,
  0x00,
  0x00,
  0x00,
  0x00,
  0x07,
  0x65,
  0x78,
  0x61,
  0x6d,
  0x70,
  0x6c,
  0x65,
  0x03,
  0x63,
  0x6f,
  0x6d,
  0x00, // example.com
  0x00,
  0x01,
  0x00,
  0x01,
]);

Deno.test("tcp: DNS over TCP goes to the injected handler, else it is raw TCP", async () => {
  const seen: Uint8Array[] = [];
  const proxy = await proxyUnderTest({
    policy: "never.test",
    target: { ip: "127.0.0.5", port: 5353 },
    extra: {
      dnsOverTcp: async (conn, initial, info) => {
        seen.push(initial);
        assert.equal(info.dst_port, 5353);
        await writeAll(conn, encode("handled"));
        conn.close();
      },
    },
  });
  try {
    const conn = await connect(proxy.port);
    await writeAll(conn, DNS_QUERY);
    assert.equal(decode(await readAll(conn, 100, 2000)), "handled");
    conn.close();
    assert.equal(seen.length, 1);
    assert.deepEqual(seen[0], DNS_QUERY);
  } finally {
    await proxy.close();
  }
  const plain = await proxyUnderTest({ policy: "never.test", target: { ip: "127.0.0.5", port: 5353 } });
  try {
    const conn = await connect(plain.port);
    await writeAll(conn, DNS_QUERY);
    assert.equal((await readAll(conn, 100, 2000)).length, 0);
    conn.close();
    await eventually(() => plain.log.lines.length >= 1);
    assert.equal(plain.log.lines[0].type, "tcp");
  } finally {
    await plain.close();
  }
});

Deno.test("tcp: TLS whose inner protocol is not HTTP is judged as raw TCP after the handshake", async () => {
  const upstreamCa = await testCa("upstream");
  const leaf = await upstreamCa.leafFor("tls.test");
  const listener = Deno.listenTls({ hostname: "127.0.0.5", port: 0, cert: leaf.certPem, key: leaf.keyPem });
  const port = (listener.addr as Deno.NetAddr).port;
  const serving = (async () => {
    for await (const conn of listener) {
      const buffer = new Uint8Array(100);
      const n = await conn.read(buffer).catch(() => null);
      if (n) await writeAll(conn, encode(`echo ${decode(buffer.subarray(0, n))}`)).catch(() => {});
      conn.close();
    }
  })().catch(() => {});
  const proxy = await proxyUnderTest({
    policy: `tls.test:${port}`,
    target: { ip: "127.0.0.5", port },
    upstreamCaCerts: [upstreamCa.caCertPem],
  });
  try {
    proxy.dnsCache.add("tls.test", ["127.0.0.5"], 300);
    const conn = await tlsClient(proxy, "tls.test", [proxy.egressCa.caCertPem]);
    try {
      await writeAll(conn, encode("\x01PING"));
      assert.equal(decode(await readAll(conn, 100, 3000)), "echo \x01PING");
    } finally {
      conn.close();
    }
    await eventually(() => proxy.log.lines.length >= 1);
    const line = proxy.log.lines[0];
    assert.equal(line.type, "tcp");
    assert.equal(line.host, "tls.test");
    assert.equal(line.policy, "allow");
  } finally {
    await proxy.close();
    listener.close();
    await serving;
  }
});

Deno.test("tcp: close() aborts idle in-flight connections within the grace bound", async () => {
  const upstream = echoUpstream("127.0.0.5");
  const proxy = await proxyUnderTest({
    policy: `127.0.0.5:${upstream.port}`,
    target: { ip: "127.0.0.5", port: upstream.port },
    timeouts: { closeGraceMs: 200 },
  });
  try {
    const conn = await connect(proxy.port);
    await writeAll(conn, encode("hold"));
    const buffer = new Uint8Array(10);
    await conn.read(buffer);
    assert.equal(proxy.proxy.activeConnections, 1);
    const started = performance.now();
    await proxy.close();
    const took = performance.now() - started;
    assert.ok(took < 2000, `close took ${took} ms`);
    assert.equal(proxy.proxy.activeConnections, 0);
    assert.equal(await conn.read(buffer).catch(() => null), null);
    conn.close();
    await assert.rejects(() => connect(proxy.port));
  } finally {
    await upstream.close();
  }
});

Deno.test("tcp: a destination that is the proxy itself is refused (no loop); mapped IPv4 is plain IPv4", async () => {
  const upstream = echoUpstream("127.0.0.5");
  const proxy = await proxyUnderTest({ policy: "0.0.0.0/0:*" });
  try {
    proxy.target = { ip: "127.0.0.1", port: proxy.port };
    const conn = await connect(proxy.port);
    await writeAll(conn, encode("loop?"));
    assert.equal((await readAll(conn, 10, 2000)).length, 0);
    conn.close();
    await eventually(() => proxy.log.lines.length >= 1);
    assert.equal(proxy.log.lines.length, 1);
    assert.equal(proxy.log.lines[0].reason, "original destination unknown");
    proxy.target = { ip: "::ffff:127.0.0.5", port: upstream.port };
    const mapped = await connect(proxy.port);
    await writeAll(mapped, encode("mapped"));
    await mapped.closeWrite();
    assert.equal(decode(await readAll(mapped, 100, 3000)), "mapped");
    mapped.close();
    await eventually(() => proxy.log.lines.length >= 2);
    assert.equal(proxy.log.lines[1].dst_ip, "127.0.0.5");
    assert.equal(proxy.log.lines[1].policy, "allow");
  } finally {
    await proxy.close();
    await upstream.close();
  }
});
