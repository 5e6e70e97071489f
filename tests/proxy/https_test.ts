// Intercepted and passthrough TLS through the proxy, loopback only, no root needed.
import assert from "node:assert/strict";
import {
  curl,
  decode,
  encode,
  eventually,
  httpUpstream,
  type ProxyUnderTest,
  proxyUnderTest,
  readAll,
  readResponse,
  schemaErrors,
  testCa,
  tlsClient,
  type Upstream,
  via,
} from "./harness.ts";

const PROCESS = { pid: 4242, exe: "/usr/bin/curl", cmdline: ["curl", "x"], cgroup: "/user.slice/test" };

async function echo(request: Request): Promise<Response> {
  const url = new URL(request.url);
  if (url.pathname === "/big") {
    const total = Number(url.searchParams.get("n"));
    const chunk = new Uint8Array(64 * 1024).fill(120);
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent >= total) return controller.close();
        const n = Math.min(chunk.length, total - sent);
        controller.enqueue(n === chunk.length ? chunk : chunk.subarray(0, n));
        sent += n;
      },
    });
    return new Response(body, { headers: { "content-length": String(total) } });
  }
  const body = new Uint8Array(await request.arrayBuffer());
  let sum = 0;
  for (const b of body) sum = (sum + b) % 65521;
  return Response.json({
    method: request.method,
    path: url.pathname + url.search,
    host: request.headers.get("host"),
    length: body.length,
    sum,
  });
}

type Setup = { upstream: Upstream; proxy: ProxyUnderTest; caFile: string; upstreamCaPem: string };

/** An HTTPS upstream on 127.0.0.1 for `name` (test CA) and a proxy pointed at it. */
async function setup(
  name: string,
  policy: (port: number) => string,
  options: { audit?: boolean; untrusted?: boolean; ip?: string; timeouts?: Record<string, number> } = {},
): Promise<Setup> {
  const upstreamCa = await testCa(options.untrusted ? "untrusted" : "upstream");
  const trustedCa = await testCa("upstream");
  const leaf = await upstreamCa.leafFor(name);
  const ip = options.ip ?? "127.0.0.1";
  const upstream = await httpUpstream(ip, echo, { cert: leaf.certPem, key: leaf.keyPem });
  const proxy = await proxyUnderTest({
    policy: policy(upstream.port),
    target: { ip, port: upstream.port },
    audit: options.audit,
    upstreamCaCerts: [trustedCa.caCertPem],
    process: PROCESS,
    timeouts: options.timeouts,
  });
  return { upstream, proxy, caFile: proxy.egressCa.caCertPath, upstreamCaPem: trustedCa.caCertPem };
}

async function teardown(s: Setup): Promise<void> {
  await s.proxy.close();
  await s.upstream.close();
}

function curlHttps(s: Setup, host: string, path: string, extra: string[] = []) {
  const port = s.upstream.port;
  return curl([
    ...via(s.proxy, host, port),
    "--cacert",
    s.caFile,
    ...extra,
    `https://${host}:${port}${path}`,
  ]);
}

Deno.test("https: allowed host is intercepted, forwarded and logged with every field", async () => {
  const s = await setup("api.test", (p) => `api.test:${p}`);
  try {
    const r = await curlHttps(s, "api.test", "/hello?token=secret&x");
    assert.equal(r.status, 200, r.stderr);
    const body = JSON.parse(r.body);
    assert.equal(body.path, "/hello?token=secret&x");
    assert.equal(body.host, `api.test:${s.upstream.port}`);
    await eventually(() => s.proxy.log.lines.length >= 1);
    assert.equal(s.proxy.log.lines.length, 1, s.proxy.log.raw.join("\n"));
    const line = s.proxy.log.lines[0];
    assert.deepEqual(Object.keys(line), [
      "ts",
      "type",
      "dst_ip",
      "dst_port",
      "src_port",
      "url",
      "method",
      "policy",
      "rule",
      "line",
      "pid",
      "exe",
      "cmdline",
      "cgroup",
    ]);
    assert.equal(line.type, "https");
    assert.equal(line.dst_ip, "127.0.0.1");
    assert.equal(line.dst_port, s.upstream.port);
    assert.ok((line.src_port as number) > 0);
    assert.equal(line.url, `https://api.test:${s.upstream.port}/hello?token=***&x`);
    assert.equal(line.method, "GET");
    assert.equal(line.policy, "allow");
    assert.equal(line.rule, `api.test:${s.upstream.port}`);
    assert.equal(line.line, 1);
    assert.equal(line.pid, 4242);
    assert.deepEqual(schemaErrors(s.proxy.log), []);
    assert.equal(s.proxy.proxy.counters.allowed, 1);
  } finally {
    await teardown(s);
  }
});

