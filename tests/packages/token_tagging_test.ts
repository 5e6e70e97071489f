import assert from "node:assert/strict";
import { constantTimeEqual, createTokenTagger } from "../../src/packages/token_tagging.ts";

const TOKEN = "ghs_" + "A".repeat(36);
const OIDC_URL = "https://pipelines.actions.githubusercontent.com/abc/_apis/oidctoken?api-version=2.0";
const OIDC_TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.oidc-request";
const tag = createTokenTagger({
  githubToken: TOKEN,
  idTokenRequestUrl: OIDC_URL,
  idTokenRequestToken: OIDC_TOKEN,
});

Deno.test("token tagging: the job token to api.github.com / uploads.github.com, scheme token or bearer, any case", () => {
  for (const scheme of ["token", "Token", "TOKEN", "bearer", "Bearer", "BEARER"]) {
    assert.equal(
      tag("https://api.github.com/repos/o/r", { authorization: `${scheme} ${TOKEN}` }),
      true,
      scheme,
    );
  }
  assert.equal(
    tag("https://uploads.github.com/repos/o/r/releases/1/assets", { Authorization: `token ${TOKEN}` }),
    true,
  );
  assert.equal(
    tag("https://API.GITHUB.COM:443/user", new Headers({ Authorization: `Bearer ${TOKEN}` })),
    true,
  );
  assert.equal(tag("https://api.github.com/user", [["Authorization", `token   ${TOKEN}  `]]), true);
});

Deno.test("token tagging: not tagged for another token, host, scheme or no header", () => {
  assert.equal(tag("https://api.github.com/user", { authorization: `token ${TOKEN}x` }), false);
  assert.equal(tag("https://api.github.com/user", { authorization: `token ${TOKEN.slice(0, -1)}` }), false);
  assert.equal(tag("https://api.github.com/user", { authorization: `Basic ${TOKEN}` }), false);
  assert.equal(tag("https://api.github.com/user", { authorization: TOKEN }), false);
  assert.equal(tag("https://api.github.com/user", {}), false);
  assert.equal(tag("https://github.com/o/r.git/info/refs", { authorization: `token ${TOKEN}` }), false);
  assert.equal(tag("https://api.github.com.evil.com/user", { authorization: `token ${TOKEN}` }), false);
  assert.equal(tag("https://evil.com/?u=https://api.github.com", { authorization: `token ${TOKEN}` }), false);
  // The OIDC request token is not the job token.
  assert.equal(tag("https://api.github.com/user", { authorization: `bearer ${OIDC_TOKEN}` }), false);
});

Deno.test("token tagging: the OIDC token request (URL prefix, bearer only)", () => {
  assert.equal(
    tag(`${OIDC_URL}&audience=sts.amazonaws.com`, { authorization: `Bearer ${OIDC_TOKEN}` }),
    true,
  );
  assert.equal(tag(OIDC_URL, { authorization: `bearer ${OIDC_TOKEN}` }), true);
  assert.equal(tag(OIDC_URL, { authorization: `token ${OIDC_TOKEN}` }), false);
  assert.equal(tag(OIDC_URL, { authorization: `Bearer ${TOKEN}` }), false);
  assert.equal(
    tag("https://pipelines.actions.githubusercontent.com/other", { authorization: `Bearer ${OIDC_TOKEN}` }),
    false,
  );
});

Deno.test("token tagging: nothing configured never tags; an empty token is not configured", () => {
  const none = createTokenTagger({});
  assert.equal(none("https://api.github.com/user", { authorization: "token " }), false);
  const empty = createTokenTagger({ githubToken: "", idTokenRequestUrl: OIDC_URL, idTokenRequestToken: "" });
  assert.equal(empty("https://api.github.com/user", { authorization: "token " }), false);
  assert.equal(empty(OIDC_URL, { authorization: "Bearer " }), false);
  // The OIDC token without its URL is not usable.
  const noUrl = createTokenTagger({ idTokenRequestToken: OIDC_TOKEN });
  assert.equal(noUrl(OIDC_URL, { authorization: `Bearer ${OIDC_TOKEN}` }), false);
});

Deno.test("constantTimeEqual", () => {
  const e = new TextEncoder();
  assert.equal(constantTimeEqual(e.encode("abc"), e.encode("abc")), true);
  assert.equal(constantTimeEqual(e.encode("abc"), e.encode("abd")), false);
  assert.equal(constantTimeEqual(e.encode("abc"), e.encode("abcd")), false);
  assert.equal(constantTimeEqual(e.encode(""), e.encode("")), true);
  assert.equal(constantTimeEqual(e.encode(""), e.encode("a")), false);
  assert.equal(constantTimeEqual(e.encode("a\u0000"), e.encode("a")), false);
});
