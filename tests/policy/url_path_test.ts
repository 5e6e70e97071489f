import assert from "node:assert/strict";
import { hasDotSegment, requestPathOf, urlPathMatches } from "../../src/policy/url_path.ts";

Deno.test("root pattern matches only the root (and the empty path)", () => {
  assert.equal(urlPathMatches("/", "/"), true);
  assert.equal(urlPathMatches("/", ""), true);
  assert.equal(urlPathMatches("/", "/?q=1"), true);
  assert.equal(urlPathMatches("/", "/x"), false);
});

Deno.test("/* matches every path", () => {
  for (const path of ["/", "/a", "/a/b/c", "/a/", "//"]) assert.equal(urlPathMatches("/*", path), true, path);
});

Deno.test("trailing wildcard: /repos/* matches /repos, /repos/, /repos/a/b", () => {
  assert.equal(urlPathMatches("/repos/*", "/repos"), true);
  assert.equal(urlPathMatches("/repos/*", "/repos/"), true);
  assert.equal(urlPathMatches("/repos/*", "/repos/a/b"), true);
  assert.equal(urlPathMatches("/repos/*", "/reposx"), false);
  assert.equal(urlPathMatches("/repos/*", "/"), false);
  assert.equal(urlPathMatches("/a/b/*", "/a"), false);
});

Deno.test("trailing slash is removed from both sides", () => {
  assert.equal(urlPathMatches("/a/b", "/a/b/"), true);
  assert.equal(urlPathMatches("/a/b/", "/a/b"), true);
  assert.equal(urlPathMatches("/a/b", "/a/b//"), false);
});

Deno.test("segment counts must be equal without a trailing wildcard", () => {
  assert.equal(urlPathMatches("/a/b", "/a/b/c"), false);
  assert.equal(urlPathMatches("/a/b", "/a"), false);
});

Deno.test("a * segment accepts any one segment, also an empty one", () => {
  assert.equal(urlPathMatches("/a/*/c", "/a/b/c"), true);
  assert.equal(urlPathMatches("/a/*/c", "/a//c"), true);
  assert.equal(urlPathMatches("/a/*/c", "/a/b/x/c"), false);
});

Deno.test("segment globs stay within the segment", () => {
  assert.equal(urlPathMatches("/releases/v*.zip", "/releases/v1.0.zip"), true);
  assert.equal(urlPathMatches("/releases/v*.zip", "/releases/v1.0.tar"), false);
  assert.equal(urlPathMatches("/x*", "/x/y"), false);
  assert.equal(urlPathMatches("/x*", "/xyz"), true);
});

Deno.test("the request path is not collapsed: // gives an empty segment", () => {
  assert.equal(urlPathMatches("/a/b", "/a//b"), false);
  assert.equal(urlPathMatches("/a//b", "/a//b"), true);
});

Deno.test("exact segments are case-sensitive and never percent-decoded", () => {
  assert.equal(urlPathMatches("/Api", "/api"), false);
  assert.equal(urlPathMatches("/a b", "/a%20b"), false);
  assert.equal(urlPathMatches("/a%20b", "/a%20b"), true);
});

Deno.test("query and fragment never matter", () => {
  assert.equal(urlPathMatches("/a", "/a?x=1"), true);
  assert.equal(urlPathMatches("/a", "/a#frag"), true);
  assert.equal(urlPathMatches("/a", "/a?x=/b#c"), true);
  assert.equal(requestPathOf("?q"), "/");
  assert.equal(requestPathOf("/p#f?x"), "/p");
});

Deno.test(". and .. segments (also %2e in any case) match no rule", () => {
  for (
    const path of ["/a/../b", "/a/./b", "/a/%2e%2e/b", "/a/%2E./b", "/a/.%2e", "/a/%2e", "/..", "/a/../"]
  ) {
    assert.equal(hasDotSegment(path), true, path);
    assert.equal(urlPathMatches("/*", path), false, path);
  }
  assert.equal(urlPathMatches("/a/*", "/a/..b/c"), true);
  assert.equal(urlPathMatches("/a/*", "/a/.well-known"), true);
  assert.equal(urlPathMatches("/a/*", "/a/b?x=/../"), true);
});

Deno.test("dot segments hidden behind \\, %2f, %5c or a ;parameter also match no rule", () => {
  for (
    const path of [
      "/a/..\\b",
      "/a\\..\\b",
      "/a/..%2fb",
      "/a/..%2Fb",
      "/a/%2e%2e%5cb",
      "/a/..;/b",
      "/a/.;x/b",
      "/a/..;",
    ]
  ) {
    assert.equal(hasDotSegment(path), true, path);
    assert.equal(urlPathMatches("/a/*", path), false, path);
  }
  // Dots inside a longer name stay ordinary characters.
  for (const path of ["/a/..b;c", "/a/b..%2fc", "/a/x;..", "/a/...;"]) {
    assert.equal(hasDotSegment(path), false, path);
    assert.equal(urlPathMatches("/a/*", path), true, path);
  }
});