Deno.test("https: a denied SNI aborts at the ClientHello with a TLS-stage line", async () => {
  const s = await setup("other.test", (p) => `api.test:${p}`);
  try {
    const r = await curlHttps(s, "other.test", "/");
    assert.notEqual(r.code, 0);
    assert.equal(r.status, 0);
    await eventually(() => s.proxy.log.lines.length >= 1);
    const line = s.proxy.log.lines[0];
    assert.equal(line.type, "https");
    assert.equal(line.host, "other.test");
    assert.equal(line.policy, "deny");
    assert.equal(line.reason, "no matching rule");
    assert.equal(line.url, undefined);
    assert.equal(s.proxy.proxy.counters.denied, 1);
    assert.deepEqual(schemaErrors(s.proxy.log), []);
  } finally {
    await teardown(s);
  }
});

Deno.test("https: wildcard rules match subdomains only", async () => {
  const s = await setup("a.b.wild.test", (p) => `*.wild.test:${p}`);
  try {
    const ok = await curlHttps(s, "a.b.wild.test", "/");
    assert.equal(ok.status, 200, ok.stderr);
    const apex = await curlHttps(s, "wild.test", "/");
    assert.equal(apex.status, 0);
    await eventually(() => s.proxy.log.lines.length >= 2);
    assert.deepEqual(s.proxy.log.lines.map((l) => l.policy), ["allow", "deny"]);
  } finally {
    await teardown(s);
  }
});

Deno.test("https: URL rule allows GET and denies POST on the same keep-alive connection", async () => {
  const s = await setup("api.test", (p) => `GET https://api.test:${p}/repos/*`);
  try {
    const caCerts = [s.proxy.egressCa.caCertPem];
    const conn = await tlsClient(s.proxy, "api.test", caCerts);
    const host = `api.test:${s.upstream.port}`;
    try {
      await conn.write(encode(`GET /repos/a/b HTTP/1.1\r\nHost: ${host}\r\n\r\n`));
      const first = await readResponse(conn);
      assert.equal(first.status, 200);
      assert.equal(JSON.parse(first.body).path, "/repos/a/b");
      await conn.write(encode(`POST /repos/a HTTP/1.1\r\nHost: ${host}\r\nContent-Length: 5\r\n\r\nhello`));
      const denied = await readResponse(conn);
      assert.equal(denied.status, 403);
      assert.match(denied.head, /content-type: text\/plain/i);
      assert.equal(denied.body, "Blocked by egress policy");
      await conn.write(encode(`GET /other HTTP/1.1\r\nHost: ${host}\r\n\r\n`));
      assert.equal((await readResponse(conn)).status, 403);
      await conn.write(encode(`GET /repos/c HTTP/1.1\r\nHost: ${host}\r\n\r\n`));
      const again = await readResponse(conn);
      assert.equal(again.status, 200);
      assert.equal(JSON.parse(again.body).path, "/repos/c");
    } finally {
      conn.close();
    }
    await eventually(() => s.proxy.log.lines.length >= 4);
    const summary = s.proxy.log.lines.map((l) => `${l.method} ${l.url} ${l.policy}`);
    const base = `https://api.test:${s.upstream.port}`;
    assert.deepEqual(summary, [
      `GET ${base}/repos/a/b allow`,
      `POST ${base}/repos/a deny`,
      `GET ${base}/other deny`,
      `GET ${base}/repos/c allow`,
    ]);
    assert.equal(s.proxy.log.lines[1].reason, "no matching rule");
    assert.deepEqual(schemaErrors(s.proxy.log), []);
  } finally {
    await teardown(s);
  }
});

Deno.test("https: a request whose Host differs from the SNI is denied", async () => {
  const s = await setup("api.test", (p) => `api.test:${p}\nevil.test:${p}`);
  try {
    const conn = await tlsClient(s.proxy, "api.test", [s.proxy.egressCa.caCertPem]);
    try {
      await conn.write(encode(`GET / HTTP/1.1\r\nHost: evil.test:${s.upstream.port}\r\n\r\n`));
      assert.equal((await readResponse(conn)).status, 403);
    } finally {
      conn.close();
    }
    await eventually(() => s.proxy.log.lines.length >= 1);
    assert.equal(s.proxy.log.lines[0].reason, "host does not match SNI");
  } finally {
    await teardown(s);
  }
});

