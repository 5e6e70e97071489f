import assert from "node:assert/strict";
import fc from "fast-check";
import {
  type ClientHello,
  highestOfferedVersion,
  MAX_CLIENT_HELLO_BYTES,
  parseClientHello,
} from "../../src/proto/tls_client_hello.ts";
import { commandExists, testWhen } from "../helpers/requirements.ts";

// ---------------------------------------------------------------- builders

function u16(n: number): number[] {
  return [(n >> 8) & 0xff, n & 0xff];
}
function u24(n: number): number[] {
  return [(n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff];
}
function ascii(s: string): number[] {
  return [...s].map((c) => c.charCodeAt(0));
}
function extension(type: number, body: number[]): number[] {
  return [...u16(type), ...u16(body.length), ...body];
}
function sniExtension(...names: Array<number[] | string>): number[] {
  const entries = names.flatMap((n) => {
    const bytes = typeof n === "string" ? ascii(n) : n;
    return [0, ...u16(bytes.length), ...bytes];
  });
  return extension(0, [...u16(entries.length), ...entries]);
}
function alpnExtension(...protocols: string[]): number[] {
  const list = protocols.flatMap((p) => [p.length, ...ascii(p)]);
  return extension(16, [...u16(list.length), ...list]);
}
function versionsExtension(...versions: number[]): number[] {
  return extension(43, [versions.length * 2, ...versions.flatMap(u16)]);
}

/** A ClientHello handshake message (type + length + body). */
function helloMessage(extensions: number[][] | null): number[] {
  const body = [
    ...u16(0x0303),
    ...new Array(32).fill(7), // random
    0, // session id
    ...u16(4),
    0x13,
    0x01,
    0x13,
    0x02, // cipher suites
    1,
    0, // compression: null
  ];
  if (extensions !== null) {
    const ext = extensions.flat();
    body.push(...u16(ext.length), ...ext);
  }
  return [1, ...u24(body.length), ...body];
}

/** Wraps a handshake message into records; `splits` are offsets inside the message. */
function records(message: number[], splits: number[] = [], recordVersion = 0x0301): Uint8Array {
  const out: number[] = [];
  const cuts = [0, ...splits, message.length];
  for (let i = 0; i + 1 < cuts.length; i++) {
    const part = message.slice(cuts[i], cuts[i + 1]);
    out.push(0x16, ...u16(recordVersion), ...u16(part.length), ...part);
  }
  return new Uint8Array(out);
}

function expectHello(bytes: Uint8Array): ClientHello {
  const result = parseClientHello(bytes);
  assert.equal(result.kind, "client_hello", JSON.stringify(result));
  return result as ClientHello;
}

/** Re-fragments a captured single- or multi-record hello into records split at `splits`. */
function refragment(captured: Uint8Array, splits: number[]): Uint8Array {
  const hello = expectHello(captured);
  const message: number[] = [];
  let pos = 0;
  while (pos < hello.recordBytes) {
    const len = (captured[pos + 3] << 8) | captured[pos + 4];
    message.push(...captured.subarray(pos + 5, pos + 5 + len));
    pos += 5 + len;
  }
  return records(message, splits);
}

// ---------------------------------------------------------------- capture from real clients

/** Accepts one connection on 127.0.0.1 and returns the first bytes until a ClientHello verdict. */
async function captureFirstBytes(connectClient: (port: number) => Promise<unknown>): Promise<Uint8Array> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const client = connectClient(port).catch(() => {}); // the handshake fails when we hang up
  try {
    const conn = await listener.accept();
    let data = new Uint8Array(0);
    const buf = new Uint8Array(65536);
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      const result = parseClientHello(data);
      if (result.kind !== "need_more") break;
      const n = await conn.read(buf);
      if (n === null) break;
      const next = new Uint8Array(data.length + n);
      next.set(data);
      next.set(buf.subarray(0, n), data.length);
      data = next;
    }
    conn.close();
    return data;
  } finally {
    listener.close();
    await client;
  }
}

