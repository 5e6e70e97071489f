import assert from "node:assert/strict";
import * as dgram from "node:dgram";
import type { AddressInfo } from "node:net";
import dnsPacket from "dns-packet";
import fc from "fast-check";
import {
  classifyDnsOverTcp,
  DnsTcpDeframer,
  frameDnsTcp,
  looksLikeDnsOverTcp,
  looksLikeDnsQuery,
  MAX_QUESTIONS_REPORTED,
  readDnsQuestions,
} from "../../src/proto/dns_detect.ts";
import { commandExists, testWhen } from "../helpers/requirements.ts";

// deno-lint-ignore no-explicit-any
function encode(packet: any): Uint8Array {
  return new Uint8Array(dnsPacket.encode(packet));
}

function query(name: string, type = "A", extra: Record<string, unknown> = {}): Uint8Array {
  return encode({
    type: "query",
    id: 0x1234,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type, name }],
    ...extra,
  });
}

Deno.test("looksLikeDnsQuery: real encoder output, EDNS, responses, other opcodes", () => {
  assert.equal(looksLikeDnsQuery(query("example.com")), true);
  assert.equal(
    looksLikeDnsQuery(query("example.com", "AAAA", {
      additionals: [{ type: "OPT", name: ".", udpPayloadSize: 1232 }],
    })),
    true,
  );
  const response = encode({
    type: "response",
    id: 1,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type: "A", name: "example.com" }],
    answers: [{ type: "A", name: "example.com", ttl: 60, data: "192.0.2.1" }],
  });
  assert.equal(looksLikeDnsQuery(response), false, "QR=1");
  const notify = query("example.com");
  notify[2] |= 4 << 3; // opcode NOTIFY
  assert.equal(looksLikeDnsQuery(notify), false);
  const noQuestion = encode({ type: "query", id: 1, questions: [] });
  assert.equal(looksLikeDnsQuery(noQuestion), false);
  const countsTooBig = query("example.com");
  countsTooBig[11] = 50; // ARCOUNT that cannot fit
  assert.equal(looksLikeDnsQuery(countsTooBig), false);
  const truncated = query("example.com");
  assert.equal(looksLikeDnsQuery(truncated.subarray(0, truncated.length - 2)), false);
  // Offset/length addressing (payload inside an IP packet buffer).
  const q = query("a.b");
  const framed = new Uint8Array([9, 9, 9, ...q, 7]);
  assert.equal(looksLikeDnsQuery(framed, 3, q.length), true);
  assert.equal(looksLikeDnsQuery(framed, 3, q.length + 10), false);
  // Typical non-DNS UDP payloads.
  assert.equal(looksLikeDnsQuery(new TextEncoder().encode("hello world, this is not dns")), false);
  const quicLong = new Uint8Array(1200);
  quicLong[0] = 0xc3;
  quicLong.set([0, 0, 0, 1], 1);
  assert.equal(looksLikeDnsQuery(quicLong), false);
  assert.equal(looksLikeDnsQuery(new Uint8Array(12)), false);
});

