import assert from "node:assert/strict";
import { columnAt, splitLines } from "../../src/policy/lines.ts";
import { validatePolicy } from "../../src/policy/policy.ts";

const texts = (text: string) => splitLines(text).map((l) => l.text);

Deno.test("splitLines: every terminator of §1 splits", () => {
  for (const sep of ["\r\n", "\n", "\r", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]) {
    assert.deepEqual(texts(`a${sep}b`), ["a", "b"], JSON.stringify(sep));
  }
});

Deno.test("splitLines: CRLF is one break, LF CR is two", () => {
  assert.deepEqual(texts("a\r\nb"), ["a", "b"]);
  assert.deepEqual(texts("a\n\rb"), ["a", "", "b"]);
  assert.deepEqual(texts("a\r\rb"), ["a", "", "b"]);
});

Deno.test("splitLines: a final terminator does not open a new line", () => {
  assert.deepEqual(texts("a\n"), ["a"]);
  assert.deepEqual(texts("a\r\n"), ["a"]);
  assert.deepEqual(texts("a\n\n"), ["a", ""]);
  assert.deepEqual(texts("\n"), [""]);
  assert.deepEqual(texts(""), []);
});

Deno.test("splitLines: a leading BOM is ignored, a later one is kept", () => {
  assert.deepEqual(texts("\ufeffa\nb"), ["a", "b"]);
  assert.deepEqual(texts("\ufeff"), []);
  assert.deepEqual(texts("a\n\ufeffb"), ["a", "\ufeffb"]);
});

Deno.test("splitLines: lines count from 1", () => {
  assert.deepEqual(splitLines("x\ny\rz").map((l) => l.number), [1, 2, 3]);
});

Deno.test("columnAt: code points, TAB is one column", () => {
  assert.equal(columnAt("abc", 0), 1);
  assert.equal(columnAt("abc", 2), 3);
  assert.equal(columnAt("\tx", 1), 2);
  const emoji = "\u{1F600}x"; // a surrogate pair then x
  assert.equal(columnAt(emoji, 2), 2);
  assert.equal(columnAt("é\u{10000}ab", 4), 4);
});

Deno.test("lines: blank lines and comments yield nothing; line numbers follow the terminators", () => {
  const r = validatePolicy("\n  \t\n# comment\n   # indented comment\r\nx.com:99999\u2028y.com");
  assert.deepEqual(r.errors.map((e) => [e.line, e.column]), [[5, 7]]);
  assert.deepEqual(r.rules.map((x) => [x.target, x.line]), [["y.com", 6]]);
});

Deno.test("lines: columns count code points of the original line", () => {
  const r = validatePolicy("x.com exe=\u{1F600} user=a");
  assert.deepEqual(r.errors.map((e) => [e.line, e.column, e.message]), [[1, 13, 'unknown attribute "user"']]);
  const tab = validatePolicy("\tx.com:0");
  assert.deepEqual(tab.errors.map((e) => [e.line, e.column, e.message]), [[
    1,
    8,
    "port 0 is outside 1..65535",
  ]]);
});

Deno.test("lines: BOM does not shift columns or count as content", () => {
  const r = validatePolicy("\ufeffx.com:0\nok.com");
  assert.deepEqual(r.errors.map((e) => [e.line, e.column]), [[1, 7]]);
  assert.equal(r.errors[0].text, "x.com:0");
  assert.equal(r.rules[0].line, 2);
});

Deno.test("lines: WS allowed at both ends; lexically case-sensitive keywords", () => {
  assert.equal(validatePolicy(" \t github.com \t ").rules[0].target, "github.com");
  assert.equal(validatePolicy("x.com:53/UDP").errors[0].message, 'unknown protocol "UDP" (use tcp or udp)');
  assert.equal(
    validatePolicy("HTTPS://x.com/").errors[0].message,
    'unsupported scheme "HTTPS" (use http or https)',
  );
  assert.equal(validatePolicy("x.com EXE=/a").errors[0].message, 'unknown attribute "EXE"');
  assert.equal(validatePolicy("GitHub.COM").rules[0].target, "GitHub.COM");
});
