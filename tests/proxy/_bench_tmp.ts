import { httpUpstream, proxyUnderTest, testCa, tlsClient, readResponse, encode } from "./harness.ts";
const ca = await testCa("upstream");
const leaf = await ca.leafFor("b.test");
const up = await httpUpstream("127.0.0.1", () => new Response("ok"), { cert: leaf.certPem, key: leaf.keyPem });
const p = await proxyUnderTest({ policy: `b.test:${up.port}`, target: { ip: "127.0.0.1", port: up.port }, upstreamCaCerts: [ca.caCertPem] });
const N = 50;
for (const label of ["warm", "measure"]) {
  const t0 = performance.now();
  for (let i = 0; i < N; i++) {
    const c = await tlsClient(p, "b.test", [p.egressCa.caCertPem]);
    await c.write(encode(`GET / HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n`));
    await readResponse(c); c.close();
  }
  const t1 = performance.now();
  const c = await tlsClient(p, "b.test", [p.egressCa.caCertPem]);
  for (let i = 0; i < N; i++) { await c.write(encode(`GET / HTTP/1.1\r\nHost: b.test\r\n\r\n`)); await readResponse(c); }
  c.close();
  const t2 = performance.now();
  console.log(label, "new conn+req ms", ((t1 - t0) / N).toFixed(2), "keep-alive req ms", ((t2 - t1) / N).toFixed(2));
}
// direct baseline
{
  const t0 = performance.now();
  for (let i = 0; i < N; i++) {
    const c = await Deno.startTls(await Deno.connect({hostname:"127.0.0.1", port: up.port}), { hostname: "b.test", caCerts: [ca.caCertPem] });
    await c.write(encode(`GET / HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n`)); await readResponse(c); c.close();
  }
  console.log("direct new conn+req ms", ((performance.now() - t0) / N).toFixed(2));
}
await p.close(); await up.close();
