// The DNS proxy's upstream UDP pool against a scripted resolver on 127.0.0.2: id remapping, strict
// matching of (resolver address, port, id, question), late answers, rotation, bounds. Unprivileged.
import assert from "node:assert/strict";
import dgram from "node:dgram";
import type { Buffer } from "node:buffer";
import { UdpUpstreamPool } from "../../src/dns/upstream_pool.ts";
import { decode, encodeQuery } from "./fake_upstream.ts";
import { readDnsQuestions } from "../../src/proto/dns_detect.ts";

type Received = { message: Buffer; port: number };

/** A resolver that hands each query to the test, which answers (or not) as it likes. */
async function scriptedResolver(ip = "127.0.0.2") {
  const socket = dgram.createSocket("udp4");
  const queue: Received[] = [];
  let wake: (() => void) | undefined;
  socket.on("message", (message, rinfo) => {
    queue.push({ message, port: rinfo.port });
    wake?.();
  });
  await new Promise<void>((resolve) => socket.bind(0, ip, () => resolve()));
  return {
    ip,
    port: socket.address().port,
    async next(): Promise<Received> {
      while (queue.length === 0) await new Promise<void>((resolve) => (wake = resolve));
      return queue.shift()!;
    },
    reply(to: Received, message: Uint8Array, from: dgram.Socket = socket): Promise<void> {
      return new Promise((resolve) => from.send(message, to.port, "127.0.0.1", () => resolve()));
    },
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
}

/** The query turned into a response (QR set), with a question name changed when asked. */
function responseTo(query: Uint8Array, rename?: [string, string]): Uint8Array {
  const response = new Uint8Array(query);
  response[2] |= 0x80;
  if (!rename) return response;
  // Byte-for-char (true ISO-8859-1): TextDecoder("latin1") is windows-1252 and would rewrite the
  // random id's bytes 0x80–0x9f, turning the forged answer into a different id.
  const text = String.fromCharCode(...response);
  return Uint8Array.from(text.replace(rename[0], rename[1]), (c) => c.charCodeAt(0));
}

function expected(query: Uint8Array) {
  const read = readDnsQuestions(query);
  if (read.kind !== "ok") throw new Error("bad test query");
  return read.questions[0];
}

Deno.test("upstream pool: colliding client ids are remapped; each answer goes back with its own id", async () => {
  const resolver = await scriptedResolver();
  const pool = new UdpUpstreamPool({ sockets: 2 });
  try {
    const queries = ["a.example.com", "b.example.com", "c.example.com"].map((name) => encodeQuery(7, [name]));
    const answers = queries.map((query) => pool.query(query, expected(query), resolver, 10_000));
    for (const answer of answers) answer.catch(() => {}); // awaited below; never left unhandled
    const seen: Received[] = [];
    for (let i = 0; i < 3; i++) seen.push(await resolver.next());
    const ids = seen.map((r) => r.message.readUInt16BE(0));
    // Random ids, distinct per socket: with 3 queries on 2 sockets at least two differ from 7.
    assert.ok(ids.filter((id) => id !== 7).length >= 2, `ids ${ids}`);
    for (const received of seen.reverse()) await resolver.reply(received, responseTo(received.message));
    const replies = (await Promise.all(answers)).map((answer) => decode(answer));
    assert.deepEqual(replies.map((r) => [r.id, r.questions?.[0].name]), [
      [7, "a.example.com"],
      [7, "b.example.com"],
      [7, "c.example.com"],
    ]);
    assert.equal(pool.pending, 0);
    assert.equal(pool.stats.answered, 3);
  } finally {
    await pool.close();
    await resolver.close();
  }
});

Deno.test("upstream pool: spoofed answers (other port, other question, not a response) are ignored", async () => {
  const resolver = await scriptedResolver();
  const spoofer = dgram.createSocket("udp4");
  await new Promise<void>((resolve) => spoofer.bind(0, "127.0.0.2", () => resolve()));
  const pool = new UdpUpstreamPool({ sockets: 1 });
  try {
    const query = encodeQuery(99, ["real.example.com"]);
    const answer = pool.query(query, expected(query), resolver, 10_000);
    // If an assertion below fails, the pending answer is rejected by close(): report the assertion.
    answer.catch(() => {});
    const received = await resolver.next();
    // Right id and question, wrong source port: another process on the resolver's host.
    await resolver.reply(received, responseTo(received.message), spoofer);
    // Right source and id, another question name.
    await resolver.reply(received, responseTo(received.message, ["real", "evil"]));
    // Right source, id and question but QR clear (a query, not an answer).
    await resolver.reply(received, received.message);
    // Wrong id.
    const wrongId = responseTo(received.message);
    wrongId[0] ^= 0xff;
    await resolver.reply(received, wrongId);
    // Wait until all four forgeries were seen (a fixed sleep is too short on a loaded machine).
    for (let waited = 0; pool.stats.mismatched + pool.stats.unknownId < 4 && waited < 5000; waited += 20) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.equal(pool.pending, 1, "still waiting for the real answer");
    assert.equal(pool.stats.mismatched, 3);
    assert.equal(pool.stats.unknownId, 1);
    const real = responseTo(received.message);
    real[3] |= 0x80; // RA, set only on the genuine answer: shows which one was accepted
    await resolver.reply(received, real);
    const reply = await answer;
    assert.equal(reply[3] & 0x80, 0x80);
    assert.equal(decode(reply).id, 99);
  } finally {
    await pool.close();
    await new Promise<void>((resolve) => spoofer.close(() => resolve()));
    await resolver.close();
  }
});

Deno.test("upstream pool: a late answer after the deadline is dropped, not given to a later query", async () => {
  const resolver = await scriptedResolver();
  const pool = new UdpUpstreamPool({ sockets: 1 });
  try {
    const query = encodeQuery(1, ["late.example.com"]);
    const first = pool.query(query, expected(query), resolver, 150);
    const received = await resolver.next();
    await assert.rejects(first, /no answer within 150 ms/);
    const second = pool.query(query, expected(query), resolver, 10_000);
    second.catch(() => {});
    const secondReceived = await resolver.next();
    await resolver.reply(received, responseTo(received.message)); // the late one
    await new Promise((resolve) => setTimeout(resolve, 50));
    if (received.message.readUInt16BE(0) !== secondReceived.message.readUInt16BE(0)) {
      assert.equal(pool.pending, 1, "the late answer did not settle the second query");
    }
    await resolver.reply(secondReceived, responseTo(secondReceived.message));
    assert.equal(decode(await second).id, 1);
    assert.equal(pool.stats.timedOut, 1);
  } finally {
    await pool.close();
    await resolver.close();
  }
});

Deno.test("upstream pool: sockets rotate to new ports; full pool and close() reject", async () => {
  const resolver = await scriptedResolver();
  const pool = new UdpUpstreamPool({ sockets: 1, rotateAfter: 3, maxPendingPerSocket: 2 });
  try {
    const ports = new Set<number>();
    for (let i = 0; i < 6; i++) {
      const query = encodeQuery(i, [`r${i}.example.com`]);
      const answer = pool.query(query, expected(query), resolver, 5000);
      answer.catch(() => {});
      const received = await resolver.next();
      ports.add(received.port);
      await resolver.reply(received, responseTo(received.message));
      await answer;
    }
    assert.equal(ports.size, 2, `source ports ${[...ports]}`);
    assert.equal(pool.stats.rotations, 2);
    const hang = (name: string) => {
      const query = encodeQuery(0, [name]);
      return pool.query(query, expected(query), resolver, 5000);
    };
    const waiting = [hang("w1.example.com"), hang("w2.example.com")];
    for (const query of waiting) query.catch(() => {}); // asserted below; never left unhandled
    await assert.rejects(hang("w3.example.com"), /too many upstream queries waiting \(2\)/);
    const rejected = waiting.map((query) => assert.rejects(query, /closed/));
    await pool.close();
    await Promise.all(rejected);
    await assert.rejects(hang("w4.example.com"), /closed/);
  } finally {
    await pool.close();
    await resolver.close();
  }
});

Deno.test("upstream pool: bad options are rejected with the option's name", () => {
  assert.throws(() => new UdpUpstreamPool({ sockets: 0 }), /sockets must be an integer in 1\.\.64/);
  assert.throws(() => new UdpUpstreamPool({ rotateAfter: 1.5 }), /rotateAfter/);
});
