// Bounds on what the app in the pod can make the sidecar hold (dynamic set elements, queries in
// flight). In-process: a fake upstream on loopback and a shell script as the `nft` binary (it
// accepts every transaction and appends it to a file), so no firewall is touched. Root: the
// upstream socket sets SO_MARK.
import assert from "node:assert/strict";
import * as dgram from "node:dgram";
import { Buffer } from "node:buffer";
import dnsPacket from "dns-packet";
import { commandExists, needsRoot, unmet } from "../helpers/requirements.ts";
import { testWhen } from "../helpers/requirements.ts";
import { ConnectionLog } from "../../src/log/connection_log.ts";
import { OperationalLog } from "../../src/log/operational_log.ts";
import { parseTextPolicy } from "../../src/sidecar/policy.ts";
import { Sidecar } from "../../src/sidecar/sidecar.ts";
import { SidecarDnsProxy } from "../../src/sidecar/dns.ts";
import { compilePolicy, DENY_ALL, judgeName } from "../../src/sidecar/policy.ts";

const SKIP = unmet([[needsRoot() === undefined, "needs root (SO_MARK)"], [
  commandExists("/bin/sh"),
  "needs /bin/sh",
]]);
const OPTIONS = { sanitizeOps: false, sanitizeResources: false };

/** Answers `nN.<zone>` with three A records; names starting with `slow` never get an answer. */
async function fakeUpstream(): Promise<{ port: number; close(): void }> {
  const socket = dgram.createSocket("udp4");
  socket.on("message", (message, remote) => {
    const query = dnsPacket.decode(message);
    const name = query.questions?.[0]?.name ?? "";
    if (name.startsWith("slow")) return;
    const seed = Number(/^n(\d+)/.exec(name)?.[1] ?? 0);
    const answers = [1, 2, 3].map((i) => ({
      type: "A" as const,
      name,
      ttl: 60,
      data: `198.51.${seed & 255}.${i}`,
    }));
    socket.send(
      dnsPacket.encode({
        id: query.id,
        type: "response",
        flags: 0x8180,
        questions: query.questions,
        answers,
      }),
      remote.port,
      remote.address,
    );
  });
  await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
  return { port: socket.address().port, close: () => socket.close() };
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** One UDP query to the proxy; resolves with the rcode and the time it took. */
function ask(port: number, name: string): Promise<{ rcode: number; ms: number }> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket("udp4");
    const timer = setTimeout(() => {
      socket.close();
      reject(new Error(`no reply for ${name}`));
    }, 8000);
    socket.on("message", (reply) => {
      clearTimeout(timer);
      socket.close();
      resolve({ rcode: reply[3] & 0x0f, ms: Date.now() - started });
    });
    const query = dnsPacket.encode({
      id: Math.floor(Math.random() * 65535),
      type: "query",
      flags: dnsPacket.RECURSION_DESIRED,
      questions: [{ type: "A", name }],
    });
    socket.send(Buffer.from(query), port, "127.0.0.1");
  });
}

async function withSidecar(
  options: { maxDynamicElements?: number; maxDnsInFlight?: number; dnsTimeoutMs?: number },
  fn: (sidecar: Sidecar, dnsPort: number) => Promise<void>,
): Promise<void> {
  const upstream = await fakeUpstream();
  const dir = await Deno.makeTempDir({ prefix: "egress-sidecar-bounds-" });
  const log = await ConnectionLog.open({ path: `${dir}/connections.jsonl` });
  const ops = new OperationalLog({ stderr: false });
  const dnsPort = freePort();
  const fakeNft = `${dir}/nft`;
  await Deno.writeTextFile(fakeNft, `#!/bin/sh\ncat >> ${dir}/transactions\n`, { mode: 0o755 });
  const sidecar = new Sidecar({
    mode: "dns+nft",
    requireNft: true,
    dnsPort,
    upstreams: [{ address: "127.0.0.1", port: upstream.port }],
    mark: 1,
    doh: [],
    nftPath: fakeNft,
    flushConntrack: false, // this runs in the root namespace: leave its conntrack table alone
    log,
    ops,
    ...options,
  });
  try {
    await sidecar.start();
    const policy = parseTextPolicy("*.cap.test:80\n");
    assert.ok(policy.ok);
    await sidecar.setPolicy(policy.policy);
    await fn(sidecar, dnsPort);
  } finally {
    await sidecar.stop();
    upstream.close();
    await log.close();
    ops.close();
    await Deno.remove(dir, { recursive: true });
  }
}

