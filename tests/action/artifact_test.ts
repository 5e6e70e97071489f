// The log artifact: the zip writer, the runtime-token scope, the real uploader against a fake
// artifact service, and post's use of an injected uploader.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { actionsArtifactUploader, backendIds, crc32, storedZip } from "../../action/lib/artifact.ts";
import { readConnectionLog, runPost } from "../../action/lib/post_run.ts";
import { codeCell } from "../../src/runner/summary.ts";
import { commandExists, testWhen } from "../helpers/requirements.ts";
import { fakeRuntimeToken, startFakeResults, unzip } from "./fake_results.ts";

const noPython = commandExists("/usr/bin/python3") ? undefined : "needs /usr/bin/python3";

Deno.test("crc32 of known strings", () => {
  assert.equal(crc32(new TextEncoder().encode("")), 0);
  assert.equal(crc32(new TextEncoder().encode("123456789")), 0xcbf43926);
});

testWhen(noPython, "storedZip: python's zipfile reads it back", async () => {
  const zip = storedZip([
    { name: "connections.jsonl", data: new TextEncoder().encode('{"type":"dns"}\n') },
    { name: "b.txt", data: new Uint8Array() },
  ]);
  assert.deepEqual(await unzip(zip), { "connections.jsonl": '{"type":"dns"}\n', "b.txt": "" });
});

Deno.test("backendIds: from the Actions.Results scope; clear errors otherwise", () => {
  assert.deepEqual(backendIds(fakeRuntimeToken("r", "j")), {
    workflowRunBackendId: "r",
    workflowJobRunBackendId: "j",
  });
  assert.throws(() => backendIds("nope"), /not a JWT/);
  assert.throws(
    () => backendIds(`x.${btoa(JSON.stringify({ scp: "Actions.Other" }))}.y`),
    /no Actions.Results scope/,
  );
});

