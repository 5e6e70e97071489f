import assert from "node:assert/strict";
import fc from "fast-check";
import {
  ChunkedDecoder,
  classifyHttpRequestStart,
  headerValues,
  looksLikeHttpRequest,
  MAX_HEAD_BYTES,
  parseRequestHead,
  parseResponseHead,
  type RequestHead,
  RequestHeadParser,
  type ResponseHead,
} from "../../src/proto/http1.ts";

const enc = new TextEncoder();
const bytes = (s: string) => enc.encode(s);

function request(text: string): { head: RequestHead; headLength: number } {
  const r = parseRequestHead(bytes(text));
  assert.equal(r.kind, "head", JSON.stringify(r));
  if (r.kind !== "head") throw new Error("unreachable");
  return r;
}

function rejected(text: string, reason: RegExp, status = 400): void {
  const r = parseRequestHead(bytes(text));
  assert.equal(r.kind, "malformed", `${JSON.stringify(text)} gave ${JSON.stringify(r)}`);
  if (r.kind === "malformed") {
    assert.match(r.reason, reason);
    assert.equal(r.status, status);
  }
}

function response(text: string, method = "GET"): ResponseHead {
  const r = parseResponseHead(bytes(text), method);
  assert.equal(r.kind, "head", JSON.stringify(r));
  if (r.kind !== "head") throw new Error("unreachable");
  return r.head;
}

Deno.test("request head: origin-form, Host, keep-alive, body framing, head length", () => {
  const text = "GET /a/b?x=1 HTTP/1.1\r\nHost: Example.com:8080\r\nUser-Agent: t\r\nAccept: */*\r\n\r\nBODY";
  const { head, headLength } = request(text);
  assert.equal(head.method, "GET");
  assert.deepEqual(head.target, { form: "origin", path: "/a/b?x=1" });
  assert.equal(head.minorVersion, 1);
  assert.equal(head.host, "Example.com:8080");
  assert.equal(head.authority, "Example.com:8080");
  assert.equal(head.keepAlive, true);
  assert.deepEqual(head.body, { kind: "none" });
  assert.equal(headLength, text.length - 4);
  assert.deepEqual(headerValues(head.headers, "user-agent"), ["t"]);
  assert.equal(head.headers[0].name, "Host");

  const post = request("POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\nConnection: close\r\n\r\n").head;
  assert.deepEqual(post.body, { kind: "length", length: 12 });
  assert.equal(post.keepAlive, false);

  const chunked = request("POST /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n").head;
  assert.deepEqual(chunked.body, { kind: "chunked" });

  const old = request("GET / HTTP/1.0\r\n\r\n").head;
  assert.equal(old.keepAlive, false);
  assert.equal(old.host, undefined);
  assert.equal(request("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").head.keepAlive, true);

  const upgrade = request(
    "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
  ).head;
  assert.equal(upgrade.upgrade, "websocket");
  assert.deepEqual(upgrade.connection, ["keep-alive", "upgrade"]);
  // Upgrade without Connection: upgrade is not an upgrade request.
  assert.equal(request("GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\n\r\n").head.upgrade, undefined);

  assert.equal(
    request("PUT /x HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n").head
      .expectContinue,
    true,
  );
  // Leading empty lines (after a previous body) are tolerated.
  assert.equal(request("\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n").headLength, 4 + 27);
  // Empty header value and OWS trimming.
  const ows = request("GET / HTTP/1.1\r\nHost:  h \t\r\nX-Empty:\r\n\r\n").head;
  assert.equal(ows.host, "h");
  assert.deepEqual(headerValues(ows.headers, "x-empty"), [""]);
});