Deno.test("https: passthrough relays the upstream's own certificate", async () => {
  const s = await setup("pass.test", (p) => `pass.test:${p} passthrough`);
  try {
    // Corroboration: passthrough counts only when the DNS cache ties the name to the IP.
    s.proxy.dnsCache.add("pass.test", ["127.0.0.1"], 300);
    // The client trusts only the upstream's CA: it succeeds only if it sees the real certificate.
    const conn = await tlsClient(s.proxy, "pass.test", [s.upstreamCaPem]);
    try {
      await conn.write(encode(`GET /p HTTP/1.1\r\nHost: pass.test\r\nConnection: close\r\n\r\n`));
      const response = await readResponse(conn);
      assert.equal(response.status, 200);
      assert.equal(JSON.parse(response.body).path, "/p");
    } finally {
      conn.close();
    }
    await eventually(() => s.proxy.log.lines.length >= 1);
    const line = s.proxy.log.lines[0];
    assert.equal(line.type, "https");
    assert.equal(line.host, "pass.test");
    assert.equal(line.passthrough, true);
    assert.equal(line.policy, "allow");
    assert.equal(line.url, undefined);
    assert.deepEqual(schemaErrors(s.proxy.log), []);
  } finally {
    await teardown(s);
  }
});

Deno.test("https: self-signed upstream fails with 502 unless the rule is insecure", async () => {
  const strict = await setup("self.test", (p) => `self.test:${p}`, { untrusted: true });
  try {
    const r = await curlHttps(strict, "self.test", "/");
    assert.equal(r.status, 502, r.stderr);
    assert.match(r.body, /certificate/i);
    await eventually(() => strict.proxy.log.lines.length >= 1);
    const line = strict.proxy.log.lines[0];
    assert.equal(line.error, "upstream_tls_failed");
    assert.equal(line.policy, "allow");
    assert.equal(line.type, "https");
    assert.deepEqual(schemaErrors(strict.proxy.log), []);
    assert.equal(strict.proxy.proxy.counters.errors, 1);
  } finally {
    await teardown(strict);
  }
  const insecure = await setup("self.test", (p) => `self.test:${p} insecure`, { untrusted: true });
  try {
    insecure.proxy.dnsCache.add("self.test", ["127.0.0.1"], 300);
    const r = await curlHttps(insecure, "self.test", "/ok");
    assert.equal(r.status, 200, r.stderr);
    await eventually(() => insecure.proxy.log.lines.length >= 1);
    const line = insecure.proxy.log.lines[0];
    assert.equal(line.type, "https");
    assert.equal(line.insecure, true);
    assert.equal(line.policy, "allow");
    assert.deepEqual(schemaErrors(insecure.proxy.log), []);
    // Without corroboration the insecure flag does not apply: verification stays on.
    const other = await setup("self.test", (p) => `self.test:${p} insecure`, { untrusted: true });
    try {
      const refused = await curlHttps(other, "self.test", "/");
      assert.equal(refused.status, 502);
      await eventually(() => other.proxy.log.lines.length >= 1);
      assert.equal(other.proxy.log.lines[0].error, "upstream_tls_failed");
    } finally {
      await teardown(other);
    }
  } finally {
    await teardown(insecure);
  }
});

Deno.test("https: a ClientHello without SNI gets a leaf for the original IP", async () => {
  const s = await setup("127.0.0.2", (p) => `127.0.0.2:${p}`, { ip: "127.0.0.2" });
  try {
    // Deno sends no SNI for an IP address and verifies the IP SAN.
    const conn = await tlsClient(s.proxy, "127.0.0.2", [s.proxy.egressCa.caCertPem]);
    try {
      await conn.write(
        encode(`GET /ip HTTP/1.1\r\nHost: 127.0.0.2:${s.upstream.port}\r\nConnection: close\r\n\r\n`),
      );
      const response = await readResponse(conn);
      assert.equal(response.status, 200);
      assert.equal(JSON.parse(response.body).path, "/ip");
    } finally {
      conn.close();
    }
    await eventually(() => s.proxy.log.lines.length >= 1);
    const line = s.proxy.log.lines[0];
    assert.equal(line.url, `https://127.0.0.2:${s.upstream.port}/ip`);
    assert.equal(line.policy, "allow");
    assert.equal(line.dst_ip, "127.0.0.2");
  } finally {
    await teardown(s);
  }
});

