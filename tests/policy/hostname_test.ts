import assert from "node:assert/strict";
import { compileHostPattern, hostPatternMatches, normalizeHostname } from "../../src/policy/hostname.ts";

Deno.test("normalizeHostname lower-cases and removes exactly one trailing dot", () => {
  assert.equal(normalizeHostname("GitHub.COM"), "github.com");
  assert.equal(normalizeHostname("github.com."), "github.com");
  assert.equal(normalizeHostname("github.com.."), "github.com.");
  assert.equal(normalizeHostname(""), "");
});

Deno.test("exact host rule: equality, case-insensitive, trailing dot of the name ignored", () => {
  assert.equal(hostPatternMatches("github.com", "github.com"), true);
  assert.equal(hostPatternMatches("GitHub.com", "GITHUB.COM."), true);
  assert.equal(hostPatternMatches("github.com", "api.github.com"), false);
  assert.equal(hostPatternMatches("github.com", "github.co"), false);
  assert.equal(hostPatternMatches("github.com", "xgithub.com"), false);
});

Deno.test("subdomain form *.github.com: one or more labels before, never the base itself", () => {
  assert.equal(hostPatternMatches("*.github.com", "a.github.com"), true);
  assert.equal(hostPatternMatches("*.github.com", "a.b.github.com"), true);
  assert.equal(hostPatternMatches("*.github.com", "github.com"), false);
  assert.equal(hostPatternMatches("*.github.com", "agithub.com"), false);
  assert.equal(hostPatternMatches("*.github.com", "a.github.com.evil.org"), false);
  assert.equal(hostPatternMatches("*.GitHub.com", "A.GITHUB.COM."), true);
});

Deno.test("subdomain form with a globbed label *.derp*.x.com", () => {
  assert.equal(hostPatternMatches("*.derp*.x.com", "a.derp1.x.com"), true);
  assert.equal(hostPatternMatches("*.derp*.x.com", "a.b.derp.x.com"), true);
  assert.equal(hostPatternMatches("*.derp*.x.com", "derp1.x.com"), false);
  assert.equal(hostPatternMatches("*.derp*.x.com", "a.herp1.x.com"), false);
});

Deno.test("*.*.x.com needs at least two labels before x.com", () => {
  assert.equal(hostPatternMatches("*.*.x.com", "a.b.x.com"), true);
  assert.equal(hostPatternMatches("*.*.x.com", "a.b.c.x.com"), true);
  assert.equal(hostPatternMatches("*.*.x.com", "a.x.com"), false);
  assert.equal(hostPatternMatches("*.*.x.com", "x.com"), false);
});

Deno.test("*.com matches every name under com but not com", () => {
  assert.equal(hostPatternMatches("*.com", "github.com"), true);
  assert.equal(hostPatternMatches("*.com", "a.b.com"), true);
  assert.equal(hostPatternMatches("*.com", "com"), false);
  assert.equal(hostPatternMatches("*.com", "github.org"), false);
});

Deno.test("label form derp*.x.com: exactly one label, globbed", () => {
  assert.equal(hostPatternMatches("derp*.x.com", "derp1.x.com"), true);
  assert.equal(hostPatternMatches("derp*.x.com", "derp.x.com"), true);
  assert.equal(hostPatternMatches("derp*.x.com", "a.derp1.x.com"), false);
  assert.equal(hostPatternMatches("derp*.x.com", "herp1.x.com"), false);
  assert.equal(hostPatternMatches("*-prod.x.com", "api-prod.x.com"), true);
  assert.equal(hostPatternMatches("*-prod.x.com", "a.api-prod.x.com"), false);
  assert.equal(hostPatternMatches("*-prod.x.com", "api-prod2.x.com"), false);
});

Deno.test("**.x.com acts as a one-label pattern", () => {
  assert.equal(hostPatternMatches("**.x.com", "a.x.com"), true);
  assert.equal(hostPatternMatches("**.x.com", "a.b.x.com"), false);
  assert.equal(hostPatternMatches("**.x.com", "x.com"), false);
});

Deno.test("globs are per label: * never crosses a dot", () => {
  assert.equal(hostPatternMatches("a*.x.com", "ab.c.x.com"), false);
  assert.equal(
    hostPatternMatches(
      "hosted-compute-watchdog-prod-*.githubapp.com",
      "hosted-compute-watchdog-prod-eus.githubapp.com",
    ),
    true,
  );
  assert.equal(
    hostPatternMatches(
      "hosted-compute-watchdog-prod-*.githubapp.com",
      "hosted-compute-watchdog-prod-a.b.githubapp.com",
    ),
    false,
  );
});

Deno.test("wildcards never vouch for names with empty labels", () => {
  assert.equal(hostPatternMatches("*.github.com", ".github.com"), false);
  assert.equal(hostPatternMatches("*.github.com", "a..github.com"), false);
});

Deno.test("wildcards never vouch for names with characters no hostname has", () => {
  for (
    const name of [
      "evil.com:80@a.github.com",
      "evil.com/.github.com",
      "a\0.github.com",
      "a b.github.com",
      "%41.github.com",
    ]
  ) {
    assert.equal(hostPatternMatches("*.github.com", name), false, JSON.stringify(name));
  }
  for (const name of ["evil@x.github.com", "ü.github.com"]) {
    assert.equal(hostPatternMatches("*.github.com", name), false, JSON.stringify(name));
    assert.equal(hostPatternMatches("*.*.github.com", name), false, JSON.stringify(name));
  }
  assert.equal(hostPatternMatches("derp*.x.com", "derp:1.x.com"), false);
  // Service labels with "_" and digits are real names.
  assert.equal(hostPatternMatches("*.github.com", "_dmarc.a-1.github.com"), true);
  assert.equal(hostPatternMatches("*.github.com", "A.GitHub.com."), true);
});

Deno.test("compileHostPattern exposes the literal suffix used by the index", () => {
  assert.equal(compileHostPattern("*.GitHub.com").indexKey, "github.com");
  assert.equal(compileHostPattern("*.derp*.x.com").indexKey, "x.com");
  assert.equal(compileHostPattern("derp*.x.com").indexKey, "x.com");
  assert.equal(compileHostPattern("Example.COM").indexKey, "example.com");
});
