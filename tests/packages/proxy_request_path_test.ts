// The package check and token tagging in the proxy's request path (extras.md): curl → the real
// transparent proxy (tests/proxy/harness.ts) → registry-shaped HTTPS servers on loopback that hold
// certificates for the real registry names, with a local stand-in for the reputation API. Hooks are
// built by createRequestHooks from flag values and an environment, as the daemon builds them.
// Loopback only, no root needed.
import assert from "node:assert/strict";
import { createRequestHooks } from "../../src/packages/request_hooks.ts";
import {
  httpUpstream,
  type ProxyUnderTest,
  proxyUnderTest,
  schemaErrors,
  testCa,
  type Upstream,
  via,
} from "../proxy/harness.ts";

const PROCESS = { pid: 777, exe: "/usr/bin/node", cmdline: ["node", "npm-cli.js", "ci"] };
const JOB_TOKEN = "ghs_JobTokenValue0123456789abcdefXYZ";
const OIDC_TOKEN = "oidc-request-token-value-42";
const OIDC_HOST = "pipelines.actions.githubusercontent.com";

type Api = { base: string; hits: string[]; close(): Promise<void> };

/** The reputation API: packages named `*evil*` carry error alerts, `hangs` never answers, `limited` gets 429. */
function reputationApi(): Promise<Api> {
  const hits: string[] = [];
  return new Promise((resolve) => {
    const server = Deno.serve({
      hostname: "127.0.0.1",
      port: 0,
      onListen: (addr) =>
        resolve({
          base: `http://127.0.0.1:${(addr as Deno.NetAddr).port}`,
          hits,
          close: () => server.shutdown(),
        }),
    }, async (request) => {
      const purl = decodeURIComponent(new URL(request.url).pathname.replace(/^\/purl\//, ""));
      hits.push(purl);
      const name = /^pkg:[a-z]+\/(.+)@/.exec(purl)?.[1] ?? "";
      if (name === "hangs") {
        // Longer than the 500 ms lookup timeout of the rig, short enough for a quick shutdown.
        await new Promise((r) => setTimeout(r, 1000));
        return new Response("{}\n");
      }
      if (name === "limited") return new Response("slow down", { status: 429 });
      const alerts = name.includes("evil")
        ? [
          { type: "malware", action: "error", severity: "critical" },
          { type: "networkAccess", action: "warn" },
          { type: "obfuscatedFile", action: "error" },
        ]
        : [{ type: "unmaintained", action: "warn" }];
      return new Response(JSON.stringify({ purl, alerts }) + "\n", {
        headers: { "content-type": "application/x-ndjson" },
      });
    });
  });
}

type Fetched = { status: number; body: string; statuses: number[]; bodies: string[]; stderr: string };

/** curl of one or more URLs (in order, one connection); status and body of the last and of each. */
async function curlEach(args: string[]): Promise<Fetched> {
  const output = await new Deno.Command("curl", {
    args: ["-sS", "--max-time", "10", "-w", "\n@@%{http_code}@@\n", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const statuses: number[] = [];
  const bodies: string[] = [];
  const parts = new TextDecoder().decode(output.stdout).split(/\n@@(\d+)@@\n/);
  for (let i = 0; i + 1 < parts.length; i += 2) {
    bodies.push(parts[i]);
    statuses.push(Number(parts[i + 1]));
  }
  return {
    status: statuses.at(-1) ?? 0,
    body: bodies.at(-1) ?? "",
    statuses,
    bodies,
    stderr: new TextDecoder().decode(output.stderr),
  };
}

type Served = { path: string; authorization: string | null };

type Rig = {
  proxy: ProxyUnderTest;
  upstreams: Map<string, Upstream>;
  served: Served[];
  /** curl through the proxy to `https://<name>:<its port><path>`; several paths share one connection */
  get(name: string, paths: string[], extra?: string[]): Promise<Fetched>;
  lines(): Record<string, unknown>[];
  close(): Promise<void>;
};

/** One HTTPS server per name (a leaf of the test upstream CA), a proxy allowing each `name:port`. */
async function rig(
  names: string[],
  options: {
    audit?: boolean;
    /** the daemon's environment; gets the port of each name's server */
    env?: (port: (name: string) => number) => Record<string, string>;
    packageCheckUrl?: string;
    policy?: string;
  } = {},
): Promise<Rig> {
  const upstreamCa = await testCa("upstream");
  const served: Served[] = [];
  const upstreams = new Map<string, Upstream>();
  for (const name of names) {
    const leaf = await upstreamCa.leafFor(name);
    upstreams.set(
      name,
      await httpUpstream("127.0.0.1", (request) => {
        const url = new URL(request.url);
        served.push({ path: url.pathname + url.search, authorization: request.headers.get("authorization") });
        return new Response(`tarball of ${url.pathname}`, {
          headers: { "content-type": "application/octet-stream" },
        });
      }, { cert: leaf.certPem, key: leaf.keyPem }),
    );
  }
  const env = options.env?.((name) => upstreams.get(name)!.port) ?? {};
  // The checker writes to the proxy's operational log, which exists only once the proxy does.
  const late: { ops?: { warn(m: string): void } } = {};
  const requestHooks = createRequestHooks({
    packageCheck: options.packageCheckUrl !== undefined,
    packageCheckUrl: options.packageCheckUrl,
    version: "0.0.0-test",
    env: (key) => env[key],
    log: { warn: (m) => late.ops?.warn(m) },
    timeoutMs: 500,
  });
  const policy = options.policy ??
    [...upstreams].map(([name, upstream]) => `${name}:${upstream.port}`).join("\n");
  const proxy = await proxyUnderTest({
    policy,
    audit: options.audit,
    upstreamCaCerts: [upstreamCa.caCertPem],
    process: PROCESS,
    extra: { requestHooks },
  });
  late.ops = proxy.ops;
  return {
    proxy,
    upstreams,
    served,
    get: async (name, paths, extra = []) => {
      const upstream = upstreams.get(name)!;
      proxy.target = { ip: upstream.ip, port: upstream.port };
      // One curl for all paths: they share a keep-alive connection through the proxy.
      return await curlEach([
        ...via(proxy, name, upstream.port),
        "--cacert",
        proxy.egressCa.caCertPath,
        ...extra,
        ...paths.map((p) => `https://${name}:${upstream.port}${p}`),
      ]);
    },
    lines: () => proxy.log.lines,
    close: async () => {
      await proxy.close();
      for (const upstream of upstreams.values()) await upstream.close();
    },
  };
}

async function withApi(run: (api: Api) => Promise<void>): Promise<void> {
  const api = await reputationApi();
  try {
    await run(api);
  } finally {
    await api.close();
  }
}

const NPM = "registry.npmjs.org";
const PYPI = "files.pythonhosted.org";
const CARGO = "static.crates.io";

Deno.test("package check (enforce): a flagged npm, PyPI and Cargo download is refused with 403; clean ones pass", async () => {
  await withApi(async (api) => {
    const r = await rig([NPM, PYPI, CARGO], { packageCheckUrl: api.base });
    try {
      const port = r.upstreams.get(NPM)!.port;
      const evil = await r.get(NPM, ["/evil-pkg/-/evil-pkg-1.0.0.tgz"]);
      assert.equal(evil.status, 403, evil.stderr);
      assert.equal(evil.body, "Blocked by package check: pkg:npm/evil-pkg@1.0.0");
      assert.equal(r.served.length, 0, "the flagged tarball never reached the registry");

      const line = r.lines()[0];
      assert.deepEqual(Object.keys(line), [
        "ts",
        "type",
        "dst_ip",
        "dst_port",
        "src_port",
        "url",
        "method",
        "policy",
        "rule",
        "line",
        "reason",
        "security_block",
        "purl",
        "reasons",
        "pid",
        "exe",
        "cmdline",
      ]);
      assert.equal(line.url, `https://${NPM}:${port}/evil-pkg/-/evil-pkg-1.0.0.tgz`);
      assert.equal(line.policy, "deny");
      assert.equal(line.reason, "package flagged: malware, obfuscatedFile");
      assert.equal(line.security_block, true);
      assert.equal(line.purl, "pkg:npm/evil-pkg@1.0.0");
      assert.deepEqual(line.reasons, ["malware", "obfuscatedFile"]);
      assert.equal(line.rule, `${NPM}:${port}`, "the allowing rule is kept");
      assert.equal(line.line, 1);
      assert.equal(line.audit, undefined);

      // A query, an escaped letter or a dot segment does not get the same tarball past the check;
      // on one keep-alive connection the 403s do not disturb the next, clean, request.
      const spelled = await r.get(NPM, [
        "/evil-pkg/-/evil-pkg-1.0.0.tgz?cache=bust",
        "/%65vil-pkg/-/evil-pkg-1.0.0.tgz",
        "/x/../evil-pkg/-/evil-pkg-1.0.0.tgz",
        "/left-pad/-/left-pad-1.3.0.tgz",
      ]);
      assert.deepEqual(spelled.statuses, [403, 403, 403, 200], spelled.stderr);
      for (const body of spelled.bodies.slice(0, 3)) {
        assert.equal(body, "Blocked by package check: pkg:npm/evil-pkg@1.0.0");
      }
      assert.equal(spelled.body, "tarball of /left-pad/-/left-pad-1.3.0.tgz");
      assert.deepEqual(r.served.map((s) => s.path), ["/left-pad/-/left-pad-1.3.0.tgz"]);

      const wheel = await r.get(PYPI, ["/packages/ab/cd/evil_wheel-2.0-py3-none-any.whl"]);
      assert.equal(wheel.status, 403);
      assert.equal(wheel.body, "Blocked by package check: pkg:pypi/evil-wheel@2.0");
      const sdist = await r.get(PYPI, ["/packages/source/r/requests/requests-2.31.0.tar.gz"]);
      assert.equal(sdist.status, 200, sdist.stderr);
      const crate = await r.get(CARGO, ["/crates/evil_crate/evil_crate-0.1.0.crate"]);
      assert.equal(crate.status, 403);
      assert.equal(crate.body, "Blocked by package check: pkg:cargo/evil_crate@0.1.0");
      const apiCrate = await r.get(CARGO, ["/api/v1/crates/serde/1.0.195/download"]);
      assert.equal(apiCrate.status, 200);

      // Metadata is no download: not looked up. Verdicts are cached: one lookup per PURL.
      const metadata = await r.get(NPM, ["/evil-pkg"]);
      assert.equal(metadata.status, 200);
      assert.deepEqual(api.hits, [
        "pkg:npm/evil-pkg@1.0.0",
        "pkg:npm/left-pad@1.3.0",
        "pkg:pypi/evil-wheel@2.0",
        "pkg:pypi/requests@2.31.0",
        "pkg:cargo/evil_crate@0.1.0",
        "pkg:cargo/serde@1.0.195",
      ]);
      const blocked = r.lines().filter((l) => l.security_block === true);
      assert.equal(blocked.length, 6);
      assert.equal(r.lines().filter((l) => l.policy === "allow").length, 4);
      assert.equal(r.proxy.proxy.counters.denied, 6);
      assert.deepEqual(schemaErrors(r.proxy.log), []);
    } finally {
      await r.close();
    }
  });
});

Deno.test("package check (audit): a flagged download goes through, logged with the same fields and audit", async () => {
  await withApi(async (api) => {
    const r = await rig([NPM], { packageCheckUrl: api.base, audit: true });
    try {
      const port = r.upstreams.get(NPM)!.port;
      const result = await r.get(NPM, ["/@evil/scoped/-/scoped-3.1.4.tgz"]);
      assert.equal(result.status, 200, result.stderr);
      assert.equal(result.body, "tarball of /@evil/scoped/-/scoped-3.1.4.tgz");
      assert.equal(r.served.length, 1);
      const line = r.lines()[0];
      assert.equal(line.policy, "deny");
      assert.equal(line.reason, "package flagged: malware, obfuscatedFile");
      assert.equal(line.security_block, true);
      assert.equal(line.purl, "pkg:npm/@evil/scoped@3.1.4");
      assert.deepEqual(line.reasons, ["malware", "obfuscatedFile"]);
      assert.equal(line.audit, true);
      assert.equal(line.rule, `${NPM}:${port}`);
      assert.ok(
        r.proxy.ops.lines.some((m) => m.includes("pkg:npm/@evil/scoped@3.1.4") && m.includes("audit mode")),
        r.proxy.ops.lines.join("\n"),
      );
      assert.deepEqual(schemaErrors(r.proxy.log), []);
    } finally {
      await r.close();
    }
  });
});

Deno.test("package check: the reputation API down, silent or rate limiting ⇒ allowed (fail open), logged", async () => {
  // A port nothing listens on: connection refused.
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const downUrl = `http://127.0.0.1:${(closed.addr as Deno.NetAddr).port}`;
  closed.close();
  const down = await rig([NPM], { packageCheckUrl: downUrl });
  try {
    const result = await down.get(NPM, ["/evil-pkg/-/evil-pkg-1.0.0.tgz"]);
    assert.equal(result.status, 200, result.stderr);
    assert.equal(down.lines()[0].policy, "allow");
    assert.equal(down.lines()[0].security_block, undefined);
    assert.ok(
      down.proxy.ops.lines.some((m) => /Cannot check package pkg:npm\/evil-pkg@1\.0\.0: .*fail open/.test(m)),
      down.proxy.ops.lines.join("\n"),
    );
  } finally {
    await down.close();
  }
  await withApi(async (api) => {
    const r = await rig([NPM], { packageCheckUrl: api.base });
    try {
      const started = Date.now();
      const slow = await r.get(NPM, ["/hangs/-/hangs-1.0.0.tgz"]);
      assert.equal(slow.status, 200, slow.stderr);
      assert.ok(Date.now() - started < 2500, "the lookup timeout bounds the wait");
      const limited = await r.get(NPM, ["/limited/-/limited-1.0.0.tgz"]);
      assert.equal(limited.status, 200);
      assert.ok(
        r.proxy.ops.lines.some((m) => m.includes("no answer within 500 ms")),
        r.proxy.ops.lines.join("\n"),
      );
      assert.ok(r.proxy.ops.lines.some((m) => m.includes("HTTP 429")), r.proxy.ops.lines.join("\n"));
      assert.deepEqual(r.served.map((s) => s.path), [
        "/hangs/-/hangs-1.0.0.tgz",
        "/limited/-/limited-1.0.0.tgz",
      ]);
    } finally {
      await r.close();
    }
  });
});

Deno.test("package check: off without --package-check (no lookup, the download passes)", async () => {
  await withApi(async (api) => {
    const r = await rig([NPM]);
    try {
      const result = await r.get(NPM, ["/evil-pkg/-/evil-pkg-1.0.0.tgz"]);
      assert.equal(result.status, 200);
      assert.equal(r.lines()[0].security_block, undefined);
      assert.deepEqual(api.hits, []);
    } finally {
      await r.close();
    }
  });
});

Deno.test("token tagging: the configured job token on api.github.com is tagged, never logged, still forwarded", async () => {
  const API = "api.github.com";
  const r = await rig([API, "uploads.github.com"], {
    env: () => ({ EGRESS_GITHUB_TOKEN: JOB_TOKEN }),
    policy: "", // set below, once the ports are known
  });
  try {
    const port = r.upstreams.get(API)!.port;
    const uploads = r.upstreams.get("uploads.github.com")!.port;
    r.proxy.setPolicy(`GET https://${API}:${port}/repos/*\nuploads.github.com:${uploads}`);
    const tagged = await r.get(API, ["/repos/o/r/contents/x"], ["-H", `Authorization: token ${JOB_TOKEN}`]);
    assert.equal(tagged.status, 200, tagged.stderr);
    const bearer = await r.get("uploads.github.com", ["/repos/o/r/releases/1/assets"], [
      "-H",
      `authorization: BEARER ${JOB_TOKEN}`,
    ]);
    assert.equal(bearer.status, 200);
    const other = await r.get(API, ["/repos/o/r/issues"], ["-H", "Authorization: token ghs_someoneElse"]);
    assert.equal(other.status, 200);
    const none = await r.get(API, ["/repos/o/r/pulls"]);
    assert.equal(none.status, 200);
    // A request the policy denies still says which token it carried (permissions needs it).
    const denied = await r.get(API, ["/user"], ["-H", `Authorization: token ${JOB_TOKEN}`]);
    assert.equal(denied.status, 403);

    const lines = r.lines();
    assert.equal(lines.length, 5);
    assert.deepEqual(lines.map((l) => l.github_token), [true, true, undefined, undefined, true]);
    assert.equal(lines[4].policy, "deny");
    const keys = Object.keys(lines[0]);
    assert.equal(keys.indexOf("github_token"), keys.indexOf("line") + 1, keys.join(","));
    assert.equal(r.served[0].authorization, `token ${JOB_TOKEN}`, "the header is forwarded unchanged");
    const raw = r.proxy.log.raw.join("\n") + r.proxy.ops.lines.join("\n");
    assert.ok(!raw.includes(JOB_TOKEN) && !raw.includes("someoneElse"), raw);
    assert.ok(!/authorization/i.test(raw));
    assert.deepEqual(schemaErrors(r.proxy.log), []);
  } finally {
    await r.close();
  }
});

Deno.test("token tagging: the OIDC token request (URL prefix with query, bearer only)", async () => {
  const r = await rig([OIDC_HOST], {
    env: (port) => ({
      ACTIONS_ID_TOKEN_REQUEST_URL: `https://${OIDC_HOST}:${port(OIDC_HOST)}/job/idtoken?api-version=2.0`,
      ACTIONS_ID_TOKEN_REQUEST_TOKEN: OIDC_TOKEN,
    }),
  });
  try {
    const ok = await r.get(OIDC_HOST, ["/job/idtoken?api-version=2.0&audience=sts"], [
      "-H",
      `Authorization: Bearer ${OIDC_TOKEN}`,
    ]);
    assert.equal(ok.status, 200, ok.stderr);
    const wrongScheme = await r.get(OIDC_HOST, ["/job/idtoken?api-version=2.0"], [
      "-H",
      `Authorization: token ${OIDC_TOKEN}`,
    ]);
    assert.equal(wrongScheme.status, 200);
    const elsewhere = await r.get(OIDC_HOST, ["/other?api-version=2.0"], [
      "-H",
      `Authorization: Bearer ${OIDC_TOKEN}`,
    ]);
    assert.equal(elsewhere.status, 200);
    assert.deepEqual(r.lines().map((l) => l.github_token), [true, undefined, undefined]);
    const raw = r.proxy.log.raw.join("\n");
    assert.ok(!raw.includes(OIDC_TOKEN), raw);
    assert.ok(!raw.includes("audience=sts"), "the query is scrubbed in the log");
  } finally {
    await r.close();
  }
});
