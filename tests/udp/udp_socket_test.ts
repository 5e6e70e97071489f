// The libc UDP socket of the DNS proxy (src/udp/udp_socket.ts) on loopback. Unprivileged.
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { UdpSocket } from "../../src/udp/udp_socket.ts";
import { needsRoot, testWhen } from "../helpers/requirements.ts";

Deno.test("udp socket: receives from node:dgram with the sender's address, answers back", async () => {
  const seen: Array<[string, string, number]> = [];
  const socket: UdpSocket = UdpSocket.bind("127.0.0.1", 0, (message, ip, port) => {
    seen.push([new TextDecoder().decode(message), ip, port]);
    socket.send(message.reverse(), ip, port);
  });
  const peer = dgram.createSocket("udp4");
  try {
    await new Promise<void>((resolve) => peer.bind(0, "127.0.0.2", () => resolve()));
    const answer = new Promise<string>((resolve) => peer.once("message", (m) => resolve(m.toString())));
    peer.send("abc", socket.port, "127.0.0.1");
    assert.equal(await answer, "cba");
    assert.deepEqual(seen, [["abc", "127.0.0.2", peer.address().port]]);
  } finally {
    await new Promise<void>((resolve) => peer.close(() => resolve()));
    await socket.close();
  }
});

Deno.test("udp socket: a burst larger than one batch arrives whole, each datagram its own copy", async () => {
  const received: Uint8Array[] = [];
  const socket = UdpSocket.bind("127.0.0.1", 0, (message) => received.push(message), { batchLimit: 16 });
  const sender = UdpSocket.bind("127.0.0.1", 0, () => {});
  try {
    for (let i = 0; i < 500; i++) {
      assert.ok(sender.send(new Uint8Array([i >> 8, i & 0xff]), "127.0.0.1", socket.port));
      // In runs of 100 the default receive buffer (unprivileged) holds them.
      if (i % 100 === 99) await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const deadline = Date.now() + 3000;
    while (received.length < 500 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.equal(received.length, 500);
    assert.deepEqual(received.map((m) => (m[0] << 8) | m[1]), Array.from({ length: 500 }, (_, i) => i));
  } finally {
    await sender.close();
    await socket.close();
  }
});

Deno.test("udp socket: close() wakes the waiting loop at once and is idempotent; bad binds say where", async () => {
  const socket = UdpSocket.bind("127.0.0.1", 0, () => {});
  const started = performance.now();
  await Promise.all([socket.close(), socket.close()]);
  await socket.finished;
  assert.ok(performance.now() - started < 500);
  assert.equal(socket.send(new Uint8Array(1), "127.0.0.1", 9), false);
  const taken = UdpSocket.bind("127.0.0.1", 0, () => {});
  try {
    assert.throws(
      () => UdpSocket.bind("127.0.0.1", taken.port, () => {}),
      new RegExp(`Cannot bind UDP 127\\.0\\.0\\.1:${taken.port}: .*\\(errno 98\\)`),
    );
    assert.throws(() => UdpSocket.bind("::1", 0, () => {}), /Cannot use address "::1": not IPv4/);
  } finally {
    await taken.close();
  }
});

testWhen(
  needsRoot(),
  "udp socket: 3,000 datagrams sent while the loop is busy fit the 4 MiB buffer",
  async () => {
    let received = 0;
    const socket = UdpSocket.bind("127.0.0.1", 0, () => received++);
    const sender = UdpSocket.bind("127.0.0.1", 0, () => {});
    try {
      // Synchronous sends: the receive loop cannot run until they are all queued in the kernel.
      for (let i = 0; i < 3000; i++) assert.ok(sender.send(new Uint8Array(64), "127.0.0.1", socket.port));
      const deadline = Date.now() + 3000;
      while (received < 3000 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      assert.equal(received, 3000);
    } finally {
      await sender.close();
      await socket.close();
    }
  },
);
