import assert from "node:assert/strict";
import {
  CONNECTION_LOG_KEYS,
  ConnectionLog,
  type ConnectionLogEvent,
  formatConnectionLine,
} from "../../src/log/connection_log.ts";
import { createScrubber } from "../../src/log/scrub.ts";

const TS = new Date("2026-02-18T10:30:45.123Z");

Deno.test("formatConnectionLine: events.md §3 key order whatever the input order", () => {
  // Keys given in reverse order must come out in spec order.
  const full: ConnectionLogEvent = {
    action: "actions/checkout",
    step: "__actions_checkout",
    image: "node:20",
    cgroup: "/system.slice/x.scope",
    cmdline: ["curl", "https://example.com"],
    exe: "/usr/bin/curl",
    pid: 4242,
    github_token: true,
    reasons: ["malware"],
    purl: "pkg:npm/evil@1.0.0",
    security_block: true,
    error: "upstream_unreachable",
    insecure: true,
    passthrough: true,
    audit: true,
    reason: "package flagged: malware",
    line: 3,
    rule: "registry.npmjs.org",
    policy: "deny",
    method: "GET",
    url: "https://registry.npmjs.org/evil?x=1",
    host: "registry.npmjs.org",
    src_port: 40001,
    dst_port: 443,
    dst_ip: "104.16.0.1",
    type: "https",
    ts: TS,
  };
  const line = formatConnectionLine(full);
  const keys = Object.keys(JSON.parse(line));
  const expected = CONNECTION_LOG_KEYS.filter((k) => keys.includes(k));
  assert.deepEqual(keys, expected);
  assert.ok(
    line.startsWith(
      '{"ts":"2026-02-18T10:30:45.123Z","type":"https","dst_ip":"104.16.0.1","dst_port":443,"src_port":40001,"host":"registry.npmjs.org","url":"https://registry.npmjs.org/evil?x=***","method":"GET"',
    ),
    line,
  );
  assert.ok(!line.includes("\n"));
  assert.equal(CONNECTION_LOG_KEYS.length, 32);
  assert.deepEqual(CONNECTION_LOG_KEYS.slice(0, 6), ["ts", "type", "dst_ip", "dst_port", "src_port", "host"]);
  assert.deepEqual(CONNECTION_LOG_KEYS.slice(-2), ["step", "action"]);
});

Deno.test("formatConnectionLine: absent, empty and false fields are omitted; host null only on TLS error lines", () => {
  const line = JSON.parse(formatConnectionLine({
    ts: TS,
    type: "tcp",
    dst_ip: "10.0.0.1",
    dst_port: 5432,
    src_port: 50000,
    host: null,
    policy: "allow",
    audit: false,
    exe: "",
    cmdline: [],
    pid: 0,
    rule: "",
  }));
  assert.deepEqual(line, {
    ts: "2026-02-18T10:30:45.123Z",
    type: "tcp",
    dst_ip: "10.0.0.1",
    dst_port: 5432,
    src_port: 50000,
    policy: "allow",
  });
  const tlsError = JSON.parse(formatConnectionLine({
    ts: TS,
    type: "https",
    dst_ip: "1.2.3.4",
    dst_port: 443,
    src_port: 1,
    host: null,
    policy: "allow",
    error: "tls_client_rejected_ca",
  }));
  assert.equal(tlsError.host, null);
  assert.ok("host" in tlsError);
  const noErrorNoSni = JSON.parse(
    formatConnectionLine({ ts: TS, type: "https", policy: "deny", reason: "x" }),
  );
  assert.equal("host" in noErrorNoSni, false);
  // A request line with an upstream error is not a TLS-stage line: no host at all.
  const requestError = JSON.parse(formatConnectionLine({
    ts: TS,
    type: "https",
    dst_ip: "1.2.3.4",
    dst_port: 443,
    src_port: 1,
    url: "https://a.example/x",
    method: "GET",
    policy: "allow",
    error: "upstream_tls_failed",
  }));
  assert.equal("host" in requestError, false);
  // Unknown destination defaults.
  assert.equal(noErrorNoSni.dst_ip, "unknown");
  assert.equal(noErrorNoSni.dst_port, 0);
  assert.equal(noErrorNoSni.src_port, 0);
  // Invalid numbers: ports become 0, ttl/line/pid are dropped.
  const odd = JSON.parse(formatConnectionLine({
    ts: TS,
    type: "dns_response",
    dst_port: 70000,
    src_port: -1,
    name: "x",
    answers: [],
    ttl: -5,
    pid: 1.5,
    policy: "allow",
    dst_ip: "not-an-ip",
  }));
  assert.equal(odd.dst_port, 0);
  assert.equal(odd.src_port, 0);
  assert.equal("ttl" in odd, false);
  assert.equal("pid" in odd, false);
  assert.equal(odd.dst_ip, "unknown");
  // sudo lines carry no destination or verdict.
  const sudo = JSON.parse(
    formatConnectionLine({
      ts: TS,
      type: "sudo",
      cmdline: ["apt-get", "install"],
      policy: "allow",
      pwd: "/w",
      target_user: "root",
    }),
  );
  assert.deepEqual(Object.keys(sudo), ["ts", "type", "pwd", "target_user", "cmdline"]);
  // dns "no question" line keeps an empty name.
  assert.equal(
    JSON.parse(formatConnectionLine({ ts: TS, type: "dns", name: "", policy: "deny", reason: "no question" }))
      .name,
    "",
  );
});

