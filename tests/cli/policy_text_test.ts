import assert from "node:assert/strict";
import { ruleSourceText, splitPolicyLines } from "../../src/cli/policy_text.ts";

Deno.test("policy text: every policy.md §1 terminator splits, a final one opens no line, BOM skipped", () => {
  const text = "\uFEFFa\r\nb\nc\rd\ve\ff\x1cg\x1dh\x1ei\x85j\u2028k\u2029l\n";
  assert.deepEqual(splitPolicyLines(text).map((l) => l.text), "abcdefghijkl".split(""));
  assert.deepEqual(splitPolicyLines("a\n\nb").map((l) => l.text), ["a", "", "b"]);
  assert.deepEqual(splitPolicyLines(""), []);
  const lines = splitPolicyLines("x\r\nyy\nz");
  assert.deepEqual(lines.map((l) => l.offset), [0, 3, 6]);
});

Deno.test("policy text: rule source text is trimmed without inline comment", () => {
  assert.equal(ruleSourceText("  github.com  # ci  "), "github.com");
  assert.equal(ruleSourceText("github.com#x"), "github.com#x");
  assert.equal(ruleSourceText("\tx.com exe=`a #b` # c"), "x.com exe=`a #b`");
  assert.equal(ruleSourceText('x.com arg="# not" # c'), 'x.com arg="# not"');
});
