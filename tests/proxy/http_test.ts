// Plain HTTP through the proxy: corroboration, keep-alive, denied bodies, framing, upgrades,
// malformed input and slow clients. Loopback only, no root needed.
import assert from "node:assert/strict";
import {
  curl,
  decode,
  encode,
  eventually,
  httpUpstream,
  type ProxyUnderTest,
  proxyUnderTest,
  rawUpstream,
  readAll,
  readResponse,
  schemaErrors,
  type Upstream,
  via,
  writeAll,
} from "./harness.ts";

type Setup = { upstream: Upstream; proxy: ProxyUnderTest; peers: Set<number> };

async function setup(
  ip: string,
  policy: (port: number) => string,
  options: { audit?: boolean; timeouts?: Record<string, number> } = {},
): Promise<Setup> {
  const peers = new Set<number>();
  const upstream = await httpUpstream(ip, async (request, info?: Deno.ServeHandlerInfo) => {
    if (info) peers.add((info.remoteAddr as Deno.NetAddr).port);
    const body = new Uint8Array(await request.arrayBuffer());
    const url = new URL(request.url);
    return Response.json({
      method: request.method,
      path: url.pathname,
      host: request.headers.get("host"),
      length: body.length,
    });
  });
  const proxy = await proxyUnderTest({
    policy: policy(upstream.port),
    target: { ip, port: upstream.port },
    audit: options.audit,
    timeouts: options.timeouts,
  });
  return { upstream, proxy, peers };
}

async function teardown(s: { proxy: ProxyUnderTest; upstream: Upstream }) {
  await s.proxy.close();
  await s.upstream.close();
}

function connect(proxy: ProxyUnderTest) {
  return Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
}

Deno.test("http: Host is corroborated by the DNS cache (spoofed Host denied)", async () => {
  const s = await setup("127.0.0.3", (p) => `plain.test:${p}`);
  try {
    const port = s.upstream.port;
    const spoofed = await curl([...via(s.proxy, "plain.test", port), `http://plain.test:${port}/a`]);
    assert.equal(spoofed.status, 403);
    assert.equal(spoofed.body, "Blocked by egress policy");
    s.proxy.dnsCache.add("plain.test", ["127.0.0.3"], 300);
    const ok = await curl([...via(s.proxy, "plain.test", port), `http://plain.test:${port}/b?q=1`]);
    assert.equal(ok.status, 200, ok.stderr);
    assert.equal(JSON.parse(ok.body).path, "/b");
    await eventually(() => s.proxy.log.lines.length >= 2);
    const [denied, allowed] = s.proxy.log.lines;
    assert.equal(denied.type, "http");
    assert.equal(denied.policy, "deny");
    assert.equal(denied.reason, "host not corroborated");
    assert.equal(allowed.policy, "allow");
    assert.equal(allowed.url, `http://plain.test:${port}/b?q=***`);
    assert.equal(allowed.rule, `plain.test:${port}`);
    assert.equal(allowed.dst_ip, "127.0.0.3");
    assert.deepEqual(schemaErrors(s.proxy.log), []);
  } finally {
    await teardown(s);
  }
});

Deno.test("http: another host on the same connection is judged and gets its own upstream", async () => {
  const s = await setup("127.0.0.3", (p) => `a.test:${p}\nb.test:${p}`);
  try {
    s.proxy.dnsCache.add("a.test", ["127.0.0.3"], 300);
    s.proxy.dnsCache.add("b.test", ["127.0.0.3"], 300);
    const port = s.upstream.port;
    const conn = await connect(s.proxy);
    try {
      for (const host of ["a.test", "b.test", "b.test", "c.test", "b.test"]) {
        await writeAll(conn, encode(`GET /${host} HTTP/1.1\r\nHost: ${host}:${port}\r\n\r\n`));
        const response = await readResponse(conn);
        if (host === "c.test") {
          assert.equal(response.status, 403);
        } else {
          assert.equal(response.status, 200);
          assert.equal(JSON.parse(response.body).host, `${host}:${port}`);
        }
      }
    } finally {
      conn.close();
    }
    // a.test, then b.test (reused for the second and, after the denied c.test, the last request)
    assert.equal(s.peers.size, 2);
    assert.deepEqual(s.proxy.log.lines.map((l) => l.policy), ["allow", "allow", "allow", "deny", "allow"]);
  } finally {
    await teardown(s);
  }
});