Deno.test("ClientHello from Deno's TLS client parses with SNI, ALPN and TLS 1.3", async () => {
  const bytes = await captureFirstBytes(async (port) => {
    const tcp = await Deno.connect({ hostname: "127.0.0.1", port });
    const tls = await Deno.startTls(tcp, { hostname: "Sni.Example.TEST", alpnProtocols: ["h2", "http/1.1"] });
    try {
      await tls.handshake();
    } finally {
      tls.close();
    }
  });
  const hello = expectHello(bytes);
  assert.equal(hello.sni, "sni.example.test");
  assert.deepEqual(hello.alpn, ["h2", "http/1.1"]);
  assert.equal(hello.legacyVersion, 0x0303);
  assert.ok(hello.supportedVersions.includes(0x0304), "offers TLS 1.3");
  assert.equal(highestOfferedVersion(hello), 0x0304);
  assert.equal(hello.recordBytes, bytes.length);

  // The same hello split across two and three records parses the same.
  for (const splits of [[1], [10], [hello.recordBytes - 20], [3, 200]]) {
    const again = expectHello(refragment(bytes, splits));
    assert.equal(again.sni, "sni.example.test");
    assert.deepEqual(again.alpn, ["h2", "http/1.1"]);
  }
  // Every strict prefix asks for more bytes, within the bound.
  let lastNeeded = 0;
  for (let i = 0; i < bytes.length; i++) {
    const r = parseClientHello(bytes.subarray(0, i));
    assert.equal(r.kind, "need_more", `prefix ${i}`);
    if (r.kind === "need_more") {
      assert.ok(r.needed > i && r.needed <= MAX_CLIENT_HELLO_BYTES);
      assert.ok(r.needed >= lastNeeded);
      lastNeeded = r.needed;
    }
  }
});

Deno.test("ClientHello to an IP literal carries no SNI", async () => {
  const bytes = await captureFirstBytes(async (port) => {
    const tls = await Deno.connectTls({ hostname: "127.0.0.1", port });
    try {
      await tls.handshake();
    } finally {
      tls.close();
    }
  });
  const hello = expectHello(bytes);
  assert.equal(hello.sni, undefined);
  assert.equal(hello.extensions.includes(0), false);
});

testWhen(
  commandExists("/usr/bin/openssl") ? undefined : "needs /usr/bin/openssl (Debian package openssl)",
  "ClientHello from openssl s_client parses with the right SNI and ALPN",
  async () => {
    let child: Deno.ChildProcess | undefined;
    const bytes = await captureFirstBytes(async (port) => {
      child = new Deno.Command("/usr/bin/openssl", {
        args: [
          "s_client",
          "-connect",
          `127.0.0.1:${port}`,
          "-servername",
          "api.github.com",
          "-alpn",
          "http/1.1,h2",
        ],
        stdin: "piped",
        stdout: "null",
        stderr: "null",
      }).spawn();
      await child.status;
    });
    try {
      child?.kill("SIGTERM");
    } catch {
      // already exited
    }
    await child?.stdin.close().catch(() => {});
    await child?.status;
    const hello = expectHello(bytes);
    assert.equal(hello.sni, "api.github.com");
    assert.deepEqual(hello.alpn, ["http/1.1", "h2"]);
    assert.ok(hello.cipherSuiteCount > 5);
  },
);

// ---------------------------------------------------------------- synthetic cases

Deno.test("synthetic ClientHellos: fields, optional extensions, and record splitting", () => {
  const message = helloMessage([
    sniExtension("example.com."),
    alpnExtension("http/1.1"),
    versionsExtension(0x7a7a, 0x0304, 0x0303),
  ]);
  const hello = expectHello(records(message));
  assert.equal(hello.sni, "example.com");
  assert.deepEqual(hello.alpn, ["http/1.1"]);
  assert.deepEqual(hello.supportedVersions, [0x7a7a, 0x0304, 0x0303]);
  assert.equal(highestOfferedVersion(hello), 0x0304, "GREASE ignored");
  assert.equal(hello.recordVersion, 0x0301);
  assert.deepEqual(hello.extensions, [0, 16, 43]);
  assert.equal(hello.cipherSuiteCount, 2);

  const split = expectHello(records(message, [2]));
  assert.equal(split.sni, "example.com");

  // No extension block at all (old clients).
  const bare = expectHello(records(helloMessage(null)));
  assert.equal(bare.sni, undefined);
  assert.deepEqual(bare.alpn, []);

  // Trailing stream data after the hello records is not part of the hello.
  const withTail = new Uint8Array([...records(message), 0x17, 3, 3, 0, 1, 0]);
  assert.equal(expectHello(withTail).recordBytes, records(message).length);

  // A non-host_name entry is skipped.
  const other = extension(0, [...u16(6), 7, ...u16(3), 1, 2, 3]);
  assert.equal(expectHello(records(helloMessage([other]))).sni, undefined);
});

