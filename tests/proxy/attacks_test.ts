// Bypass attempts against the proxy (issue 4 review): a client that pauses before or inside its
// first bytes, Host/SNI games, smuggling framings, HTTP/2, CONNECT. Each case names what an
// attacker would gain if it passed. Loopback only, no root needed.
import assert from "node:assert/strict";
import {
  decode,
  encode,
  eventually,
  httpUpstream,
  proxyUnderTest,
  rawUpstream,
  readAll,
  readResponse,
  testCa,
  tlsClient,
  type Upstream,
  writeAll,
} from "./harness.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A raw upstream that records every byte it receives and answers nothing (it must stay unused). */
function recordingUpstream(ip: string): Upstream & { received: () => number } {
  let received = 0;
  const upstream = rawUpstream(ip, async (conn) => {
    const buffer = new Uint8Array(4096);
    for (;;) {
      const n = await conn.read(buffer);
      if (n === null) return;
      received += n;
    }
  });
  return { ...upstream, received: () => received };
}

function jsonEcho(request: Request): Response {
  const url = new URL(request.url);
  return Response.json({ method: request.method, path: url.pathname, host: request.headers.get("host") });
}

Deno.test("attack: a silent client cannot ride a tcp verdict into a TLS session with a denied SNI", async () => {
  // allowed.test resolves to the shared IP, so raw TCP to it is allowed by the DNS cache; the
  // attacker waits past 250 ms, then opens TLS for evil.test on the same IP (domain fronting).
  const upstreamCa = await testCa("upstream");
  const leaf = await upstreamCa.leafFor("evil.test");
  const upstream = await httpUpstream("127.0.0.1", jsonEcho, { cert: leaf.certPem, key: leaf.keyPem });
  const proxy = await proxyUnderTest({
    policy: `allowed.test:${upstream.port}`,
    target: { ip: "127.0.0.1", port: upstream.port },
    upstreamCaCerts: [upstreamCa.caCertPem],
  });
  try {
    proxy.dnsCache.add("allowed.test", ["127.0.0.1"], 300);
    const tcp = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    await sleep(400);
    // Trusting both CAs: a relayed session would complete against the upstream's evil.test leaf.
    const tls = Deno.startTls(tcp, {
      hostname: "evil.test",
      caCerts: [upstreamCa.caCertPem, proxy.egressCa.caCertPem],
    });
    const outcome = await tls.then(async (conn) => {
      try {
        await conn.handshake();
        await writeAll(conn, encode("GET / HTTP/1.1\r\nHost: evil.test\r\n\r\n"));
        return decode(await readAll(conn, 4096, 2000));
      } finally {
        conn.close();
      }
    }).catch((error) => `handshake failed: ${error}`);
    assert.ok(!outcome.includes('"host":"evil.test"'), `reached the upstream: ${outcome}`);
    await eventually(() => proxy.log.lines.length >= 1);
    assert.deepEqual(proxy.log.lines.map((l) => [l.type, l.host, l.policy]), [[
      "https",
      "evil.test",
      "deny",
    ]]);

    // The same late ClientHello for the allowed name is intercepted as usual.
    const tcp2 = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    await sleep(400);
    const ok = await Deno.startTls(tcp2, { hostname: "allowed.test", caCerts: [proxy.egressCa.caCertPem] });
    try {
      await writeAll(ok, encode("GET /late HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n"));
      const response = await readResponse(ok);
      // The upstream's leaf is for evil.test: a 502 proves interception (the proxy verified it).
      assert.equal(response.status, 502);
    } finally {
      ok.close();
    }
    await eventually(() => proxy.log.lines.length >= 2);
    assert.equal(proxy.log.lines[1].type, "https");
    assert.equal(proxy.log.lines[1].url, "https://allowed.test/late");
    assert.equal(proxy.log.lines[1].error, "upstream_tls_failed");
  } finally {
    await proxy.close();
    await upstream.close();
  }
});

