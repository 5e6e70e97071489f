import assert from "node:assert/strict";
import fc from "fast-check";
import { buildLogUrl, scrubAbsoluteUrl, scrubQuery, stripUserinfo } from "../../src/proto/url_scrub.ts";

Deno.test("log URL: scheme, authority without userinfo, path, query values hidden, fragment dropped", () => {
  assert.equal(
    buildLogUrl("https", "api.github.com", "/repos/o/r?per_page=100&page=2"),
    "https://api.github.com/repos/o/r?per_page=***&page=***",
  );
  assert.equal(buildLogUrl("http", "User:Pw@Example.COM:8080", "/a#frag"), "http://example.com:8080/a");
  assert.equal(buildLogUrl("https", "h", "/p?flag&token=abc&=x&k="), "https://h/p?flag&token=***&=***&k=***");
  assert.equal(buildLogUrl("https", "h", "/p?"), "https://h/p?");
  assert.equal(buildLogUrl("https", "h", ""), "https://h/");
  assert.equal(buildLogUrl("https", "h", "?q=1"), "https://h/?q=***");
  assert.equal(buildLogUrl("https", "h", "/a?b=c?d=e"), "https://h/a?b=***");
  assert.equal(scrubQuery("a=1&b=2"), "a=***&b=***");
  assert.equal(stripUserinfo("x-access-token:ghs_abc@github.com"), "github.com");
  assert.equal(
    scrubAbsoluteUrl("HTTPS://tok@github.com/o/r.git/info/refs?service=git-upload-pack"),
    "https://github.com/o/r.git/info/refs?service=***",
  );
  assert.equal(scrubAbsoluteUrl("ftp://x/"), undefined);
  assert.equal(scrubAbsoluteUrl("/relative"), undefined);
});

Deno.test("property: no query value and no userinfo survive", () => {
  const word = fc.stringMatching(/^[a-z0-9]{1,8}$/);
  fc.assert(
    fc.property(
      word,
      word,
      fc.array(fc.tuple(word, word), { minLength: 1, maxLength: 5 }),
      (user, secret, params) => {
        const query = params.map(([k, v]) => `${k}=SECRET${v}`).join("&");
        const url = buildLogUrl("https", `${user}:PASS${secret}@host.example`, `/p?${query}`);
        assert.ok(!url.includes("SECRET"), url);
        assert.ok(!url.includes("PASS"), url);
        assert.ok(url.startsWith("https://host.example/p?"));
      },
    ),
  );
});
