import assert from "node:assert/strict";
import {
  DEFAULT_PACKAGE_CHECK_URL,
  encodePurl,
  packageCheckBaseUrl,
  PackageChecker,
  packageVerdictEffect,
} from "../../src/packages/reputation.ts";

/** A stand-in for the reputation API on 127.0.0.1; answers depend on the package name. */
async function withApi(
  run: (
    base: string,
    state: { hits: string[]; userAgents: string[]; behaviour: Map<string, string> },
  ) => Promise<void>,
) {
  const state = { hits: [] as string[], userAgents: [] as string[], behaviour: new Map<string, string>() };
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (request) => {
    const raw = new URL(request.url).pathname;
    state.hits.push(raw);
    state.userAgents.push(request.headers.get("user-agent") ?? "");
    const purl = decodeURIComponent(raw.replace(/^\/purl\//, ""));
    const name = /^pkg:[a-z]+\/(.+)@/.exec(purl)?.[1] ?? "";
    const mode = state.behaviour.get(name) ?? name;
    const wait = (ms: number) =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, ms);
        request.signal.addEventListener("abort", () => {
          clearTimeout(timer);
          resolve();
        });
      });
    switch (mode) {
      case "evil-pkg":
        return new Response(
          JSON.stringify({
            purl,
            alerts: [
              { type: "malware", action: "error", severity: "low" },
              { type: "didYouMean", action: "warn", severity: "critical" },
              { type: "obfuscatedFile", action: "error" },
            ],
          }) + "\n" + JSON.stringify({ alerts: [{ type: "second-line", action: "error" }] }) + "\n",
          { headers: { "content-type": "application/x-ndjson" } },
        );
      case "slow-clean":
        await wait(150);
        return new Response(JSON.stringify({ alerts: [] }) + "\n");
      case "hangs":
        await wait(5000);
        return new Response("{}");
      case "rate-limited":
        return new Response("slow down", { status: 429 });
      case "broken":
        return new Response("oops", { status: 500 });
      case "not-json":
        return new Response("<html>hello</html>\n");
      case "second-line-bad":
        return new Response(JSON.stringify({ alerts: [{ type: "x", action: "warn" }] }) + "\n{not json");
      default:
        return new Response(
          JSON.stringify({ purl, alerts: [{ type: "unmaintained", action: "warn" }] }) + "\n",
        );
    }
  });
  try {
    await run(`http://127.0.0.1:${server.addr.port}`, state);
  } finally {
    await server.shutdown();
  }
}

function logger() {
  const lines: string[] = [];
  return { lines, log: { warn: (m: string) => lines.push(m) } };
}

const NPM = (name: string, version = "1.0.0") =>
  `https://registry.npmjs.org/${name}/-/${name}-${version}.tgz`;

Deno.test("package check: a package with an error alert is blocked with those alerts' types", async () => {
  await withApi(async (base, state) => {
    const { log, lines } = logger();
    const checker = new PackageChecker({ baseUrl: base, version: "0.1.0", log });
    const verdict = await checker.checkRequest(NPM("evil-pkg") + "?x");
    assert.deepEqual(verdict, {
      verdict: "block",
      purl: "pkg:npm/evil-pkg@1.0.0",
      reasons: ["malware", "obfuscatedFile"],
    });
    assert.deepEqual(state.hits, ["/purl/pkg%3Anpm%2Fevil-pkg%401.0.0"]);
    assert.deepEqual(state.userAgents, ["egress/0.1.0"]);
    assert.deepEqual(lines, []);
  });
});

Deno.test("package check: warnings only ⇒ ok; only the first NDJSON line is read", async () => {
  await withApi(async (base) => {
    const checker = new PackageChecker({ baseUrl: base, version: "0.1.0" });
    assert.deepEqual(await checker.checkRequest(NPM("express", "4.18.2")), {
      verdict: "ok",
      purl: "pkg:npm/express@4.18.2",
    });
    assert.deepEqual(await checker.checkRequest(NPM("second-line-bad")), {
      verdict: "ok",
      purl: "pkg:npm/second-line-bad@1.0.0",
    });
  });
});

Deno.test("package check: URLs that are no registry download are not looked up", async () => {
  await withApi(async (base, state) => {
    const checker = new PackageChecker({ baseUrl: base, version: "0.1.0" });
    assert.deepEqual(await checker.checkRequest("https://registry.npmjs.org/express"), {
      verdict: "not_a_package",
    });
    assert.deepEqual(await checker.checkRequest("https://github.com/x.tgz"), { verdict: "not_a_package" });
    assert.equal(state.hits.length, 0);
  });
});