Deno.test("https: a client rejecting the egress CA is logged as tls_client_rejected_ca", async () => {
  const s = await setup("api.test", (p) => `api.test:${p}`);
  try {
    const port = s.upstream.port;
    const r = await curl([...via(s.proxy, "api.test", port), `https://api.test:${port}/`]);
    assert.notEqual(r.code, 0);
    await eventually(() => s.proxy.log.lines.length >= 1);
    const line = s.proxy.log.lines[0];
    assert.equal(line.type, "https");
    assert.equal(line.host, "api.test");
    assert.equal(line.error, "tls_client_rejected_ca");
    assert.equal(line.policy, "allow");
    assert.deepEqual(schemaErrors(s.proxy.log), []);
    // No SNI: host is null on the error line.
    const ipSetup = await setup("127.0.0.3", (p) => `127.0.0.3:${p}`, { ip: "127.0.0.3" });
    try {
      await assert.rejects(async () => {
        const conn = await tlsClient(ipSetup.proxy, "127.0.0.3");
        await conn.handshake();
      });
      await eventually(() => ipSetup.proxy.log.lines.length >= 1);
      assert.equal(ipSetup.proxy.log.lines[0].host, null);
      assert.equal(ipSetup.proxy.log.lines[0].error, "tls_client_rejected_ca");
      assert.deepEqual(schemaErrors(ipSetup.proxy.log), []);
    } finally {
      await teardown(ipSetup);
    }
  } finally {
    await teardown(s);
  }
});

Deno.test("https: malformed ClientHello and garbage do not kill the proxy", async () => {
  const s = await setup("api.test", (p) => `api.test:${p}`);
  try {
    const payloads = [
      new Uint8Array([0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0x00, 0x00, 0x04, 0xff, 0xff, 0xff, 0xff]),
      new Uint8Array([0x16, 0x03, 0x01, 0xff, 0xff]),
      encode("\x00\x01garbage\r\n\r\n"),
    ];
    for (const payload of payloads) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: s.proxy.port });
      await conn.write(payload).catch(() => 0);
      const answer = await readAll(conn, 1024, 2000);
      assert.equal(answer.length, 0);
      conn.close();
    }
    const r = await curlHttps(s, "api.test", "/after");
    assert.equal(r.status, 200, r.stderr);
    await eventually(() => s.proxy.log.lines.some((l) => l.type === "https"));
    const tcp = s.proxy.log.lines.filter((l) => l.type === "tcp");
    assert.equal(tcp.length, 3);
    assert.ok(tcp.every((l) => l.policy === "deny"));
  } finally {
    await teardown(s);
  }
});

Deno.test("https: unreachable upstream gets 502 and upstream_unreachable", async () => {
  const s = await setup("api.test", (p) => `api.test:${p}`);
  try {
    await s.upstream.close();
    const r = await curlHttps(s, "api.test", "/");
    assert.equal(r.status, 502, r.stderr);
    await eventually(() => s.proxy.log.lines.length >= 1);
    assert.equal(s.proxy.log.lines[0].error, "upstream_unreachable");
  } finally {
    await s.proxy.close();
  }
});

Deno.test("https: chunked upload streams through", async () => {
  const s = await setup("api.test", (p) => `POST https://api.test:${p}/upload`);
  try {
    const data = new Uint8Array(3 * 1024 * 1024).map((_, i) => i % 251);
    let sum = 0;
    for (const b of data) sum = (sum + b) % 65521;
    const port = s.upstream.port;
    const r = await curl([
      ...via(s.proxy, "api.test", port),
      "--cacert",
      s.caFile,
      "-H",
      "Transfer-Encoding: chunked",
      "--data-binary",
      "@-",
      `https://api.test:${port}/upload`,
    ], data);
    assert.equal(r.status, 200, r.stderr);
    const body = JSON.parse(r.body);
    assert.equal(body.length, data.length);
    assert.equal(body.sum, sum);
    assert.equal(body.method, "POST");
  } finally {
    await teardown(s);
  }
});