Deno.test("readDnsQuestions: names lower-cased, escaped, compression bounded, several questions", () => {
  const r = readDnsQuestions(query("WWW.Example.COM", "AAAA"));
  assert.equal(r.kind, "ok");
  if (r.kind !== "ok") return;
  assert.equal(r.id, 0x1234);
  assert.equal(r.questionCount, 1);
  assert.deepEqual(r.questions, [{ name: "www.example.com", type: 28, class: 1 }]);

  // Two questions, the second compressed against the first.
  const two = new Uint8Array([
    0,
    1,
    0x01,
    0x00,
    0,
    2,
    0,
    0,
    0,
    0,
    0,
    0,
    3,
    0x77,
    0x77,
    0x77,
    7,
    ...new TextEncoder().encode("example"),
    3,
    0x63,
    0x6f,
    0x6d,
    0,
    0,
    1,
    0,
    1,
    3,
    0x61,
    0x70,
    0x69,
    0xc0,
    16,
    0,
    28,
    0,
    1,
  ]);
  assert.equal(looksLikeDnsQuery(two), true);
  const rt = readDnsQuestions(two);
  assert.equal(rt.kind, "ok");
  if (rt.kind === "ok") {
    assert.equal(rt.questionCount, 2);
    assert.deepEqual(rt.questions.map((q) => [q.name, q.type]), [["www.example.com", 1], [
      "api.example.com",
      28,
    ]]);
    assert.equal(rt.end, two.length);
  }
  // Root name and odd bytes in labels.
  const root = readDnsQuestions(new Uint8Array([0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1]));
  assert.equal(root.kind === "ok" && root.questions[0].name, "");
  const odd = readDnsQuestions(
    new Uint8Array([0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, 0x61, 0x2e, 0x00, 0, 0, 1, 0, 1]),
  );
  assert.equal(odd.kind === "ok" && odd.questions[0].name, "a\\046\\000");

  const bad = (msg: number[], reason: RegExp) => {
    const res = readDnsQuestions(new Uint8Array(msg));
    assert.equal(res.kind, "malformed");
    if (res.kind === "malformed") assert.match(res.reason, reason);
    assert.equal(looksLikeDnsQuery(new Uint8Array(msg)), false);
  };
  const header = [0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
  bad([...header, 0xc0, 12, 0, 1, 0, 1], /point backwards/); // pointer to itself
  bad([...header, 1, 0x61, 0xc0, 12, 0, 1, 0, 1], /point backwards/); // loop through an earlier label
  bad([...header, 0xc0, 200, 0, 1, 0, 1], /point backwards/);
  bad([...header, 0x40, 0, 0, 1, 0, 1], /label type/);
  bad([...header, 5, 0x61], /truncated label/);
  bad([...header, 1, 0x61, 0, 0, 1], /truncated type/);
  bad(
    [...header, ...new Array(5).fill([63, ...new Array(63).fill(0x61)]).flat(), 0, 0, 1, 0, 1],
    /255 octets/,
  );
  assert.equal(readDnsQuestions(new Uint8Array(5)).kind, "malformed");
  // More questions than are decoded: the count is still reported.
  const many = [0, 1, 0, 0, 0, 40, 0, 0, 0, 0, 0, 0, ...new Array(40).fill([1, 0x61, 0, 0, 1, 0, 1]).flat()];
  const rm = readDnsQuestions(new Uint8Array(many));
  assert.equal(rm.kind === "ok" && rm.questionCount, 40);
  assert.equal(rm.kind === "ok" && rm.questions.length, MAX_QUESTIONS_REPORTED);
});

Deno.test("DNS over TCP: classification and (de)framing across arbitrary chunking", () => {
  const q = query("github.com");
  const framed = frameDnsTcp(q);
  assert.equal(framed.length, q.length + 2);
  assert.equal(looksLikeDnsOverTcp(framed), true);
  assert.equal(classifyDnsOverTcp(framed.subarray(0, 1)), "need_more");
  assert.equal(classifyDnsOverTcp(framed.subarray(0, 8)), "need_more");
  assert.equal(classifyDnsOverTcp(new TextEncoder().encode("GET / HTTP/1.1\r\n")), "not_dns");
  assert.equal(classifyDnsOverTcp(new Uint8Array([0x16, 0x03, 0x01, 0x02, 0x00, 0x01])), "not_dns");
  assert.equal(classifyDnsOverTcp(new Uint8Array([0, 5, 1, 2, 3, 4, 5])), "not_dns", "shorter than a header");
  const responseFlags = frameDnsTcp(q);
  responseFlags[4] |= 0x80;
  assert.equal(classifyDnsOverTcp(responseFlags.subarray(0, 8)), "not_dns", "response flags judged early");

  const second = frameDnsTcp(query("api.github.com", "AAAA"));
  const stream = new Uint8Array([...framed, ...second]);
  fc.assert(
    fc.property(fc.array(fc.nat(stream.length), { maxLength: 6 }), (cuts) => {
      const deframer = new DnsTcpDeframer();
      const points = [...new Set([0, ...cuts, stream.length])].sort((a, b) => a - b);
      const messages: Uint8Array[] = [];
      for (let i = 0; i + 1 < points.length; i++) {
        messages.push(...deframer.push(stream.subarray(points[i], points[i + 1])));
      }
      assert.equal(messages.length, 2);
      assert.deepEqual([...messages[0]], [...q]);
      assert.equal(deframer.pendingBytes, 0);
    }),
    { numRuns: 300 },
  );
  assert.throws(() => frameDnsTcp(new Uint8Array(70000)), /Cannot frame DNS message/);
});

testWhen(
  commandExists("/usr/bin/dig") ? undefined : "needs /usr/bin/dig (Debian package dnsutils)",
  "a query sent by dig over UDP and TCP is detected and its question read",
  async () => {
    // UDP: a socket on 127.0.0.1 receives dig's datagram; nothing answers, dig gives up.
    const socket = dgram.createSocket("udp4");
    const received = new Promise<Uint8Array>((resolve) =>
      socket.once("message", (m) => resolve(new Uint8Array(m)))
    );
    await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
    const port = (socket.address() as AddressInfo).port;
    const dig = (args: string[]) =>
      new Deno.Command("/usr/bin/dig", {
        args: ["@127.0.0.1", "-p", String(port), "+tries=1", "+time=1", ...args],
        stdout: "null",
        stderr: "null",
      }).output();
    const udpRun = dig(["Api.GitHub.com", "AAAA"]);
    const datagram = await received;
    socket.close();
    await udpRun;
    assert.equal(looksLikeDnsQuery(datagram), true);
    const r = readDnsQuestions(datagram);
    assert.equal(r.kind === "ok" && r.questions[0].name, "api.github.com");
    assert.equal(r.kind === "ok" && r.questions[0].type, 28);

    // TCP: the first bytes of dig +tcp.
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const tcpPort = (listener.addr as Deno.NetAddr).port;
    const tcpRun = new Deno.Command("/usr/bin/dig", {
      args: ["@127.0.0.1", "-p", String(tcpPort), "+tcp", "+tries=1", "+time=1", "example.org", "TXT"],
      stdout: "null",
      stderr: "null",
    }).output();
    const conn = await listener.accept();
    const deframer = new DnsTcpDeframer();
    let seen = new Uint8Array(0);
    const buf = new Uint8Array(4096);
    let messages: Uint8Array[] = [];
    while (messages.length === 0) {
      const n = await conn.read(buf);
      if (n === null) break;
      seen = new Uint8Array([...seen, ...buf.subarray(0, n)]);
      messages = deframer.push(buf.subarray(0, n));
    }
    conn.close();
    listener.close();
    await tcpRun;
    assert.equal(looksLikeDnsOverTcp(seen), true);
    const t = readDnsQuestions(messages[0]);
    assert.equal(t.kind === "ok" && t.questions[0].name, "example.org");
    assert.equal(t.kind === "ok" && t.questions[0].type, 16);
  },
);

Deno.test("property: detectors and readers never throw on arbitrary bytes", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), fc.nat(20), (bytes, offset) => {
      looksLikeDnsQuery(bytes);
      looksLikeDnsQuery(bytes, offset, bytes.length - offset);
      classifyDnsOverTcp(bytes);
      const r = readDnsQuestions(bytes);
      if (r.kind === "ok") assert.ok(r.end <= bytes.length);
      new DnsTcpDeframer().push(bytes);
    }),
    { numRuns: 3000 },
  );
  // Mutations of a valid query: whenever the detector says yes, the reader agrees.
  const base = query("mutation.example.net", "A", { additionals: [{ type: "OPT", name: "." }] });
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.nat(base.length - 1), fc.integer({ min: 0, max: 255 })), { maxLength: 3 }),
      (muts) => {
        const msg = base.slice();
        for (const [at, v] of muts) msg[at] = v;
        if (looksLikeDnsQuery(msg)) assert.equal(readDnsQuestions(msg).kind, "ok");
      },
    ),
    { numRuns: 3000 },
  );
});