Deno.test("formatConnectionLine: timestamps and scrubbing of every string", () => {
  assert.match(
    JSON.parse(formatConnectionLine({ type: "udp", policy: "allow" })).ts,
    /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/,
  );
  assert.equal(
    JSON.parse(formatConnectionLine({ ts: 0, type: "udp", policy: "allow" })).ts,
    "1970-01-01T00:00:00.000Z",
  );
  assert.equal(
    JSON.parse(formatConnectionLine({ ts: "2026-01-01T00:00:00.000Z", type: "udp", policy: "allow" })).ts,
    "2026-01-01T00:00:00.000Z",
  );
  const fixed = () => new Date("2030-05-05T05:05:05.555Z");
  assert.equal(
    JSON.parse(formatConnectionLine({ ts: "yesterday", type: "udp", policy: "allow" }, undefined, fixed)).ts,
    "2030-05-05T05:05:05.555Z",
  );
  assert.equal(
    JSON.parse(formatConnectionLine({ ts: new Date(NaN), type: "udp", policy: "allow" }, undefined, fixed))
      .ts,
    "2030-05-05T05:05:05.555Z",
  );

  const token = "ghs_" + "x".repeat(36);
  const scrubber = createScrubber({ secrets: ["runtime-secret-1"] });
  const line = formatConnectionLine({
    ts: TS,
    type: "http",
    dst_ip: "1.1.1.1",
    dst_port: 80,
    src_port: 2,
    url: `http://user:pw@example.com/p/${token}/runtime-secret-1?token=abc`,
    method: "GET",
    policy: "allow",
    cmdline: ["curl", "-H", "Authorization: Bearer runtime-secret-1", `--data=${token}`],
    exe: "/tmp/runtime-secret-1/curl",
  }, scrubber);
  assert.ok(
    !line.includes(token) && !line.includes("runtime-secret-1") && !line.includes("pw@") &&
      !line.includes("abc"),
    line,
  );
  const parsed = JSON.parse(line);
  assert.equal(parsed.url, "http://example.com/p/***/***?token=***");
  assert.deepEqual(parsed.cmdline, ["curl", "-H", "Authorization: Bearer ***", "--data=***"]);
  assert.equal(parsed.exe, "/tmp/***/curl");
  // A url the writer cannot scrub as a URL is not written at all.
  assert.equal(
    "url" in
      JSON.parse(
        formatConnectionLine({ ts: TS, type: "http", url: "ftp://x", method: "GET", policy: "allow" }),
      ),
    false,
  );
  // Strings with quotes, newlines and non-ASCII stay one valid JSON line.
  const weird = formatConnectionLine({ ts: TS, type: "dns", name: 'a"b\nc\u2028é', policy: "allow" });
  assert.ok(!weird.includes("\n"));
  assert.equal(JSON.parse(weird).name, 'a"b\nc\u2028é');
});

async function withTempDir(fn: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "egress-log-test-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("writer: appends whole lines in order, creates dir and file 0644, reopens in append mode", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/sub/connections.jsonl`;
    const log = await ConnectionLog.open({ path });
    const n = 2000;
    for (let i = 0; i < n; i++) {
      assert.equal(
        log.write({
          ts: TS,
          type: "udp",
          dst_ip: "10.0.0.1",
          dst_port: i % 65536,
          src_port: 1,
          policy: "allow",
        }),
        true,
      );
    }
    await log.flush();
    assert.equal(log.written, n);
    await log.close();
    await log.close(); // idempotent
    assert.equal(log.write({ type: "udp", policy: "allow" }), false, "closed log drops");
    assert.equal(log.dropped, 1);
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o644);
    assert.equal((await Deno.stat(`${dir}/sub`)).mode! & 0o777, 0o755);

    const again = await ConnectionLog.open({ path });
    again.write({ ts: TS, type: "tcp", policy: "deny", reason: "no rule matched" });
    await again.close();
    const lines = (await Deno.readTextFile(path)).split("\n");
    assert.equal(lines.pop(), "", "file ends with a newline");
    assert.equal(lines.length, n + 1);
    lines.slice(0, n).forEach((l, i) => assert.equal(JSON.parse(l).dst_port, i));
    assert.equal(JSON.parse(lines[n]).type, "tcp");
  });
});