Deno.test("request head: absolute-form, authority-form, asterisk-form targets", () => {
  rejected("GET HTTP://User@Example.com/p HTTP/1.1\r\nHost: example.com\r\n\r\n", /userinfo/);
  rejected("GET http://user:pw@example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n", /userinfo/);
  const ok = request("GET HTTP://Example.com:80/p?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n").head;
  assert.deepEqual(ok.target, {
    form: "absolute",
    scheme: "http",
    authority: "Example.com:80",
    path: "/p?q=1",
  });
  rejected("GET /p#frag HTTP/1.1\r\nHost: h\r\n\r\n", /invalid character in request target/);
  assert.equal(ok.authority, "Example.com:80");
  const noPath = request("GET https://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n").head;
  assert.deepEqual(noPath.target, { form: "absolute", scheme: "https", authority: "example.com", path: "/" });
  rejected("GET http://a.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n", /Host header differs/);
  rejected("GET ftp://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n", /unsupported scheme/);

  const connect = request("CONNECT github.com:443 HTTP/1.1\r\nHost: github.com:443\r\n\r\n").head;
  assert.deepEqual(connect.target, { form: "authority", authority: "github.com:443" });
  assert.equal(connect.authority, "github.com:443");
  rejected("CONNECT github.com HTTP/1.1\r\nHost: github.com\r\n\r\n", /without port/);
  rejected("CONNECT /x HTTP/1.1\r\nHost: h\r\n\r\n", /host:port/);

  assert.deepEqual(request("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n").head.target, { form: "asterisk" });
  rejected("GET * HTTP/1.1\r\nHost: h\r\n\r\n", /asterisk/);
  rejected("GET relative HTTP/1.1\r\nHost: h\r\n\r\n", /neither origin-form nor absolute-form/);
  const v6 = request("GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n").head;
  assert.equal(v6.authority, "[::1]:8080");
});

Deno.test("request head: smuggling vectors and syntax errors are rejected", () => {
  const h = "Host: h\r\n";
  rejected(
    `POST / HTTP/1.1\r\n${h}Content-Length: 5\r\nContent-Length: 5\r\n\r\n`,
    /duplicate Content-Length/,
  );
  rejected(`POST / HTTP/1.1\r\n${h}Content-Length: 5, 5\r\n\r\n`, /duplicate Content-Length/);
  rejected(
    `POST / HTTP/1.1\r\n${h}Content-Length: 5\r\nContent-Length: 6\r\n\r\n`,
    /conflicting Content-Length/,
  );
  rejected(`POST / HTTP/1.1\r\n${h}Content-Length: +5\r\n\r\n`, /invalid Content-Length/);
  rejected(`POST / HTTP/1.1\r\n${h}Content-Length: 0x10\r\n\r\n`, /invalid Content-Length/);
  rejected(
    `POST / HTTP/1.1\r\n${h}Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n`,
    /both Transfer-Encoding/,
  );
  rejected(`POST / HTTP/1.1\r\n${h}Transfer-Encoding: chunked, gzip\r\n\r\n`, /not the final/);
  rejected(
    `POST / HTTP/1.1\r\n${h}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n`,
    /more than once/,
  );
  rejected(`POST / HTTP/1.1\r\n${h}Transfer-Encoding: xchunked\r\n\r\n`, /without chunked/);
  rejected(`POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n`, /HTTP\/1\.0/);
  rejected(`GET / HTTP/1.1\r\n${h}X-A: 1\r\n folded\r\n\r\n`, /obsolete line folding/);
  rejected(`GET / HTTP/1.1\r\n${h}Bad Name: 1\r\n\r\n`, /invalid header name/);
  rejected(`GET / HTTP/1.1\r\n${h}Content-Length : 1\r\n\r\n`, /invalid header name/);
  rejected(`GET / HTTP/1.1\r\n${h}NoColon\r\n\r\n`, /without a name/);
  rejected(`GET / HTTP/1.1\r\n${h}X: a\u0001b\r\n\r\n`, /control character/);
  rejected(`GET / HTTP/1.1\r\n${h}X: a\rb\r\n\r\n`, /bare CR/);
  rejected(`GET / HTTP/1.1\n${h}\r\n`, /bare LF/);
  rejected(`GET / HTTP/1.1\r\n${h}X: a\u0000\r\n\r\n`, /NUL/);
  rejected("GET / HTTP/1.1\r\n\r\n", /without Host/);
  rejected(`GET / HTTP/1.1\r\n${h}${h}\r\n`, /more than one Host/);
  rejected("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", /bad Host/);
  rejected("GET / HTTP/1.1\r\nHost: u@h\r\n\r\n", /bad Host/);
  rejected("GET / HTTP/1.1\r\nHost: h:99999\r\n\r\n", /bad Host/);
  rejected(`\u0000GET / HTTP/1.1\r\n${h}\r\n`, /garbage before the request line/);
  rejected(`xx\u0001 / HTTP/1.1\r\n${h}\r\n`, /invalid method/);
  rejected(`GET  / HTTP/1.1\r\n${h}\r\n`, /METHOD SP TARGET SP VERSION/);
  rejected(`GET / HTTP/2.0\r\n${h}\r\n`, /unsupported HTTP version/, 505);
  rejected(`GET / HTTP/1.1x\r\n${h}\r\n`, /invalid HTTP version/);
  rejected(`GET /\u00e9 HTTP/1.1\r\n${h}\r\n`, /invalid character in request target/);
  rejected("\r\n".repeat(5) + `GET / HTTP/1.1\r\n${h}\r\n`, /too many empty lines/);
  rejected(`GET / HTTP/1.1\r\n${h}${"X-A: 1\r\n".repeat(100)}\r\n`, /too many header fields/, 431);
  const huge = `GET / HTTP/1.1\r\n${h}X: ${"a".repeat(MAX_HEAD_BYTES)}`;
  rejected(huge, /too large/, 431);
});

