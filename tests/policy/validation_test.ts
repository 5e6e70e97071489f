// Validation classes (§9), flag rules (§5) and the cross-rule warnings.
import assert from "node:assert/strict";
import { validatePolicy } from "../../src/policy/policy.ts";

const errors = (text: string) => validatePolicy(text).errors.map((e) => [e.line, e.column, e.message]);
const warnings = (text: string) =>
  validatePolicy(text).warnings.map((w) => [w.line, w.column, w.message, w.text]);

Deno.test("§5: passthrough valid on host and wildcard_host only (also via header)", () => {
  assert.deepEqual(errors("x.com passthrough\n*.x.com:443 passthrough exe=/a"), []);
  assert.deepEqual(errors("1.2.3.4 passthrough"), [[
    1,
    9,
    "passthrough is allowed only on host and wildcard rules, not on ip rules",
  ]]);
  assert.deepEqual(errors("10.0.0.0/8 passthrough"), [
    [1, 12, "passthrough is allowed only on host and wildcard rules, not on cidr rules"],
  ]);
  assert.deepEqual(errors("dns:x.com passthrough"), [
    [1, 11, "passthrough is allowed only on host and wildcard rules, not on dns_host rules"],
  ]);
  assert.deepEqual(errors("[passthrough]\nx.com\n  https://x.com/\n1.2.3.4\ndns:*.x.com"), [
    [
      3,
      3,
      "passthrough is allowed only on host and wildcard rules, not on url rules (from the header on line 1)",
    ],
    [
      4,
      1,
      "passthrough is allowed only on host and wildcard rules, not on ip rules (from the header on line 1)",
    ],
    [
      5,
      1,
      "passthrough is allowed only on host and wildcard rules, not on dns_wildcard_host rules (from the header on line 1)",
    ],
  ]);
  assert.deepEqual(errors("[https://a.com]\n[passthrough]\n/x"), [
    [3, 1, "a path rule needs a URL-base header before it (e.g. [https://example.com])"],
  ]);
});

Deno.test("§5: insecure valid on all but dns_*", () => {
  assert.deepEqual(
    errors(
      "x.com insecure\n*.x.com insecure\n1.2.3.4 insecure\n10.0.0.0/8 insecure\nhttps://x.com/ insecure\n[https://a.com]\n/p insecure",
    ),
    [],
  );
  assert.deepEqual(errors("dns:x.com insecure"), [[1, 11, "insecure is not allowed on a dns: rule"]]);
  assert.deepEqual(errors("[insecure]\ndns:x.com"), [[
    2,
    1,
    "insecure is not allowed on a dns: rule (from the header on line 1)",
  ]]);
});

Deno.test("§5: both flags on one rule, any mix of rule and header", () => {
  assert.deepEqual(errors("x.com passthrough insecure"), [[
    1,
    19,
    "a rule cannot be both passthrough and insecure",
  ]]);
  assert.deepEqual(errors("[passthrough]\nx.com insecure"), [
    [2, 7, "a rule cannot be both passthrough and insecure (from the header on line 1)"],
  ]);
  assert.deepEqual(errors("[insecure]\nx.com passthrough"), [
    [2, 7, "a rule cannot be both passthrough and insecure (from the header on line 1)"],
  ]);
});

Deno.test("§9: an error drops the rule; other lines survive", () => {
  const r = validatePolicy("a.com\nb.com:0\nc.com passthrough insecure\nd.com");
  assert.deepEqual(r.rules.map((x) => x.target), ["a.com", "d.com"]);
  assert.deepEqual(r.errors.map((e) => e.line), [2, 3]);
  assert.ok(r.errors.every((e) => e.text === ["b.com:0", "c.com passthrough insecure"][e.line - 2]));
});

Deno.test("§9: duplicate attribute is a warning (rule and header); the last value wins", () => {
  const r = validatePolicy("[exe=/a exe=/b]\nx.com step=1 step=2\ny.com exe=/c");
  assert.deepEqual(r.rules.map((x) => x.attrs), [{ exe: "/b", step: "2" }, { exe: "/c" }]);
  assert.deepEqual(warnings("[exe=/a exe=/b]\nx.com step=1 step=2\ny.com exe=/c"), [
    [1, 9, 'duplicate attribute "exe": the last value wins', "[exe=/a exe=/b]"],
    [2, 14, 'duplicate attribute "step": the last value wins', "x.com step=1 step=2"],
  ]);
  // arg[01] and arg[1] are the same key.
  assert.deepEqual(warnings("x.com arg[01]=a arg[1]=b").map((w) => w[2]), [
    'duplicate attribute "arg[1]": the last value wins',
  ]);
});