function download(s: Setup, size: number) {
  const port = s.upstream.port;
  return new Deno.Command("curl", {
    args: [
      "-sS",
      "--max-time",
      "60",
      ...via(s.proxy, "api.test", port),
      "--cacert",
      s.caFile,
      "-o",
      "/dev/null",
      "-w",
      "%{size_download}",
      `https://api.test:${port}/big?n=${size}`,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
}

Deno.test("https: 100 MB download is streamed with bounded memory", async () => {
  const s = await setup("api.test", (p) => `api.test:${p}`);
  try {
    // A warm-up lets V8 size its young generation first (that growth is not buffering).
    const warm = await download(s, 20 * 1024 * 1024);
    assert.equal(warm.code, 0, decode(warm.stderr));
    const size = 100 * 1024 * 1024;
    const before = Deno.memoryUsage().rss;
    let peak = before;
    const sampler = setInterval(() => (peak = Math.max(peak, Deno.memoryUsage().rss)), 20);
    const started = performance.now();
    const output = await download(s, size);
    clearInterval(sampler);
    const seconds = (performance.now() - started) / 1000;
    assert.equal(output.code, 0, decode(output.stderr));
    assert.equal(Number(decode(output.stdout)), size);
    const growth = peak - before;
    console.log(
      `100 MB via intercepted TLS: ${seconds.toFixed(2)} s, ${(size / 1048576 / seconds).toFixed(0)} MB/s, ` +
        `RSS growth ${(growth / 1048576).toFixed(1)} MB`,
    );
    assert.ok(growth < 25 * 1024 * 1024, `RSS grew by ${growth} bytes`);
  } finally {
    await teardown(s);
  }
});

Deno.test("https: audit mode intercepts, allows and logs the enforce verdict", async () => {
  const s = await setup("api.test", (p) => `GET https://api.test:${p}/only`, { audit: true });
  try {
    const r = await curlHttps(s, "api.test", "/elsewhere");
    assert.equal(r.status, 200, r.stderr);
    const denyHost = await setup("nope.test", () => `never.test:1`, { audit: true });
    try {
      const r2 = await curlHttps(denyHost, "nope.test", "/x");
      assert.equal(r2.status, 200, r2.stderr);
      await eventually(() => denyHost.proxy.log.lines.length >= 1);
      const line = denyHost.proxy.log.lines[0];
      assert.equal(line.policy, "deny");
      assert.equal(line.audit, true);
      assert.equal(line.url, `https://nope.test:${denyHost.upstream.port}/x`);
    } finally {
      await teardown(denyHost);
    }
    await eventually(() => s.proxy.log.lines.length >= 1);
    const line = s.proxy.log.lines[0];
    assert.equal(line.policy, "deny");
    assert.equal(line.reason, "no matching rule");
    assert.equal(line.audit, true);
    assert.deepEqual(schemaErrors(s.proxy.log), []);
  } finally {
    await teardown(s);
  }
});

Deno.test("https: a node https client with the egress CA reuses its keep-alive connection", async () => {
  const s = await setup("node.test", (p) => `node.test:${p}`);
  try {
    const script = `
      const https = require("node:https");
      const fs = require("node:fs");
      const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
      const ca = fs.readFileSync(process.argv[1]);
      const get = (path) => new Promise((resolve, reject) => {
        const req = https.request({ host: "127.0.0.1", port: Number(process.argv[2]), servername: "node.test",
          path, agent, ca, headers: { host: "node.test:" + process.argv[3] } }, (res) => {
          let body = ""; res.on("data", (c) => body += c); res.on("end", () => resolve(res.statusCode + " " + body));
        });
        req.on("error", reject); req.end();
      });
      (async () => { console.log(await get("/one")); console.log(await get("/two")); agent.destroy(); })()
        .catch((e) => { console.error(e.message); process.exit(1); });`;
    const output = await new Deno.Command("node", {
      args: ["-e", script, s.caFile, String(s.proxy.port), String(s.upstream.port)],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(output.code, 0, decode(output.stderr));
    const [one, two] = decode(output.stdout).trim().split("\n");
    assert.match(one, /^200 .*"path":"\/one"/);
    assert.match(two, /^200 .*"path":"\/two"/);
    await eventually(() => s.proxy.log.lines.length >= 2);
    assert.equal(new Set(s.proxy.log.lines.map((l) => l.src_port)).size, 1, "one client connection");
  } finally {
    await teardown(s);
  }
});
