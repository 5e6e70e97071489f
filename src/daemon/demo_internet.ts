// The demo's throw-away "internet", run by `egress demo` inside its internet namespace: HTTPS on
// 443 (certificate from the demo's throw-away CA), plain HTTP on 80, a TCP echo on 7000 and 7001,
// a UDP echo on 9000, and a tiny DNS server on 53 answering every *.demo.test name with this
// namespace's address. Prints one JSON line once everything listens; stops on SIGTERM.

import dgram from "node:dgram";
import { Buffer } from "node:buffer";
import dnsPacket from "dns-packet";

const config = JSON.parse(Deno.args[0]) as { ip: string; certPem: string; keyPem: string };

function handler(request: Request): Response {
  const url = new URL(request.url);
  return new Response(`hello from ${url.hostname}${url.pathname}\n`, {
    headers: { "content-type": "text/plain" },
  });
}

const quiet = { onListen() {}, onError: () => new Response("error", { status: 500 }) };
Deno.serve({ hostname: config.ip, port: 80, ...quiet }, handler);
Deno.serve({ hostname: config.ip, port: 443, cert: config.certPem, key: config.keyPem, ...quiet }, handler);

for (const port of [7000, 7001]) {
  const listener = Deno.listen({ hostname: config.ip, port });
  (async () => {
    for await (const conn of listener) {
      (async () => {
        const buffer = new Uint8Array(4096);
        try {
          for (;;) {
            const n = await conn.read(buffer);
            if (n === null) break;
            let offset = 0;
            while (offset < n) offset += await conn.write(buffer.subarray(offset, n));
          }
        } catch {
          // client went away
        } finally {
          try {
            conn.close();
          } catch {
            // closed
          }
        }
      })();
    }
  })();
}

const echo = dgram.createSocket("udp4");
echo.on("message", (message, rinfo) => echo.send(message, rinfo.port, rinfo.address));
await new Promise<void>((resolve) => echo.bind(9000, config.ip, () => resolve()));

const dns = dgram.createSocket("udp4");
dns.on("message", (message, rinfo) => {
  try {
    const query = dnsPacket.decode(message);
    const question = query.questions?.[0];
    const known = question !== undefined && /(^|\.)demo\.test$/i.test(question.name);
    const answers = known && question.type === "A"
      ? [{ type: "A" as const, name: question.name, ttl: 60, data: config.ip }]
      : [];
    const reply = dnsPacket.encode({
      type: "response",
      id: query.id,
      flags: dnsPacket.AUTHORITATIVE_ANSWER | (known ? 0 : 3),
      questions: query.questions,
      answers,
    });
    dns.send(Buffer.from(reply), rinfo.port, rinfo.address);
  } catch {
    // not DNS: ignore
  }
});
await new Promise<void>((resolve) => dns.bind(53, config.ip, () => resolve()));

Deno.addSignalListener("SIGTERM", () => Deno.exit(0));
console.log(JSON.stringify({ ready: true }));