Deno.test("attack: a silent client that sends HTTP later gets every request decided", async () => {
  const upstream = await httpUpstream("127.0.0.6", jsonEcho);
  const proxy = await proxyUnderTest({
    policy: `allowed.test:${upstream.port}`,
    target: { ip: "127.0.0.6", port: upstream.port },
  });
  try {
    proxy.dnsCache.add("allowed.test", ["127.0.0.6"], 300);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    try {
      await sleep(400);
      await writeAll(conn, encode("GET /a HTTP/1.1\r\nHost: allowed.test\r\n\r\n"));
      const allowed = await readResponse(conn);
      assert.equal(allowed.status, 200);
      assert.equal(JSON.parse(allowed.body).path, "/a");
      await writeAll(conn, encode("GET /b HTTP/1.1\r\nHost: evil.test\r\n\r\n"));
      const denied = await readResponse(conn);
      assert.equal(denied.status, 403);
      assert.equal(denied.body, "Blocked by egress policy");
    } finally {
      conn.close();
    }
    await eventually(() => proxy.log.lines.length >= 2);
    assert.deepEqual(proxy.log.lines.map((l) => [l.type, l.policy]), [["http", "allow"], ["http", "deny"]]);
  } finally {
    await proxy.close();
    await upstream.close();
  }
});

Deno.test("attack: silent inside intercepted TLS, then a request the URL rule denies", async () => {
  const upstreamCa = await testCa("upstream");
  const leaf = await upstreamCa.leafFor("api.test");
  const upstream = await httpUpstream("127.0.0.1", jsonEcho, { cert: leaf.certPem, key: leaf.keyPem });
  // Raw TCP to the IP is allowed through the DNS cache name other.test; only GET /ok on api.test.
  const proxy = await proxyUnderTest({
    policy: `https://api.test:${upstream.port}/ok\nother.test:${upstream.port}`,
    target: { ip: "127.0.0.1", port: upstream.port },
    upstreamCaCerts: [upstreamCa.caCertPem],
  });
  try {
    proxy.dnsCache.add("other.test", ["127.0.0.1"], 300);
    const conn = await tlsClient(proxy, "api.test", [proxy.egressCa.caCertPem]);
    try {
      await conn.handshake();
      await sleep(400);
      await writeAll(conn, encode("GET /secret HTTP/1.1\r\nHost: api.test\r\n\r\n"));
      const response = await readResponse(conn);
      assert.equal(response.status, 403);
    } finally {
      conn.close();
    }
    await eventually(() => proxy.log.lines.length >= 1);
    assert.equal(proxy.log.lines[0].type, "https");
    assert.equal(proxy.log.lines[0].policy, "deny");
    assert.ok(!proxy.log.lines.some((l) => l.type === "tcp"));
  } finally {
    await proxy.close();
    await upstream.close();
  }
});

Deno.test("attack: a pause inside the request line or the ClientHello is refused, not relayed", async () => {
  const upstream = recordingUpstream("127.0.0.7");
  const proxy = await proxyUnderTest({
    policy: `127.0.0.7:${upstream.port}`, // raw TCP to the IP is allowed
    target: { ip: "127.0.0.7", port: upstream.port },
    timeouts: { headMs: 600 },
  });
  try {
    const hello = new Uint8Array([0x16, 0x03, 0x01, 0x00, 0x40, 0x01, 0x00, 0x00, 0x3c, 0x03, 0x03]);
    const cases: Uint8Array[][] = [
      [encode("G"), encode("ET / HTTP/1.1\r\nHost: evil.test\r\n\r\n")],
      [hello, new Uint8Array(60)],
      [encode("PRI * H"), encode("TTP/2.0\r\n\r\nSM\r\n\r\n")],
      // PROXY protocol: a load balancer honouring it would take the ClientHello behind it unseen
      [encode("PROX"), encode("Y TCP4 10.0.0.1 10.0.0.2 1 443\r\n")],
      [
        new Uint8Array([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d]),
        new Uint8Array([0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]),
      ],
      [encode("PROXY TCP4 10.0.0.1 10.0.0.2 1 443\r\n"), hello],
    ];
    for (const [head, rest] of cases) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
      try {
        await writeAll(conn, head);
        await sleep(800);
        await conn.write(rest).catch(() => 0);
        assert.equal((await readAll(conn, 1024, 1000)).length, 0);
      } finally {
        conn.close();
      }
    }
    // A malformed ClientHello (two host names) is refused too, and raw TCP still works.
    const twoNames = malformedHelloWithTwoNames();
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    await writeAll(conn, twoNames);
    assert.equal((await readAll(conn, 1024, 1000)).length, 0);
    conn.close();
    await sleep(100);
    assert.equal(upstream.received(), 0, "refused bytes reached the upstream");
    assert.equal(proxy.ops.lines.filter((l) => l.includes("refused the connection")).length, 7);
    const raw = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    await writeAll(raw, encode("\x00\x01raw"));
    await eventually(() => upstream.received() === 5);
    raw.close();
  } finally {
    await proxy.close();
    await upstream.close();
  }
});