Deno.test("classification: not TLS, need more, malformed with reasons", () => {
  const enc = new TextEncoder();
  assert.deepEqual(parseClientHello(enc.encode("GET / HTTP/1.1\r\n")), { kind: "not_tls" });
  assert.deepEqual(parseClientHello(new Uint8Array([0x16, 0x02])), { kind: "not_tls" });
  assert.deepEqual(parseClientHello(new Uint8Array([])), { kind: "need_more", needed: 5 });
  assert.deepEqual(parseClientHello(new Uint8Array([0x16])), { kind: "need_more", needed: 5 });
  assert.deepEqual(parseClientHello(new Uint8Array([0x16, 3, 1, 0, 10])), { kind: "need_more", needed: 15 });

  const bad = (bytes: Uint8Array, reason: RegExp) => {
    const r = parseClientHello(bytes);
    assert.equal(r.kind, "malformed", JSON.stringify(r));
    if (r.kind === "malformed") assert.match(r.reason, reason);
  };
  bad(new Uint8Array([0x16, 3, 1, 0x40, 0x01]), /longer than 16384/);
  bad(new Uint8Array([0x16, 3, 1, 0, 0]), /empty handshake record/);
  bad(records([2, 0, 0, 0]), /not a ClientHello/);
  bad(records(helloMessage([sniExtension([0x61, 0x00, 0x62])])), /SNI is not a valid host name/);
  bad(records(helloMessage([sniExtension("bad\u0001name")])), /SNI/);
  bad(records(helloMessage([sniExtension("a..b")])), /SNI/);
  bad(records(helloMessage([sniExtension("x".repeat(64) + ".com")])), /SNI/);
  bad(records(helloMessage([sniExtension("a.com", "b.com")])), /more than one host_name/);
  bad(records(helloMessage([alpnExtension("h2"), alpnExtension("h2")])), /duplicate extension/);
  bad(records(helloMessage([extension(16, [...u16(0)])])), /empty ALPN list/);
  bad(records(helloMessage([extension(43, [3, 3, 4])])), /supported_versions/);
  // A record of another content type in the middle of the hello.
  const message = helloMessage([sniExtension("example.com")]);
  const first = records(message.slice(0, 10));
  const alert = new Uint8Array([0x15, 3, 3, 0, 2, 2, 40]);
  bad(new Uint8Array([...first, ...alert]), /non-handshake record/);
  // Extension block length that disagrees with the message.
  const broken = helloMessage([sniExtension("example.com")]);
  broken[4 + 2 + 32 + 1 + 2 + 4 + 2 + 1] ^= 0x01; // extensions length low byte
  bad(records(broken), /extensions length|truncated|mismatch/);
  // Too many records.
  bad(records(helloMessage([sniExtension("example.com")]), [1, 2, 3, 4]), /more than 4 records/);
});

// ---------------------------------------------------------------- properties

Deno.test("property: arbitrary bytes never throw and results are well-formed", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 600 }), fc.boolean(), (bytes, tlsPrefix) => {
      const input = tlsPrefix ? new Uint8Array([0x16, 0x03, 0x01, ...bytes]) : bytes;
      const r = parseClientHello(input);
      if (r.kind === "need_more") assert.ok(r.needed > input.length && r.needed <= MAX_CLIENT_HELLO_BYTES);
      if (r.kind === "malformed") assert.ok(r.reason.length > 0);
      if (r.kind === "client_hello" && r.sni !== undefined) assert.match(r.sni, /^[a-z0-9._-]+$/);
    }),
    { numRuns: 3000 },
  );
});

Deno.test("property: mutated and truncated valid hellos never throw; split points never change the result", () => {
  const message = helloMessage([
    sniExtension("example.org"),
    alpnExtension("h2", "http/1.1"),
    versionsExtension(0x0304),
  ]);
  const whole = records(message);
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.nat(whole.length - 1), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }),
      fc.nat(whole.length),
      (mutations, cut) => {
        const bytes = whole.slice(0, cut);
        for (const [at, value] of mutations) if (at < bytes.length) bytes[at] = value;
        const r = parseClientHello(bytes);
        assert.ok(["need_more", "not_tls", "malformed", "client_hello"].includes(r.kind));
      },
    ),
    { numRuns: 3000 },
  );
  fc.assert(
    fc.property(fc.integer({ min: 1, max: message.length - 1 }), (split) => {
      const hello = expectHello(records(message, [split]));
      assert.equal(hello.sni, "example.org");
      assert.deepEqual(hello.alpn, ["h2", "http/1.1"]);
    }),
  );
});
