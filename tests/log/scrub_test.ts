import assert from "node:assert/strict";
import fc from "fast-check";
import { createScrubber, defaultScrubber, MASK } from "../../src/log/scrub.ts";

const ghp = "ghp_" + "A1b2C3d4E5".repeat(4); // 40 characters after the prefix
const pat = "github_pat_" + "11ABCDEFG_0123456789abcdefXYZ";

Deno.test("token patterns are hidden anywhere in a string", () => {
  assert.equal(defaultScrubber.text(`x ${ghp} y`), "x *** y");
  for (const prefix of ["gho_", "ghs_", "ghu_", "ghr_"]) {
    assert.equal(defaultScrubber.text(prefix + "a".repeat(36)), MASK);
  }
  assert.equal(
    defaultScrubber.text("ghp_" + "a".repeat(35)),
    "ghp_" + "a".repeat(35),
    "too short to be a token",
  );
  assert.equal(defaultScrubber.text("ghx_" + "a".repeat(40)), "ghx_" + "a".repeat(40));
  assert.equal(
    defaultScrubber.text(`https://x-access-token:${pat}@github.com`),
    "https://x-access-token:***@github.com",
  );
  assert.equal(defaultScrubber.text("github_pat_short"), "github_pat_short");
});

Deno.test("configured secrets are hidden, longest first, empty ones ignored", () => {
  const s = createScrubber({
    secrets: ["abc", "abcdef-runtime", "", undefined, "id.token+with*regex?chars"],
  });
  assert.equal(s.text("a abcdef-runtime b abc c"), "a *** b *** c");
  assert.equal(s.text("id.token+with*regex?chars"), MASK);
  assert.equal(
    s.text("idXtoken+with*regex?chars"),
    "idXtoken+with*regex?chars",
    "regex characters are literal",
  );
  assert.equal(s.text("nothing here"), "nothing here");
  assert.equal(createScrubber({ secrets: [""] }).text("abc"), "abc");
});

Deno.test("argv: credential headers keep only the scheme; cookies are hidden", () => {
  const s = createScrubber({ secrets: ["s3cr3t-value"] });
  assert.deepEqual(
    s.argv([
      "curl",
      "-H",
      "Authorization: Bearer abc.def",
      "-HAuthorization: token xyz",
      "--header=proxy-authorization:Basic dXNlcjpwYXNz",
      "Authorization: s3cr3t-value",
      "-H",
      "Cookie: session=1; other=2",
      `https://example.com/?t=${ghp}`,
      "plain s3cr3t-value",
    ]),
    [
      "curl",
      "-H",
      "Authorization: Bearer ***",
      "-HAuthorization: token ***",
      "--header=proxy-authorization:Basic ***",
      "Authorization: ***",
      "-H",
      "Cookie: ***",
      "https://example.com/?t=***",
      "plain ***",
    ],
  );
  assert.equal(s.argument("authorization: "), "authorization: ***");
});

Deno.test("property: a configured secret never survives, whatever surrounds it", () => {
  fc.assert(
    fc.property(
      fc.string(),
      fc.string(),
      fc.stringMatching(/^[A-Za-z0-9._-]{8,40}$/),
      (before, after, secret) => {
        const s = createScrubber({ secrets: [secret] });
        // A mask contains "*", which no secret here does, so no occurrence can survive or be re-formed.
        assert.ok(!s.text(before + secret + after).includes(secret));
        assert.ok(!s.argument(before + secret + after).includes(secret));
      },
    ),
  );
});