/** A ClientHello record whose SNI extension lists two host names (our parser refuses it). */
function malformedHelloWithTwoNames(): Uint8Array {
  const name = (s: string) => [0x00, 0x00, s.length, ...encode(s)];
  const list = [...name("a.test"), ...name("b.test")];
  const sni = [0x00, 0x00, 0x00, list.length + 2, 0x00, list.length, ...list];
  const body = [
    0x03,
    0x03,
    ...new Uint8Array(32),
    0x00, // version, random, empty session id
    0x00,
    0x02,
    0x13,
    0x01,
    0x01,
    0x00, // one cipher suite, null compression
    0x00,
    sni.length,
    ...sni,
  ];
  const handshake = [0x01, 0x00, body.length >> 8, body.length & 0xff, ...body];
  return new Uint8Array([0x16, 0x03, 0x01, handshake.length >> 8, handshake.length & 0xff, ...handshake]);
}

Deno.test("attack: absolute-form, CONNECT, smuggling framings and HTTP/2 never reach the upstream", async () => {
  const upstream = recordingUpstream("127.0.0.8");
  const proxy = await proxyUnderTest({
    policy: `allowed.test:${upstream.port}`,
    target: { ip: "127.0.0.8", port: upstream.port },
  });
  try {
    proxy.dnsCache.add("allowed.test", ["127.0.0.8"], 300);
    const expectations: [string, number][] = [
      ["GET http://evil.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n", 403],
      ["GET http://evil.test/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n", 400],
      ["CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n", 403],
      [
        "POST / HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
      ],
      ["POST / HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd", 400],
      ["GET / HTTP/1.1\r\nHost: allowed.test\r\nX-A: 1\r\n Host: evil.test\r\n\r\n", 400],
      ["GET / HTTP/1.1\r\nHost: allowed.test\r\nHost: evil.test\r\n\r\n", 400],
      ["PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505],
      // a method the fast classifier does not know is still an HTTP request, judged by its Host
      ["XGET / HTTP/1.1\r\nHost: evil.test\r\n\r\n", 403],
    ];
    for (const [request, status] of expectations) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
      try {
        await writeAll(conn, encode(request));
        // Bounded read: a relayed request would wait on the silent upstream forever.
        const answer = decode(await readAll(conn, 4096, 2000));
        assert.equal(Number(answer.split(" ")[1]), status, `${request} => ${answer}`);
      } finally {
        conn.close();
      }
    }
    await sleep(100);
    assert.equal(upstream.received(), 0, "a refused request reached the upstream");
    const denied = proxy.log.lines.filter((l) => l.policy === "deny").map((l) => l.url);
    assert.deepEqual(denied, ["http://evil.test/", "http://evil.test:443/", "http://evil.test/"]);
  } finally {
    await proxy.close();
    await upstream.close();
  }
});