Deno.test("http: denied bodies are discarded up to 1 MiB and the connection stays usable", async () => {
  const s = await setup("127.0.0.3", (p) => `GET http://ok.test:${p}/*`);
  try {
    s.proxy.dnsCache.add("ok.test", ["127.0.0.3"], 300);
    const port = s.upstream.port;
    const host = `ok.test:${port}`;
    const conn = await connect(s.proxy);
    try {
      await writeAll(
        conn,
        encode(`POST /x HTTP/1.1\r\nHost: ${host}\r\nContent-Length: 1000\r\n\r\n${"y".repeat(1000)}`),
      );
      assert.equal((await readResponse(conn)).status, 403);
      const chunked =
        `POST /x HTTP/1.1\r\nHost: ${host}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`;
      await writeAll(conn, encode(chunked));
      assert.equal((await readResponse(conn)).status, 403);
      await writeAll(conn, encode(`HEAD /x HTTP/1.1\r\nHost: blocked.test\r\n\r\n`));
      const head = await readResponse(conn, 5000, true);
      assert.equal(head.status, 403);
      await writeAll(conn, encode(`GET /after HTTP/1.1\r\nHost: ${host}\r\n\r\n`));
      const after = await readResponse(conn);
      assert.equal(after.status, 200, "the HEAD answer carried no body and the stream stayed in sync");
      assert.equal(JSON.parse(after.body).path, "/after");
    } finally {
      conn.close();
    }
    const big = await connect(s.proxy);
    try {
      await writeAll(
        big,
        encode(`POST /x HTTP/1.1\r\nHost: ${host}\r\nContent-Length: ${2 * 1024 * 1024}\r\n\r\n`),
      );
      const denied = await readResponse(big);
      assert.equal(denied.status, 403);
      assert.match(denied.head, /connection: close/i);
      const rest = await readAll(big, 1024, 2000);
      assert.equal(rest.length, 0, "closed after the 403");
    } finally {
      big.close();
    }
  } finally {
    await teardown(s);
  }
});