Deno.test("incremental parser: byte-at-a-time feeding finds the same head", () => {
  const text = "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc";
  const all = bytes(text);
  const parser = new RequestHeadParser();
  let result;
  for (let i = 1; i <= all.length; i++) {
    result = parser.parse(all.subarray(0, i));
    if (result.kind !== "need_more") break;
  }
  assert.equal(result?.kind, "head");
  if (result?.kind === "head") {
    assert.equal(result.headLength, text.length - 3);
    assert.deepEqual(result.head.body, { kind: "length", length: 3 });
  }
  // A head that is still incomplete at the limit is refused with 431, not buffered further.
  const small = new RequestHeadParser({ maxHeadBytes: 64 });
  assert.equal(small.parse(bytes("GET / HTTP/1.1\r\nHost: h\r\n")).kind, "need_more");
  const big = small.parse(bytes("GET / HTTP/1.1\r\nHost: h\r\nX: " + "a".repeat(60)));
  assert.equal(big.kind, "malformed");
});

Deno.test("response head: framing rules for status, method and headers", () => {
  assert.deepEqual(response("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n").body, {
    kind: "length",
    length: 10,
  });
  assert.deepEqual(response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").body, {
    kind: "chunked",
  });
  const closing = response("HTTP/1.1 200 OK\r\n\r\n");
  assert.deepEqual(closing.body, { kind: "close" });
  assert.equal(closing.keepAlive, false);
  assert.deepEqual(response("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n").body, { kind: "close" });
  assert.deepEqual(response("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", "HEAD").body, { kind: "none" });
  assert.deepEqual(response("HTTP/1.1 204 No Content\r\n\r\n").body, { kind: "none" });
  assert.deepEqual(response("HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n").body, {
    kind: "none",
  });
  const cont = response("HTTP/1.1 100 Continue\r\n\r\n");
  assert.equal(cont.interim, true);
  assert.deepEqual(cont.body, { kind: "none" });
  const up = response(
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
  );
  assert.equal(up.interim, false);
  assert.deepEqual(up.body, { kind: "tunnel" });
  assert.equal(up.upgrade, "websocket");
  assert.deepEqual(response("HTTP/1.1 200 Connection established\r\n\r\n", "CONNECT").body, {
    kind: "tunnel",
  });
  assert.equal(response("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n").keepAlive, false);
  assert.equal(
    response("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n").keepAlive,
    false,
  );
  assert.equal(response("HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n").reason, "");
  // Identical duplicate lengths are tolerated in responses (RFC 9112 §6.3), different ones are not.
  assert.deepEqual(response("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n").body, {
    kind: "length",
    length: 3,
  });
  const bad = (text: string, reason: RegExp) => {
    const r = parseResponseHead(bytes(text), "GET");
    assert.equal(r.kind, "malformed", text);
    if (r.kind === "malformed") {
      assert.match(r.reason, reason);
      assert.equal(r.status, 502);
    }
  };
  bad("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", /conflicting/);
  bad("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", /both/);
  bad("HTTP/1.1 2000 OK\r\n\r\n", /status line/);
  bad("HTTP/1.1 099 X\r\n\r\n", /status code/);
  bad("SSH-2.0-OpenSSH\r\n\r\n", /does not start with HTTP/);
  bad("HTTP/1.1 200 OK\r\n folded\r\n\r\n", /folding/);
  assert.equal(parseResponseHead(bytes("HTTP/1.1 200 OK\r\n"), "GET").kind, "need_more");
});

function feedAll(decoder: ChunkedDecoder, data: Uint8Array, pieces: number[]): { end: number; kind: string } {
  let offset = 0;
  const cuts = [...pieces.filter((p) => p > 0 && p < data.length).sort((a, b) => a - b), data.length];
  for (const cut of cuts) {
    if (cut <= offset) continue;
    const r = decoder.feed(data.subarray(offset, cut));
    if (r.kind === "malformed") return { end: -1, kind: "malformed" };
    if (r.kind === "done") return { end: offset + r.consumed, kind: "done" };
    offset = cut;
  }
  return { end: offset, kind: "body" };
}