testWhen(SKIP, "bounds: a full dynamic set answers SERVFAIL for new addresses (fail closed)", async () => {
  await withSidecar({ maxDynamicElements: 8 }, async (sidecar, port) => {
    assert.equal((await ask(port, "n1.cap.test")).rcode, 0);
    assert.equal((await ask(port, "n2.cap.test")).rcode, 0);
    assert.equal(sidecar.dynamicAddressCount(), 6);
    assert.equal((await ask(port, "n3.cap.test")).rcode, 2); // 6 + 3 > 8
    assert.equal((await ask(port, "n1.cap.test")).rcode, 0); // known addresses still resolve
    assert.equal(sidecar.dynamicAddressCount(), 6);
    assert.equal(sidecar.trackedNames, 2);
    assert.equal((await ask(port, "other.test")).rcode, 3); // denied names are unaffected
  });
}, OPTIONS);

testWhen(SKIP, "bounds: queries beyond the in-flight cap get SERVFAIL at once", async () => {
  await withSidecar({ maxDnsInFlight: 3, dnsTimeoutMs: 1500 }, async (_sidecar, port) => {
    const slow = [1, 2, 3].map((i) => ask(port, `slow${i}.cap.test`));
    await new Promise((r) => setTimeout(r, 200));
    const refused = await ask(port, "slow4.cap.test");
    assert.equal(refused.rcode, 2);
    assert.ok(refused.ms < 1000, `refused after ${refused.ms} ms`);
    for (const reply of await Promise.all(slow)) {
      assert.equal(reply.rcode, 2);
      assert.ok(reply.ms >= 1400, `timed out after ${reply.ms} ms`);
    }
    assert.equal((await ask(port, "n5.cap.test")).rcode, 0); // slots are given back
  });
}, OPTIONS);

/** Resolves with "closed" when the peer closes `conn`, or "open" after `ms`. */
async function closedWithin(conn: Deno.TcpConn, ms: number): Promise<"closed" | "open"> {
  const buffer = new Uint8Array(16);
  const timeout = new Promise<"open">((r) => setTimeout(() => r("open"), ms));
  const read = conn.read(buffer).then((n) => (n === null ? "closed" as const : "open" as const))
    .catch(() => "closed" as const);
  return await Promise.race([read, timeout]);
}

Deno.test({
  name: "bounds: TCP DNS clients beyond the cap are closed at once; idle ones after the idle time",
  ...OPTIONS,
  fn: async () => {
    const compiled = compilePolicy(DENY_ALL);
    const port = freePort();
    const proxy = new SidecarDnsProxy({
      port,
      upstreams: [],
      mark: 1,
      maxTcpClients: 3,
      tcpIdleMs: 400,
      hooks: {
        judge: (name) => judgeName(compiled, name),
        onAnswer: () => Promise.resolve(),
        log: () => {},
        warn: () => {},
      },
    });
    await proxy.start();
    const clients: Deno.TcpConn[] = [];
    try {
      for (let i = 0; i < 4; i++) {
        clients.push(await Deno.connect({ hostname: "127.0.0.1", port }));
        await new Promise((r) => setTimeout(r, 50)); // let the proxy accept in order
      }
      assert.equal(await closedWithin(clients[3], 200), "closed"); // the fourth: over the cap
      assert.equal(await closedWithin(clients[2], 100), "open"); // (its read stays pending)
      // A client that asks is answered (NXDOMAIN under deny-all) ...
      const query = dnsPacket.encode({ id: 7, type: "query", questions: [{ type: "A", name: "x.test" }] });
      const framed = new Uint8Array(query.length + 2);
      framed.set([query.length >> 8, query.length & 0xff]);
      framed.set(query, 2);
      await clients[0].write(framed);
      const reply = new Uint8Array(512);
      let got = 0;
      while (got < 6) {
        const n = await clients[0].read(reply.subarray(got));
        assert.ok(n !== null, "closed before the answer");
        got += n;
      }
      assert.equal(reply[2 + 3] & 0x0f, 3);
      // ... silent ones are closed after the idle time.
      assert.equal(await closedWithin(clients[1], 800), "closed");
    } finally {
      for (const client of clients) {
        try {
          client.close();
        } catch {
          // closed by the proxy
        }
      }
      proxy.close();
    }
  },
});