/** Raw upstream answering by path with hand-made framings. */
function framingUpstream(ip: string): Upstream {
  return rawUpstream(ip, async (conn) => {
    let text = "";
    const buffer = new Uint8Array(65536);
    for (;;) {
      const end = text.indexOf("\r\n\r\n");
      if (end < 0) {
        const n = await conn.read(buffer);
        if (n === null) return;
        text += decode(buffer.subarray(0, n));
        continue;
      }
      const head = text.slice(0, end);
      text = text.slice(end + 4);
      const path = head.split(" ")[1];
      if (path === "/close") {
        await writeAll(conn, encode("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil-close"));
        return;
      }
      if (path === "/chunked") {
        await writeAll(
          conn,
          encode("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"),
        );
      } else if (path === "/interim") {
        await writeAll(
          conn,
          encode(
            "HTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
          ),
        );
      } else if (path === "/empty") {
        await writeAll(conn, encode("HTTP/1.1 204 No Content\r\n\r\n"));
      } else if (path === "/h2c") {
        // Reports what arrived; switches protocols if it was asked to.
        const asked = /\r\nupgrade: *h2c/i.test(head);
        if (asked) {
          await writeAll(conn, encode("HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n"));
          return;
        }
        const seen = JSON.stringify(head.split("\r\n").slice(1));
        await writeAll(conn, encode(`HTTP/1.1 200 OK\r\nContent-Length: ${seen.length}\r\n\r\n${seen}`));
      } else if (path === "/rogue101") {
        await writeAll(conn, encode("HTTP/1.1 101 Switching Protocols\r\nUpgrade: other\r\n\r\n"));
        return;
      } else if (path === "/upgrade") {
        await writeAll(
          conn,
          encode("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
        );
        if (text) await writeAll(conn, encode(text.toUpperCase()));
        for (;;) {
          const n = await conn.read(buffer);
          if (n === null) return;
          await writeAll(conn, encode(decode(buffer.subarray(0, n)).toUpperCase()));
        }
      } else if (path === "/once") {
        // Keep-alive answer, then the server drops the idle connection.
        await writeAll(conn, encode("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nonce"));
        return;
      } else if (path === "/truncated") {
        await writeAll(conn, encode("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"));
        return;
      } else if (path === "/hang") {
        await new Promise((resolve) => setTimeout(resolve, 1500));
        return;
      } else if (path === "/bad") {
        await writeAll(conn, encode("NOT HTTP AT ALL\r\n\r\n"));
        return;
      } else {
        await writeAll(conn, encode("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"));
      }
    }
  });
}

Deno.test("http: response framings (chunked, 1xx, 204, close-delimited) and pipelining", async () => {
  const upstream = framingUpstream("127.0.0.3");
  const proxy = await proxyUnderTest({
    policy: `127.0.0.3:${upstream.port}`,
    target: { ip: "127.0.0.3", port: upstream.port },
  });
  try {
    const conn = await connect(proxy);
    try {
      const host = `x.test:${upstream.port}`;
      // Pipelined: three requests in one write, answered in order.
      await writeAll(
        conn,
        encode(
          `GET /chunked HTTP/1.1\r\nHost: ${host}\r\n\r\nGET /interim HTTP/1.1\r\nHost: ${host}\r\n\r\n` +
            `GET /empty HTTP/1.1\r\nHost: ${host}\r\n\r\nGET /close HTTP/1.1\r\nHost: ${host}\r\n\r\n`,
        ),
      );
      const all = decode(await readAll(conn, 1 << 20, 3000));
      const chunked = all.indexOf("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
      const interim = all.indexOf("HTTP/1.1 103 Early Hints");
      const final = all.indexOf("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
      const empty = all.indexOf("HTTP/1.1 204 No Content");
      const close = all.indexOf("until-close");
      assert.ok(chunked > 0 && chunked < interim && interim < final && final < empty && empty < close, all);
      assert.ok(all.endsWith("until-close"), "the close-delimited body ends the connection");
    } finally {
      conn.close();
    }
    const bad = await connect(proxy);
    try {
      await writeAll(bad, encode(`GET /bad HTTP/1.1\r\nHost: x.test\r\n\r\n`));
      assert.equal((await readResponse(bad)).status, 502);
    } finally {
      bad.close();
    }
    assert.equal(proxy.log.lines.length, 5);
  } finally {
    await proxy.close();
    await upstream.close();
  }
});

Deno.test("http: an Upgrade is decided, then relayed raw both ways", async () => {
  const upstream = framingUpstream("127.0.0.3");
  const proxy = await proxyUnderTest({
    policy: `GET http://ws.test:${upstream.port}/upgrade`,
    target: { ip: "127.0.0.3", port: upstream.port },
  });
  try {
    proxy.dnsCache.add("ws.test", ["127.0.0.3"], 300);
    const conn = await connect(proxy);
    try {
      await writeAll(
        conn,
        encode(
          `GET /upgrade HTTP/1.1\r\nHost: ws.test:${upstream.port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`,
        ),
      );
      const buffer = new Uint8Array(4096);
      let text = "";
      while (!text.includes("\r\n\r\n")) text += decode(buffer.subarray(0, (await conn.read(buffer))!));
      assert.match(text, /^HTTP\/1\.1 101 /);
      await writeAll(conn, encode("frame-one"));
      let echoed = text.slice(text.indexOf("\r\n\r\n") + 4);
      while (echoed.length < 9) echoed += decode(buffer.subarray(0, (await conn.read(buffer))!));
      assert.equal(echoed, "FRAME-ONE");
    } finally {
      conn.close();
    }
    const denied = await connect(proxy);
    try {
      await writeAll(
        denied,
        encode(
          `GET /other HTTP/1.1\r\nHost: ws.test:${upstream.port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`,
        ),
      );
      assert.equal((await readResponse(denied)).status, 403);
    } finally {
      denied.close();
    }
    assert.deepEqual(proxy.log.lines.map((l) => l.policy), ["allow", "deny"]);
  } finally {
    await proxy.close();
    await upstream.close();
  }
});

Deno.test("http: malformed, oversized and slow request heads are refused; the proxy keeps serving", async () => {
  const s = await setup("127.0.0.3", (p) => `127.0.0.3:${p}`, { timeouts: { headMs: 400 } });
  try {
    const cases: Array<[string, number]> = [
      ["GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400],
      [`GET / HTTP/1.1\r\nHost: a.test\r\nX-Big: ${"z".repeat(70 * 1024)}\r\n\r\n`, 431],
      ["GET / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400],
    ];
    for (const [request, status] of cases) {
      const conn = await connect(s.proxy);
      try {
        await writeAll(conn, encode(request)).catch(() => {});
        assert.equal((await readResponse(conn)).status, status, request.slice(0, 60));
      } finally {
        conn.close();
      }
    }
    // Slowloris: a head that never ends is cut off after headMs.
    const slow = await connect(s.proxy);
    const started = Date.now();
    try {
      await writeAll(slow, encode("GET / HTTP/1.1\r\nHost: a.test\r\n"));
      const timer = setInterval(() => slow.write(encode("X: y\r\n")).catch(() => {}), 100);
      try {
        const response = await readResponse(slow, 3000);
        assert.equal(response.status, 408);
      } finally {
        clearInterval(timer);
      }
      assert.ok(Date.now() - started < 2000);
    } finally {
      slow.close();
    }
    const ok = await curl([
      ...via(s.proxy, "127.0.0.3", s.upstream.port),
      `http://127.0.0.3:${s.upstream.port}/fine`,
    ]);
    assert.equal(ok.status, 200, ok.stderr);
  } finally {
    await teardown(s);
  }
});

Deno.test("http: audit mode allows and logs policy deny", async () => {
  const s = await setup("127.0.0.3", () => "never.test", { audit: true });
  try {
    const port = s.upstream.port;
    const r = await curl([...via(s.proxy, "seen.test", port), `http://seen.test:${port}/audit`]);
    assert.equal(r.status, 200, r.stderr);
    await eventually(() => s.proxy.log.lines.length >= 1);
    const line = s.proxy.log.lines[0];
    assert.equal(line.policy, "deny");
    assert.equal(line.audit, true);
    assert.equal(line.reason, "no matching rule");
    assert.equal(s.proxy.proxy.counters.denied, 1);
    assert.deepEqual(schemaErrors(s.proxy.log), []);
  } finally {
    await teardown(s);
  }
});

Deno.test("http: Expect 100-continue upload and a policy reload between connections", async () => {
  const s = await setup("127.0.0.3", (p) => `POST http://up.test:${p}/u`);
  try {
    s.proxy.dnsCache.add("up.test", ["127.0.0.3"], 300);
    const port = s.upstream.port;
    const data = new Uint8Array(2 * 1024 * 1024).fill(97);
    const r = await curl([
      ...via(s.proxy, "up.test", port),
      "-H",
      "Expect: 100-continue",
      "--data-binary",
      "@-",
      `http://up.test:${port}/u`,
    ], data);
    assert.equal(r.status, 200, r.stderr);
    assert.equal(JSON.parse(r.body).length, data.length);
    s.proxy.setPolicy("nothing.test");
    const after = await curl([
      ...via(s.proxy, "up.test", port),
      "--data-binary",
      "x",
      `http://up.test:${port}/u`,
    ]);
    assert.equal(after.status, 403);
  } finally {
    await teardown(s);
  }
});

Deno.test("http: upstream resets and silent upstreams fail the connection, not the proxy", async () => {
  const upstream = framingUpstream("127.0.0.3");
  const proxy = await proxyUnderTest({
    policy: `127.0.0.3:${upstream.port}`,
    target: { ip: "127.0.0.3", port: upstream.port },
    timeouts: { upstreamIdleMs: 300 },
  });
  try {
    const truncated = await connect(proxy);
    try {
      await writeAll(truncated, encode(`GET /truncated HTTP/1.1\r\nHost: x.test\r\n\r\n`));
      const got = decode(await readAll(truncated, 1 << 16, 3000));
      assert.ok(got.startsWith("HTTP/1.1 200 OK") && got.endsWith("short"), got);
    } finally {
      truncated.close();
    }
    const hang = await connect(proxy);
    const started = performance.now();
    try {
      await writeAll(hang, encode(`GET /hang HTTP/1.1\r\nHost: x.test\r\n\r\n`));
      assert.equal((await readResponse(hang)).status, 502);
      assert.ok(performance.now() - started < 1400, "502 after upstreamIdleMs, before the upstream gave up");
    } finally {
      hang.close();
    }
    await eventually(() => proxy.ops.lines.filter((l) => l.startsWith("WARN")).length >= 2);
    const fine = await connect(proxy);
    try {
      await writeAll(fine, encode(`GET /chunked HTTP/1.1\r\nHost: x.test\r\nConnection: close\r\n\r\n`));
      assert.match(decode(await readAll(fine, 1 << 16, 3000)), /abc/);
    } finally {
      fine.close();
    }
  } finally {
    await proxy.close();
    await upstream.close();
  }
});

Deno.test("http: an upstream that dropped its idle keep-alive connection is replaced", async () => {
  const upstream = framingUpstream("127.0.0.3");
  const proxy = await proxyUnderTest({
    policy: `127.0.0.3:${upstream.port}`,
    target: { ip: "127.0.0.3", port: upstream.port },
  });
  try {
    const conn = await connect(proxy);
    try {
      for (let i = 0; i < 3; i++) {
        await writeAll(conn, encode(`GET /once HTTP/1.1\r\nHost: x.test\r\n\r\n`));
        const response = await readResponse(conn);
        assert.equal(response.status, 200);
        assert.equal(response.body, "once");
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    } finally {
      conn.close();
    }
    assert.deepEqual(proxy.log.lines.map((l) => l.policy), ["allow", "allow", "allow"]);
  } finally {
    await proxy.close();
    await upstream.close();
  }
});

Deno.test("http: an h2c upgrade is stripped and an unasked 101 is refused", async () => {
  const upstream = framingUpstream("127.0.0.3");
  const proxy = await proxyUnderTest({
    policy: `127.0.0.3:${upstream.port}`,
    target: { ip: "127.0.0.3", port: upstream.port },
  });
  try {
    const conn = await connect(proxy);
    try {
      await writeAll(
        conn,
        encode(
          "GET /h2c HTTP/1.1\r\nHost: x.test\r\nConnection: Upgrade, HTTP2-Settings, keep-alive\r\n" +
            "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\nX-Keep: 1\r\n\r\n",
        ),
      );
      const response = await readResponse(conn);
      assert.equal(response.status, 200);
      assert.deepEqual(JSON.parse(response.body), ["Host: x.test", "Connection: keep-alive", "X-Keep: 1"]);
    } finally {
      conn.close();
    }
    const rogue = await connect(proxy);
    try {
      await writeAll(rogue, encode("GET /rogue101 HTTP/1.1\r\nHost: x.test\r\n\r\n"));
      assert.equal((await readResponse(rogue)).status, 502);
    } finally {
      rogue.close();
    }
  } finally {
    await proxy.close();
    await upstream.close();
  }
});

Deno.test("http: an HTTP/1.0 request without Host is judged by the original IP", async () => {
  const s = await setup("127.0.0.3", (p) => `127.0.0.3:${p}`);
  try {
    const conn = await connect(s.proxy);
    try {
      await writeAll(conn, encode("GET /old HTTP/1.0\r\n\r\n"));
      const got = decode(await readAll(conn, 1 << 16, 3000));
      assert.match(got, /^HTTP\/1\.[01] 200/);
      assert.match(got, /"path":"\/old"/);
    } finally {
      conn.close();
    }
    await eventually(() => s.proxy.log.lines.length >= 1);
    assert.equal(s.proxy.log.lines[0].url, `http://127.0.0.3:${s.upstream.port}/old`);
    assert.equal(s.proxy.log.lines[0].policy, "allow");
  } finally {
    await teardown(s);
  }
});