Deno.test("chunked decoder: finds the body end across any split, bounded, strict framing", () => {
  const body = "4\r\nWiki\r\n5;ext=1\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nTrailer: x\r\n\r\n";
  const data = bytes(body + "GET /next HTTP/1.1\r\n");
  const one = new ChunkedDecoder();
  assert.deepEqual(feedAll(one, data, []), { end: body.length, kind: "done" });
  assert.equal(one.dataBytes, 4 + 5 + 14);
  assert.equal(one.done, true);
  fc.assert(
    fc.property(fc.array(fc.nat(data.length), { maxLength: 8 }), (cuts) => {
      assert.deepEqual(feedAll(new ChunkedDecoder(), data, cuts), { end: body.length, kind: "done" });
    }),
    { numRuns: 500 },
  );
  // A partial body is "body" (needs more), not done.
  assert.equal(new ChunkedDecoder().feed(bytes("4\r\nWi")).kind, "body");
  const bad = (text: string, reason: RegExp) => {
    const r = new ChunkedDecoder().feed(bytes(text));
    assert.equal(r.kind, "malformed", text);
    if (r.kind === "malformed") assert.match(r.reason, reason);
  };
  bad("4\r\nWikiX\r\n", /not followed by CRLF/);
  bad("zz\r\n", /invalid chunk size/);
  bad("-1\r\n", /invalid chunk size/);
  bad(" 4\r\nWiki\r\n", /invalid chunk size/);
  bad("4\nWiki\r\n", /bare LF/);
  bad("4\rWiki", /bare CR/);
  bad("1000000000000\r\n", /invalid chunk size/);
  bad("4;" + "e".repeat(5000) + "\r\n", /too long/);
  bad("0\r\n folded\r\n\r\n", /folding/);
  bad("0\r\n" + "X-T: 1\r\n".repeat(3000) + "\r\n", /trailer section too large/);
  // After a failure the decoder stays failed.
  const failed = new ChunkedDecoder();
  failed.feed(bytes("zz\r\n"));
  assert.equal(failed.feed(bytes("0\r\n\r\n")).kind, "malformed");
});

Deno.test("classification: looksLikeHttpRequest", () => {
  assert.equal(looksLikeHttpRequest(bytes("GET / HTTP/1.1\r\n")), true);
  assert.equal(looksLikeHttpRequest(bytes("PROPFIND /x")), true);
  assert.equal(looksLikeHttpRequest(bytes("\r\nPOST /")), true);
  assert.equal(looksLikeHttpRequest(bytes("get / HTTP/1.1")), false);
  assert.equal(looksLikeHttpRequest(bytes("GETX /")), false);
  assert.equal(looksLikeHttpRequest(new Uint8Array([0x16, 3, 1])), false);
  assert.equal(classifyHttpRequestStart(bytes("GE")), "need_more");
  assert.equal(classifyHttpRequestStart(bytes("")), "need_more");
  assert.equal(classifyHttpRequestStart(bytes("SSH-2.0")), "not_http");
  assert.equal(classifyHttpRequestStart(bytes("PU")), "need_more");
  assert.equal(classifyHttpRequestStart(bytes("PUT")), "need_more");
});

Deno.test("property: parsers never throw on arbitrary bytes", () => {
  const tokenish = fc.constantFrom(
    "GET ",
    "POST ",
    "/",
    " HTTP/1.1",
    "\r\n",
    "\n",
    "\r",
    "Host: h",
    "Content-Length: 5",
    "Transfer-Encoding: chunked",
    ":",
    " ",
    "\u0000",
    "0\r\n",
    "http://",
    "@",
  );
  const structured = fc.array(tokenish, { maxLength: 30 }).map((parts) => bytes(parts.join("")));
  fc.assert(
    fc.property(fc.oneof(fc.uint8Array({ maxLength: 300 }), structured), (input) => {
      const req = parseRequestHead(input);
      assert.ok(["need_more", "malformed", "head"].includes(req.kind));
      if (req.kind === "head") assert.ok(req.headLength <= input.length);
      const res = parseResponseHead(input, "GET");
      assert.ok(["need_more", "malformed", "head"].includes(res.kind));
      const chunk = new ChunkedDecoder().feed(input);
      if (chunk.kind !== "malformed") assert.ok(chunk.consumed <= input.length);
      classifyHttpRequestStart(input);
    }),
    { numRuns: 3000 },
  );
});
