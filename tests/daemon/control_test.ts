// Control socket protocol limits and the stop/status commands against a real socket. The server
// authenticates by peer credentials: commands other than `status` need root (outside runner mode).
import assert from "node:assert/strict";
import { type PeerAnswer, PeerControlServer } from "../../src/control/peer_server.ts";
import { needsRoot, testWhen } from "../helpers/requirements.ts";
import { sendControlCommand } from "../../src/control/client.ts";
import { parseReply, parseRequest } from "../../src/control/protocol.ts";
import { runStatus } from "../../src/cli/status.ts";
import { runStop } from "../../src/cli/stop.ts";
import { runGuarded } from "../../src/cli/main.ts";

async function withServer(
  handler: (command: string, args: string[]) => PeerAnswer,
  fn: (path: string, server: PeerControlServer) => Promise<void>,
  timeoutMs = 5000,
) {
  const dir = await Deno.makeTempDir({ prefix: "egress-control-" });
  const path = `${dir}/c.sock`;
  const server = await PeerControlServer.listen({
    path,
    handler,
    requestTimeoutMs: timeoutMs,
    authentication: { runner: false, contextOf: () => ({}) },
  });
  try {
    await fn(path, server);
  } finally {
    await server.close();
    await server.remove();
    await Deno.remove(dir, { recursive: true });
  }
}

async function raw(path: string, bytes: Uint8Array, close = false): Promise<string> {
  const conn = await Deno.connect({ transport: "unix", path });
  await conn.write(bytes);
  if (close) await conn.closeWrite();
  const chunks: string[] = [];
  const buffer = new Uint8Array(1024);
  for (;;) {
    const n = await conn.read(buffer);
    if (n === null) break;
    chunks.push(new TextDecoder().decode(buffer.subarray(0, n)));
  }
  conn.close();
  return chunks.join("");
}

const echo = (command: string, args: string[]) => ({ reply: `ok: ${command}|${args.join(",")}` });

testWhen(needsRoot(), "control: one line in, one line out; request words parsed", async () => {
  await withServer(echo, async (path) => {
    assert.deepEqual(await sendControlCommand(path, "status"), { ok: true, text: "status|" });
    assert.equal(await raw(path, new TextEncoder().encode("  reload   tok\r\n")), "ok: reload|tok\n");
    // EOF without a newline ends the line too.
    assert.equal(await raw(path, new TextEncoder().encode("status"), true), "ok: status|\n");
  });
  assert.deepEqual(parseRequest(" a b  c "), { command: "a", args: ["b", "c"] });
  assert.deepEqual(parseReply("error: nope\n"), { ok: false, text: "nope" });
  assert.equal(parseReply("garbage").ok, false);
});

Deno.test("control: a request over 256 bytes is refused", async () => {
  await withServer(echo, async (path) => {
    const exactly = `status ${"s".repeat(249)}`;
    assert.equal(exactly.length, 256);
    assert.equal(
      await raw(path, new TextEncoder().encode(exactly + "\n")),
      `ok: status|${"s".repeat(249)}\n`,
    );
    const long = "s".repeat(257);
    assert.equal(await raw(path, new TextEncoder().encode(long + "\n")), "error: request too long\n");
  });
});

Deno.test("control: a client that sends no line in time gets an error", async () => {
  await withServer(echo, async (path) => {
    const started = performance.now();
    assert.equal(await raw(path, new TextEncoder().encode("stat")), "error: request timed out\n");
    assert.ok(performance.now() - started >= 250);
  }, 300);
});

Deno.test("control: the socket is mode 0600 and is created atomically", async () => {
  await withServer(echo, (path) => {
    const info = Deno.lstatSync(path);
    assert.equal(info.isSocket, true);
    assert.equal(info.mode! & 0o777, 0o600);
    return Promise.resolve();
  });
});

testWhen(needsRoot(), "status/stop: exit codes for enforce, audit, no socket, refusal", async () => {
  const status = {
    mode: "enforce",
    state: "running",
    rules: 3,
    restarts: 0,
    counters: { allowed: 1, denied: 2, dns: 0, errors: 0 },
  };
  let mode = "enforce";
  let shutdownReply = "ok: shutting down";
  let server: PeerControlServer | undefined;
  await withServer((command: string): PeerAnswer => {
    if (command === "status") return { reply: `ok: ${JSON.stringify({ ...status, mode })}` };
    if (command === "shutdown") {
      return {
        reply: shutdownReply,
        afterReply: () => {
          if (shutdownReply.startsWith("ok")) server?.remove();
        },
      };
    }
    return { reply: "error: unknown command" };
  }, async (path, s) => {
    server = s;
    assert.equal(await runStatus(["--control-socket", path]), 0);
    mode = "audit";
    assert.equal(await runStatus(["--control-socket", path, "--json"]), 1);
    shutdownReply = "error: unauthorized (test)";
    assert.equal(await runGuarded("stop", () => runStop(["--control-socket", path])), 1);
    shutdownReply = "ok: shutting down";
    assert.equal(await runStop(["--control-socket", path, "--timeout", "2"]), 0);
    assert.equal(await runStatus(["--control-socket", path]), 1, "unreachable");
    assert.equal(await runGuarded("stop", () => runStop(["--control-socket", path])), 2, "no socket");
  });
});