Deno.test("attack: SNI case and trailing dot are normalised; an IP-literal SNI is judged by the IP", async () => {
  const upstreamCa = await testCa("upstream");
  const leaf = await upstreamCa.leafFor("api.test");
  const upstream = await httpUpstream("127.0.0.1", jsonEcho, { cert: leaf.certPem, key: leaf.keyPem });
  const proxy = await proxyUnderTest({
    policy: `api.test:${upstream.port}`,
    target: { ip: "127.0.0.1", port: upstream.port },
    upstreamCaCerts: [upstreamCa.caCertPem],
  });
  try {
    const conn = await tlsClient(proxy, "API.Test", [proxy.egressCa.caCertPem]);
    try {
      await conn.handshake();
      await writeAll(conn, encode("GET /x HTTP/1.1\r\nHost: api.test.\r\nConnection: close\r\n\r\n"));
      const response = await readResponse(conn);
      assert.equal(response.status, 200, response.body);
    } finally {
      conn.close();
    }
    await eventually(() => proxy.log.lines.length >= 1);
    assert.equal(proxy.log.lines[0].policy, "allow");
    // An IP as SNI is not a name: Deno sends none, the proxy judges by the IP (denied here).
    const ip = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    const tls = await Deno.startTls(ip, { hostname: "127.0.0.1", caCerts: [proxy.egressCa.caCertPem] })
      .then(async (c) => {
        try {
          await c.handshake();
          await writeAll(c, encode("GET / HTTP/1.1\r\nHost: api.test\r\n\r\n"));
          return (await readResponse(c)).status;
        } finally {
          c.close();
        }
      }).catch(() => -1);
    assert.notEqual(tls, 200);
    await eventually(() => proxy.log.lines.length >= 2);
    assert.equal(proxy.log.lines[1].policy, "deny");
  } finally {
    await proxy.close();
    await upstream.close();
  }
});

Deno.test("attack: a passthrough SNI towards an IP the name never resolved to is intercepted, not relayed", async () => {
  // Without corroboration any server could be reached untouched by claiming the passthrough name:
  // the flag is dropped, so the proxy intercepts and verifies the upstream against the SNI.
  const upstreamCa = await testCa("upstream");
  const leaf = await upstreamCa.leafFor("pass.test");
  const upstream = await httpUpstream("127.0.0.1", jsonEcho, { cert: leaf.certPem, key: leaf.keyPem });
  const proxy = await proxyUnderTest({
    policy: `pass.test:${upstream.port} passthrough`,
    target: { ip: "127.0.0.1", port: upstream.port },
  });
  try {
    proxy.dnsCache.add("pass.test", ["127.0.0.9"], 300); // the name resolved elsewhere
    const status = await tlsClient(proxy, "pass.test", [upstreamCa.caCertPem]).then(async (conn) => {
      try {
        await conn.handshake();
        await writeAll(conn, encode("GET / HTTP/1.1\r\nHost: pass.test\r\nConnection: close\r\n\r\n"));
        return (await readResponse(conn)).status;
      } finally {
        conn.close();
      }
    }).catch(() => -1);
    assert.equal(status, -1);
    await eventually(() => proxy.log.lines.length >= 1);
    const line = proxy.log.lines[0];
    assert.deepEqual([line.type, line.host, line.error], ["https", "pass.test", "tls_client_rejected_ca"]);
    assert.equal(line.passthrough, undefined);
  } finally {
    await proxy.close();
    await upstream.close();
  }
});

Deno.test("attack: in audit mode a refused first segment is relayed as raw TCP and logged", async () => {
  const upstream = recordingUpstream("127.0.0.7");
  const proxy = await proxyUnderTest({
    policy: "", // nothing allowed: audit logs policy deny and lets it through
    target: { ip: "127.0.0.7", port: upstream.port },
    audit: true,
  });
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    try {
      await writeAll(conn, malformedHelloWithTwoNames());
      await eventually(() => upstream.received() > 0);
    } finally {
      conn.close();
    }
    await eventually(() => proxy.log.lines.length >= 1);
    const line = proxy.log.lines[0];
    assert.deepEqual([line.type, line.policy, line.audit], ["tcp", "deny", true]);
    assert.ok(proxy.ops.lines.some((l) => l.includes("relayed as raw TCP (audit)")));
  } finally {
    await proxy.close();
    await upstream.close();
  }
});
