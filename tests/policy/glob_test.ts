import assert from "node:assert/strict";
import { compileGlob, fnmatch, starMatches } from "../../src/policy/glob.ts";

Deno.test("glob matches the whole string, case-sensitively", () => {
  assert.equal(fnmatch("/usr/bin/git", "/usr/bin/git"), true);
  assert.equal(fnmatch("/usr/bin/git", "/usr/bin/git2"), false);
  assert.equal(fnmatch("/usr/bin/git", "x/usr/bin/git"), false);
  assert.equal(fnmatch("/usr/bin/Git", "/usr/bin/git"), false);
});

Deno.test("* matches any run including / and the empty run", () => {
  assert.equal(fnmatch("*/node", "/usr/local/bin/node"), true);
  assert.equal(fnmatch("*/node", "/node"), true);
  assert.equal(fnmatch("*/node", "node"), false);
  assert.equal(fnmatch("/tmp/provjobd*", "/tmp/provjobd"), true);
  assert.equal(fnmatch("/tmp/provjobd*", "/tmp/provjobd123/x"), true);
  assert.equal(fnmatch("*", ""), true);
  assert.equal(fnmatch("a*b*c", "aXXbYYc"), true);
  assert.equal(fnmatch("a*b*c", "aXXbYY"), false);
  assert.equal(fnmatch("*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), false);
});

Deno.test("? matches exactly one character (a code point)", () => {
  assert.equal(fnmatch("a?c", "abc"), true);
  assert.equal(fnmatch("a?c", "ac"), false);
  assert.equal(fnmatch("a?c", "abbc"), false);
  assert.equal(fnmatch("a?c", "a/c"), true);
  assert.equal(fnmatch("a?c", "a😀c"), true);
});

Deno.test("classes: set, range, negation", () => {
  assert.equal(fnmatch("v[123]", "v2"), true);
  assert.equal(fnmatch("v[123]", "v4"), false);
  assert.equal(fnmatch("v[a-c]x", "vbx"), true);
  assert.equal(fnmatch("v[a-c]x", "vdx"), false);
  assert.equal(fnmatch("v[!abc]", "vd"), true);
  assert.equal(fnmatch("v[!abc]", "va"), false);
  assert.equal(fnmatch("v[!a-c]", "vb"), false);
  assert.equal(fnmatch("[a-]", "-"), true);
});

Deno.test("a ] first in a class is literal", () => {
  assert.equal(fnmatch("[]]", "]"), true);
  assert.equal(fnmatch("[]a]", "a"), true);
  assert.equal(fnmatch("[]a]", "b"), false);
  assert.equal(fnmatch("[!]]", "]"), false);
  assert.equal(fnmatch("[!]]", "x"), true);
});

Deno.test("an unclosed [ is literal", () => {
  assert.equal(fnmatch("a[b", "a[b"), true);
  assert.equal(fnmatch("a[b", "ab"), false);
  assert.equal(fnmatch("[", "["), true);
  assert.equal(fnmatch("[]", "[]"), true);
});

Deno.test("no backslash escapes: a backslash is an ordinary character", () => {
  assert.equal(fnmatch("a\\*", "a\\bc"), true);
  assert.equal(fnmatch("a\\*", "a*"), false);
});

Deno.test("regex metacharacters are plain characters", () => {
  assert.equal(fnmatch("a.b", "axb"), false);
  assert.equal(fnmatch("a.b", "a.b"), true);
  assert.equal(fnmatch("(a|b)+", "(a|b)+"), true);
  assert.equal(fnmatch("(a|b)+", "a"), false);
  assert.equal(fnmatch("^$", "^$"), true);
});

Deno.test("a compiled glob is reusable", () => {
  const glob = compileGlob("*/python3*");
  assert.equal(glob.matches("/usr/bin/python3"), true);
  assert.equal(glob.matches("/usr/bin/python3.11"), true);
  assert.equal(glob.matches("/usr/bin/python2"), false);
  assert.equal(glob.pattern, "*/python3*");
});

Deno.test("starMatches: only * is special", () => {
  assert.equal(starMatches("v*.zip", "v1.0.zip"), true);
  assert.equal(starMatches("v*.zip", "v1.0.tar"), false);
  assert.equal(starMatches("a*a", "a"), false);
  assert.equal(starMatches("a*a", "aa"), true);
  assert.equal(starMatches("*x*y*", "axbyc"), true);
  assert.equal(starMatches("*x*y*", "aybxc"), false);
  assert.equal(starMatches("a?c", "abc"), false);
  assert.equal(starMatches("**", ""), true);
});