testWhen(
  noPython,
  "real uploader: CreateArtifact, blob PUT, FinalizeArtifact with size and sha256",
  async () => {
    const service = startFakeResults();
    const dir = await Deno.makeTempDir();
    try {
      await Deno.writeTextFile(`${dir}/connections.jsonl`, '{"type":"tcp","policy":"deny"}\n');
      const token = fakeRuntimeToken();
      const upload = actionsArtifactUploader({
        ACTIONS_RUNTIME_TOKEN: token,
        ACTIONS_RESULTS_URL: service.url,
      });
      const result = await upload({
        name: "egress-connections",
        files: [{ name: "connections.jsonl", path: `${dir}/connections.jsonl` }],
        retentionDays: 30,
      });
      assert.equal(result.id, "4242");
      assert.equal(service.received.auth, `Bearer ${token}`);
      const created = service.received.created!;
      assert.equal(created.name, "egress-connections");
      assert.equal(created.version, 4);
      assert.equal(created.workflowRunBackendId, "run-1");
      assert.equal(created.workflowJobRunBackendId, "job-2");
      const days = (Date.parse(String(created.expiresAt)) - Date.now()) / 86_400_000;
      assert.ok(days > 29.9 && days <= 30, `retention ${days} days`);
      const blob = service.received.blob!;
      assert.equal(service.received.finalized!.size, String(blob.length));
      assert.equal(
        service.received.finalized!.hash,
        `sha256:${createHash("sha256").update(blob).digest("hex")}`,
      );
      assert.deepEqual(await unzip(blob), { "connections.jsonl": '{"type":"tcp","policy":"deny"}\n' });
      await assert.rejects(
        actionsArtifactUploader({})({ name: "x", files: [], retentionDays: 1 }),
        /ACTIONS_RUNTIME_TOKEN or ACTIONS_RESULTS_URL is not set/,
      );
    } finally {
      await service.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test("post: uses the injected uploader per upload-log; failures are warnings; no daemon fails the step", async () => {
  const root = await Deno.makeTempDir({ prefix: "egress-post-" });
  try {
    await Deno.mkdir(`${root}/var/log/egress`, { recursive: true });
    await Deno.writeTextFile(
      `${root}/var/log/egress/connections.jsonl`,
      '{"ts":"2026-12-01T10:00:00.000Z","type":"http","dst_ip":"203.0.113.9","dst_port":80,"src_port":4000,"url":"http://x.test/a","method":"GET","policy":"deny","reason":"no rule matched","step":"__run_1"}\n',
    );
    await Deno.writeTextFile(`${root}/summary.md`, "");
    const base = {
      STATE_started: "true",
      EGRESS_TEST_ROOT: root,
      RUNNER_TEMP: `${root}/tmp`,
      GITHUB_STEP_SUMMARY: `${root}/summary.md`,
    };
    const uploads: unknown[] = [];
    const outcome = await runPost({
      env: { ...base, "INPUT_UPLOAD-LOG": "auto" },
      uploader: (request) => {
        uploads.push(request);
        return Promise.resolve({ size: 1 });
      },
      shutdownWaitMs: 100,
    });
    assert.deepEqual(uploads, [{
      name: "egress-connections",
      files: [{ name: "connections.jsonl", path: `${root}/tmp/egress/connections.jsonl` }],
      retentionDays: 30,
    }]);
    assert.equal(outcome.uploaded, true);
    assert.deepEqual(outcome.counts, { allowed: 0, denied: 1, errors: 0 });
    assert.ok(outcome.failures.some((f) => f.startsWith("egress was not running")));
    assert.ok(outcome.failures.includes("egress denied 1 connection (see the job summary)"));
    assert.ok(
      (await Deno.readTextFile(`${root}/summary.md`)).includes(
        `| ❌ denied | ${codeCell("http://x.test/a")} |`,
      ),
    );

    const none = await runPost({
      env: { ...base, "INPUT_UPLOAD-LOG": "false", "INPUT_FAIL-ON-DENY": "false" },
      uploader: () => Promise.reject(new Error("must not be called")),
      shutdownWaitMs: 100,
    });
    assert.equal(none.uploaded, false);
    assert.ok(!none.failures.some((f) => f.startsWith("egress denied")), "fail-on-deny false");
    const failing = await runPost({
      env: { ...base, "INPUT_UPLOAD-LOG": "true" },
      uploader: () => Promise.reject(new Error("service down")),
      shutdownWaitMs: 100,
    });
    assert.equal(failing.uploaded, false, "a failed upload is a warning, not a failure");
    assert.ok(!failing.failures.some((f) => f.includes("service down")));

    const notStarted = await runPost({
      env: { ...base, STATE_started: "" },
      uploader: () => Promise.reject(new Error("must not be called")),
    });
    assert.deepEqual(notStarted.failures, [], "pre failed and said why; post adds nothing");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("post: a log larger than the summary limit is summarised from its start and every denial counted", async () => {
  const root = await Deno.makeTempDir({ prefix: "egress-post-big-" });
  try {
    await Deno.mkdir(`${root}/var/log/egress`, { recursive: true });
    const line = (i: number, policy: string) =>
      JSON.stringify({
        ts: "2026-12-01T10:00:00.000Z",
        type: "http",
        dst_ip: "203.0.113.9",
        dst_port: 80,
        src_port: 4000 + i,
        url: `http://h${i}.test/é`,
        method: "GET",
        policy,
        step: "__run_1",
      }) + "\n";
    const lines = [
      ...Array.from({ length: 40 }, (_, i) => line(i, "allow")),
      ...Array.from({ length: 3 }, (_, i) => line(100 + i, "deny")),
      "not json\n",
      line(200, "allow").replace('"step"', '"error":"upstream_unreachable","step"'),
    ];
    const logPath = `${root}/var/log/egress/connections.jsonl`;
    await Deno.writeTextFile(logPath, lines.join(""));
    const limit = new TextEncoder().encode(lines.slice(0, 10).join("")).length + 5; // inside line 11

    const read = readConnectionLog(logPath, limit);
    assert.equal(read.text, lines.slice(0, 10).join(""), "whole lines only");
    assert.deepEqual(read.rest, { lines: 35, denied: 3, errors: 1 });
    assert.equal(readConnectionLog(logPath).rest, undefined, "under the limit: read whole");

    await Deno.writeTextFile(`${root}/summary.md`, "");
    const uploads: string[] = [];
    const outcome = await runPost({
      env: {
        STATE_started: "true",
        EGRESS_TEST_ROOT: root,
        RUNNER_TEMP: `${root}/tmp`,
        GITHUB_STEP_SUMMARY: `${root}/summary.md`,
        "INPUT_UPLOAD-LOG": "auto",
      },
      uploader: async (request) => {
        uploads.push(await Deno.readTextFile(request.files[0].path));
        return { size: 1 };
      },
      shutdownWaitMs: 100,
      summaryLogBytes: limit,
    });
    assert.deepEqual(outcome.counts, { allowed: 10, denied: 3, errors: 1 });
    assert.ok(outcome.failures.includes("egress denied 3 connections (see the job summary)"));
    assert.deepEqual(uploads, [lines.join("")], "auto uploads (denials past the limit), the whole log");
    assert.match(
      await Deno.readTextFile(`${root}/summary.md`),
      /after that come 35 more lines, 3 of them denied \(the artifact has them all\)/,
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