Deno.test("writer: writes never wait; a full queue drops lines, counts them and reports once drained", async () => {
  await withTempDir(async (dir) => {
    const reports: Array<[number, number]> = [];
    const log = await ConnectionLog.open({
      path: `${dir}/c.jsonl`,
      maxQueuedLines: 10,
      onDropped: (count, total) => reports.push([count, total]),
    });
    const started = performance.now();
    let accepted = 0;
    for (let i = 0; i < 1000; i++) {
      if (log.write({ ts: TS, type: "udp", policy: "allow", src_port: i })) accepted++;
    }
    const elapsed = performance.now() - started;
    assert.ok(elapsed < 500, `1000 write() calls took ${elapsed} ms`);
    assert.equal(accepted, 10, "synchronous burst: only the queue's capacity is accepted");
    assert.equal(log.dropped, 990);
    await log.flush();
    assert.deepEqual(reports, [[990, 990]]);
    // After draining, writes are accepted again.
    assert.equal(log.write({ ts: TS, type: "udp", policy: "allow" }), true);
    await log.close();
    const text = await Deno.readTextFile(`${dir}/c.jsonl`);
    assert.equal(text.trim().split("\n").length, 11);
  });
});

Deno.test("writer: drops are reported to the operational log when no callback is given", async () => {
  await withTempDir(async (dir) => {
    const warnings: string[] = [];
    const reporter = {
      warn: (m: string) => warnings.push(m),
      error: (m: string) => warnings.push(`ERROR ${m}`),
    };
    const log = await ConnectionLog.open({ path: `${dir}/c.jsonl`, maxQueuedLines: 2, reporter });
    for (let i = 0; i < 5; i++) log.write({ ts: TS, type: "udp", policy: "allow" });
    await log.flush();
    assert.deepEqual(warnings, ["connection log: dropped 3 lines (3 since start)"]);
    for (let i = 0; i < 4; i++) log.write({ ts: TS, type: "udp", policy: "allow" });
    await log.close();
    assert.deepEqual(warnings.slice(1), ["connection log: dropped 2 lines (5 since start)"]);
  });
});

Deno.test("writer: concurrent writers produce intact, non-interleaved lines", async () => {
  await withTempDir(async (dir) => {
    const log = await ConnectionLog.open({ path: `${dir}/c.jsonl` });
    const long = "x".repeat(3000);
    await Promise.all(Array.from({ length: 8 }, async (_, w) => {
      for (let i = 0; i < 100; i++) {
        log.write({ ts: TS, type: "dns", name: `${w}-${i}-${long}`, policy: "allow" });
        if (i % 10 === 0) await new Promise((r) => setTimeout(r, 0));
      }
    }));
    await log.close();
    const lines = (await Deno.readTextFile(`${dir}/c.jsonl`)).trim().split("\n");
    assert.equal(lines.length, 800);
    const seen = new Set(lines.map((l) => JSON.parse(l).name.split("-").slice(0, 2).join("-")));
    assert.equal(seen.size, 800);
  });
});

Deno.test("writer: rotates connections.jsonl to .1 at the size cap, keeping whole lines", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/connections.jsonl`;
    const log = await ConnectionLog.open({ path, maxFileBytes: 4096 });
    const lineOf = (i: number) =>
      formatConnectionLine({ ts: TS, type: "udp", policy: "allow", src_port: i }) + "\n";
    for (let i = 0; i < 200; i++) {
      log.write({ ts: TS, type: "udp", policy: "allow", src_port: i });
      if (i % 20 === 19) await log.flush(); // several batches, so rotation happens between them
    }
    await log.close();
    const current = await Deno.readTextFile(path);
    const rotated = await Deno.readTextFile(`${path}.1`);
    assert.ok(current.length <= 4096 && current.length > 0, `current ${current.length}`);
    assert.ok(rotated.length <= 4096, `rotated ${rotated.length}`);
    for (const text of [current, rotated]) {
      for (const l of text.trim().split("\n")) JSON.parse(l);
    }
    // The newest lines are in the current file, the ones before them in .1, contiguous.
    const ports = [...rotated.trim().split("\n"), ...current.trim().split("\n")].map((l) =>
      JSON.parse(l).src_port
    );
    assert.equal(ports[ports.length - 1], 199);
    for (let i = 1; i < ports.length; i++) assert.equal(ports[i], ports[i - 1] + 1);
    assert.equal(
      current.split("\n")[0] + "\n",
      lineOf(ports[ports.length - current.trim().split("\n").length]),
    );
  });
});

Deno.test("writer: a failed open names the path", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/file`, "");
    await assert.rejects(
      () => ConnectionLog.open({ path: `${dir}/file/x.jsonl` }),
      /^Error: Cannot open connection log .*\/file\/x\.jsonl: /,
    );
  });
});
