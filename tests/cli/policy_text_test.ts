import assert from "node:assert/strict";
import { codePointLength, splitPolicyLines } from "../../src/cli/policy_text.ts";

Deno.test("policy text: every policy.md §1 terminator splits, a final one opens no line, BOM skipped", () => {
  const text = "\uFEFFa\r\nb\nc\rd\ve\ff\x1cg\x1dh\x1ei\x85j\u2028k\u2029l\n";
  assert.deepEqual(splitPolicyLines(text).map((l) => l.text), "abcdefghijkl".split(""));
  assert.deepEqual(splitPolicyLines("a\n\nb").map((l) => l.text), ["a", "", "b"]);
  assert.deepEqual(splitPolicyLines(""), []);
  assert.deepEqual(splitPolicyLines("\uFEFF"), []);
  const lines = splitPolicyLines("x\r\nyy\nz");
  assert.deepEqual(lines.map((l) => l.offset), [0, 3, 6]);
  assert.deepEqual(splitPolicyLines("\uFEFFab\ncd").map((l) => [l.number, l.offset]), [[1, 1], [2, 4]]);
});

Deno.test("policy text: columns count code points", () => {
  assert.equal(codePointLength("a\u{1F600}b"), 3);
  assert.equal(codePointLength(""), 0);
});