for (
  const [name, expected] of [
    [
      "rate-limited",
      /Cannot check package pkg:npm\/rate-limited@1\.0\.0: rate limited by the service \(HTTP 429\); allowed \(fail open\)/,
    ],
    [
      "broken",
      /Cannot check package pkg:npm\/broken@1\.0\.0: service answered HTTP 500; allowed \(fail open\)/,
    ],
    [
      "not-json",
      /Cannot check package pkg:npm\/not-json@1\.0\.0: the answer is not valid JSON; allowed \(fail open\)/,
    ],
  ] as const
) {
  Deno.test(`package check: ${name} ⇒ unknown (fail open), logged`, async () => {
    await withApi(async (base) => {
      const { log, lines } = logger();
      const checker = new PackageChecker({ baseUrl: base, version: "0.1.0", log });
      assert.deepEqual(await checker.checkRequest(NPM(name)), {
        verdict: "unknown",
        purl: `pkg:npm/${name}@1.0.0`,
      });
      assert.equal(lines.length, 1);
      assert.match(lines[0], expected);
    });
  });
}

Deno.test("package check: no answer within the timeout ⇒ unknown; the default timeout is 2 s", async () => {
  await withApi(async (base) => {
    const { log, lines } = logger();
    const quick = new PackageChecker({ baseUrl: base, version: "0.1.0", log, timeoutMs: 200 });
    let started = performance.now();
    assert.deepEqual(await quick.checkRequest(NPM("hangs")), {
      verdict: "unknown",
      purl: "pkg:npm/hangs@1.0.0",
    });
    assert.ok(performance.now() - started < 1500);
    assert.match(lines[0], /Cannot check package pkg:npm\/hangs@1\.0\.0: no answer within 200 ms/);
    const standard = new PackageChecker({ baseUrl: base, version: "0.1.0", log });
    started = performance.now();
    assert.equal((await standard.checkRequest(NPM("hangs", "2.0.0"))).verdict, "unknown");
    const elapsed = performance.now() - started;
    assert.ok(elapsed >= 1900 && elapsed < 3500, `took ${elapsed} ms`);
    assert.match(lines[1], /no answer within 2000 ms/);
  });
});

Deno.test("package check: a network error ⇒ unknown", async () => {
  const { log, lines } = logger();
  // A port nothing listens on: take one, then close it.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const checker = new PackageChecker({ baseUrl: `http://127.0.0.1:${port}`, version: "0.1.0", log });
  assert.equal((await checker.checkRequest(NPM("anything"))).verdict, "unknown");
  assert.match(lines[0], /Cannot check package pkg:npm\/anything@1\.0\.0: request failed: /);
});

Deno.test("package check: concurrent requests for one PURL share one lookup; verdicts are cached", async () => {
  await withApi(async (base, state) => {
    const checker = new PackageChecker({ baseUrl: base, version: "0.1.0" });
    const verdicts = await Promise.all(
      Array.from({ length: 8 }, () => checker.checkRequest(NPM("slow-clean"))),
    );
    assert.ok(verdicts.every((v) => v.verdict === "ok"));
    assert.equal(state.hits.length, 1);
    await checker.checkRequest(NPM("slow-clean"));
    await checker.checkRequest(NPM("evil-pkg"));
    const again = await checker.checkRequest(NPM("evil-pkg"));
    assert.equal(again.verdict, "block");
    assert.equal(state.hits.length, 2);
  });
});

Deno.test("package check: block/ok cache is an LRU of the given size", async () => {
  await withApi(async (base, state) => {
    const checker = new PackageChecker({ baseUrl: base, version: "0.1.0", cacheSize: 2 });
    await checker.checkRequest(NPM("a"));
    await checker.checkRequest(NPM("b"));
    await checker.checkRequest(NPM("a")); // a is now the most recent
    await checker.checkRequest(NPM("c")); // evicts b
    assert.equal(state.hits.length, 3);
    await checker.checkRequest(NPM("a"));
    assert.equal(state.hits.length, 3);
    await checker.checkRequest(NPM("b"));
    assert.equal(state.hits.length, 4);
  });
});

Deno.test("package check: unknown is reused for 60 s, then the service is asked again", async () => {
  await withApi(async (base, state) => {
    let now = 1_000_000;
    const { log, lines } = logger();
    const checker = new PackageChecker({ baseUrl: base, version: "0.1.0", now: () => now, log });
    state.behaviour.set("flaky", "broken");
    assert.equal((await checker.checkRequest(NPM("flaky"))).verdict, "unknown");
    state.behaviour.set("flaky", "evil-pkg");
    now += 59_999;
    assert.equal((await checker.checkRequest(NPM("flaky"))).verdict, "unknown");
    assert.equal(state.hits.length, 1);
    now += 1;
    assert.equal((await checker.checkRequest(NPM("flaky"))).verdict, "block");
    assert.equal(state.hits.length, 2);
    assert.equal(lines.length, 1);
  });
});