Deno.test("§9: a port or protocol on a dns: rule is a warning; the rule is kept", () => {
  const r = validatePolicy("dns:x.com:53/udp");
  assert.equal(r.rules.length, 1);
  assert.deepEqual(warnings("dns:x.com:53/udp"), [[
    1,
    10,
    "a port or protocol on a dns: rule is ignored",
    "dns:x.com:53/udp",
  ]]);
  assert.deepEqual(warnings("dns:*.y.com:*").map((w) => w[1]), [12]);
});

Deno.test("§9: warnings of a line with an error are not reported", () => {
  const r = validatePolicy("x.com:0 exe=/a exe=/b");
  assert.deepEqual([r.errors.length, r.warnings.length], [1, 0]);
});

Deno.test("cross-rule 1: passthrough rule matching the host of a URL/path rule", () => {
  assert.deepEqual(warnings("*.github.com passthrough\nhttps://api.github.com/repos/*"), [[
    0,
    0,
    "passthrough rule on line 1 covers the host of the url rule on line 2: URL/method filtering will not apply to that host",
    "*.github.com passthrough",
  ]]);
  assert.deepEqual(
    warnings("[https://API.x.com/v1]\n/a\n[passthrough]\napi.x.com").map((w) => [w[2], w[3]]),
    [[
      "passthrough rule on line 4 covers the host of the path rule on line 2: URL/method filtering will not apply to that host",
      "api.x.com",
    ]],
  );
  // The URL host is a wildcard matching the passthrough host.
  assert.deepEqual(warnings("https://*.x.com/\nci.x.com passthrough").map((w) => w[2]), [
    "passthrough rule on line 2 covers the host of the url rule on line 1: URL/method filtering will not apply to that host",
  ]);
  // Wildcard against wildcard, and a short wildcard suffix.
  assert.deepEqual(
    warnings("*.x.com passthrough\nhttps://*.x.com/a\n*.com passthrough\nhttps://a.b.com/").map((w) => w[2]),
    [
      "passthrough rule on line 1 covers the host of the url rule on line 2: URL/method filtering will not apply to that host",
      "passthrough rule on line 3 covers the host of the url rule on line 2: URL/method filtering will not apply to that host",
      "passthrough rule on line 3 covers the host of the url rule on line 4: URL/method filtering will not apply to that host",
    ],
  );
  // No overlap, no warning; a passthrough on another host or a non-matching wildcard is fine.
  assert.deepEqual(
    warnings("*.github.com passthrough\nhttps://github.com/\nhttps://gitlab.com/\nhttps://1.2.3.4/"),
    [],
  );
});

Deno.test("cross-rule 2: insecure rule overlapped by a passthrough rule", () => {
  assert.deepEqual(warnings("*.x.com passthrough\na.x.com insecure"), [[
    0,
    0,
    "insecure rule on line 2 has no effect where the passthrough rule on line 1 matches the same host",
    "a.x.com insecure",
  ]]);
  assert.deepEqual(warnings("*.x.com insecure\na.x.com passthrough").map((w) => w[2]), [
    "insecure rule on line 1 has no effect where the passthrough rule on line 2 matches the same host",
  ]);
  assert.deepEqual(warnings("a.x.com passthrough\nb.x.com insecure\n1.2.3.4 insecure"), []);
});

Deno.test("cross-rule 3: insecure URL/path rule sharing its host with a verified URL/path rule", () => {
  assert.deepEqual(warnings("https://A.com/x insecure\nhttps://a.com/y\nhttps://a.com/z"), [[
    0,
    0,
    "insecure url rule on line 1 applies to the whole connection: requests of the url rule on line 2 to the same host also go unverified",
    "https://A.com/x insecure",
  ]]);
  assert.deepEqual(warnings("[https://a.com]\n/y\n[insecure]\nhttps://a.com/x").map((w) => w[2]), [
    "insecure url rule on line 4 applies to the whole connection: requests of the path rule on line 2 to the same host also go unverified",
  ]);
  assert.deepEqual(warnings("https://a.com/x insecure\nhttps://b.com/\nhttps://a.com/z insecure"), []);
});

Deno.test("cross-rule warnings ignore rules dropped by errors", () => {
  assert.deepEqual(warnings("*.x.com passthrough\nhttps://a.x.com/ user=1"), []);
});