Deno.test("package check: remembered unknowns are bounded too (service down, many distinct PURLs)", async () => {
  await withApi(async (base, state) => {
    const checker = new PackageChecker({ baseUrl: base, version: "0.1.0", cacheSize: 2 });
    for (const name of ["u1", "u2", "u3"]) state.behaviour.set(name, "broken");
    for (const name of ["u1", "u2", "u3"]) await checker.checkRequest(NPM(name));
    assert.equal(state.hits.length, 3);
    await checker.checkRequest(NPM("u3")); // still remembered
    await checker.checkRequest(NPM("u2"));
    assert.equal(state.hits.length, 3);
    await checker.checkRequest(NPM("u1")); // the oldest was dropped: asked again
    assert.equal(state.hits.length, 4);
  });
});

Deno.test("packageVerdictEffect: enforce replies 403 text/plain; audit forwards with the same fields", () => {
  const block = {
    verdict: "block" as const,
    purl: "pkg:npm/evil-pkg@1.0.0",
    reasons: ["malware", "obfuscatedFile"],
  };
  const enforce = packageVerdictEffect(block, { audit: false });
  assert.deepEqual(enforce, {
    action: "block",
    logFields: {
      policy: "deny",
      reason: "package flagged: malware, obfuscatedFile",
      security_block: true,
      purl: "pkg:npm/evil-pkg@1.0.0",
      reasons: ["malware", "obfuscatedFile"],
    },
    response: {
      status: 403,
      headers: { "content-type": "text/plain" },
      body: "Blocked by package check: pkg:npm/evil-pkg@1.0.0",
    },
  });
  const audit = packageVerdictEffect(block, { audit: true });
  assert.equal(audit.action, "forward");
  assert.ok("logFields" in audit);
  assert.deepEqual(audit.logFields, {
    ...enforce.action === "block" && "logFields" in enforce ? enforce.logFields : {},
    audit: true,
  });
  assert.equal(audit.response, undefined);
  assert.match(
    audit.warning ?? "",
    /package check flagged pkg:npm\/evil-pkg@1\.0\.0 \(malware, obfuscatedFile\)/,
  );
  for (const verdict of ["ok", "unknown"] as const) {
    assert.deepEqual(packageVerdictEffect({ verdict, purl: "pkg:npm/x@1" }, { audit: false }), {
      action: "forward",
    });
  }
  assert.deepEqual(packageVerdictEffect({ verdict: "not_a_package" }, { audit: true }), {
    action: "forward",
  });
});

Deno.test("encodePurl leaves only unreserved characters", () => {
  assert.equal(encodePurl("pkg:npm/express@4.18.2"), "pkg%3Anpm%2Fexpress%404.18.2");
  assert.equal(encodePurl("pkg:npm/@types/node@20.1.0"), "pkg%3Anpm%2F%40types%2Fnode%4020.1.0");
  assert.equal(
    encodePurl("pkg:pypi/a_b-c~d@1.0+local!x*'()"),
    "pkg%3Apypi%2Fa_b-c~d%401.0%2Blocal%21x%2A%27%28%29",
  );
});

Deno.test("packageCheckBaseUrl: flag, then environment, then the default", () => {
  assert.equal(packageCheckBaseUrl(), DEFAULT_PACKAGE_CHECK_URL);
  assert.equal(DEFAULT_PACKAGE_CHECK_URL, "https://firewall-api.socket.dev");
  assert.equal(packageCheckBaseUrl(undefined, ""), DEFAULT_PACKAGE_CHECK_URL);
  assert.equal(packageCheckBaseUrl(undefined, "http://127.0.0.1:9/"), "http://127.0.0.1:9");
  assert.equal(packageCheckBaseUrl("http://127.0.0.1:8/api", "http://127.0.0.1:9"), "http://127.0.0.1:8/api");
  assert.throws(
    () => packageCheckBaseUrl("ftp://x"),
    /Cannot use --package-check-url "ftp:\/\/x": scheme must be http or https/,
  );
  assert.throws(() => packageCheckBaseUrl("nope"), /Cannot use --package-check-url "nope": not a URL/);
  assert.throws(
    () => packageCheckBaseUrl(undefined, "file:///x"),
    /Cannot use EGRESS_PACKAGE_CHECK_URL "file:\/\/\/x": scheme must be http or https/,
  );
});
