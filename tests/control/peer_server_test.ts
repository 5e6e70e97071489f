// Control socket with SO_PEERCRED authentication (src/control/peer_server.ts): root and non-root
// callers, callers inside and outside a (fake) runner's trusted ancestry, a wrong action
// repository, missing and wrong tokens, and silent clients that must not block anyone else.

import assert from "node:assert/strict";
import {
  type AuthenticationPolicy,
  authorize,
  generateControlToken,
  PeerControlServer,
  type PeerCredentials,
} from "../../src/control/peer_server.ts";
import { trustedContext } from "../../src/proc/github_context.ts";
import { ProcReader } from "../../src/proc/process.ts";
import { hasCgroup2 } from "../helpers/netns.ts";
import { commandExists, isRoot, testWhen, unmet } from "../helpers/requirements.ts";
import { FakeRunner, NOBODY } from "../runner/fake_runner.ts";

const CLIENT = new URL("./peer_client.py", import.meta.url).pathname;
const ACTION = "owner/egress";

const unmetHere = unmet([
  [Deno.build.os === "linux", "needs Linux"],
  [isRoot(), "needs root (setpriv, cgroups)"],
  [hasCgroup2(), "needs a cgroup2 mount"],
  [commandExists("/usr/bin/python3"), "needs /usr/bin/python3"],
  [commandExists("/usr/bin/setpriv"), "needs /usr/bin/setpriv"],
]);

async function withServer(
  policy: Omit<AuthenticationPolicy, "contextOf"> & { contextOf?: AuthenticationPolicy["contextOf"] },
  fn: (
    path: string,
    seen: Array<{ command: string; args: string[]; peer: PeerCredentials }>,
    logs: string[],
  ) => Promise<void>,
  requestTimeoutMs = 600,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "egress-peer-" });
  await Deno.chmod(dir, 0o755);
  const seen: Array<{ command: string; args: string[]; peer: PeerCredentials }> = [];
  const logs: string[] = [];
  const server = await PeerControlServer.listen({
    path: `${dir}/control.sock`,
    mode: 0o666,
    requestTimeoutMs,
    authentication: { contextOf: () => ({}), ...policy },
    log: (level, message) => logs.push(`${level} ${message}`),
    handler: (command, args, peer) => {
      seen.push({ command, args, peer });
      if (command === "status") return { reply: 'ok: {"state":"running"}' };
      if (command === "shutdown") return { reply: "ok: shutting down" };
      return { reply: "error: unknown command" };
    },
  });
  try {
    await fn(server.path, seen, logs);
  } finally {
    await server.close();
    await server.remove();
    await Deno.remove(dir, { recursive: true });
  }
}

async function ask(path: string, request: string, uid?: number): Promise<string> {
  const argv = uid === undefined ? ["/usr/bin/python3", CLIENT, path, request] : [
    "setpriv",
    `--reuid=${uid}`,
    `--regid=${uid}`,
    "--clear-groups",
    "/usr/bin/python3",
    CLIENT,
    path,
    request,
  ];
  const out = await new Deno.Command(argv[0], { args: argv.slice(1), stdout: "piped", stderr: "piped" })
    .output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return new TextDecoder().decode(out.stdout);
}

async function stepOutput(child: Deno.ChildProcess): Promise<string> {
  const out = await child.output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return new TextDecoder().decode(out.stdout);
}

Deno.test("authorize: status is open, root passes, others need runner mode, action and token", () => {
  const token = "t0k3n";
  const policy = (action?: string): AuthenticationPolicy => ({
    runner: true,
    actionRepository: ACTION,
    token,
    contextOf: () => (action ? { step: "__egress", action } : {}),
  });
  const user: PeerCredentials = { pid: 42, uid: 1001, gid: 1001 };
  assert.deepEqual(authorize("status", [], user, policy()), { ok: true, args: [], via: "open command" });
  assert.deepEqual(authorize("shutdown", [token], { ...user, uid: 0 }, policy()), {
    ok: true,
    args: [],
    via: "root",
  });
  assert.deepEqual(authorize("shutdown", [token], user, { ...policy(ACTION), runner: false }), {
    ok: false,
    reason: "uid 1001 is not root",
  });
  assert.deepEqual(authorize("shutdown", [token], user, policy()), {
    ok: false,
    reason: "pid 42 has no trusted action context",
  });
  assert.deepEqual(authorize("shutdown", [token], user, policy("fork/other")), {
    ok: false,
    reason: "action fork/other is not owner/egress",
  });
  assert.deepEqual(authorize("shutdown", [], user, policy(ACTION)), {
    ok: false,
    reason: "missing control token",
  });
  assert.deepEqual(authorize("shutdown", ["t0k3m"], user, policy(ACTION)), {
    ok: false,
    reason: "wrong control token",
  });
  assert.deepEqual(authorize("shutdown", ["t0k3n0"], user, policy(ACTION)), {
    ok: false,
    reason: "wrong control token",
  });
  assert.deepEqual(authorize("disable-sudo", [token], user, policy(ACTION)), {
    ok: true,
    args: [],
    via: "action owner/egress",
  });
  const noRepository = { ...policy(ACTION), actionRepository: undefined };
  assert.equal(authorize("shutdown", [token], user, noRepository).ok, false);
});

Deno.test("generateControlToken: 48 hex digits, different each time", () => {
  const a = generateControlToken();
  assert.match(a, /^[0-9a-f]{48}$/);
  assert.notEqual(a, generateControlToken());
});

testWhen(
  unmetHere,
  "peer server: credentials of root and non-root callers; unprivileged callers refused outside runner mode",
  async () => {
    await withServer({ runner: false }, async (path, seen, logs) => {
      assert.equal(await ask(path, "status"), 'ok: {"state":"running"}\n');
      assert.equal(seen[0].peer.uid, 0);
      assert.ok(seen[0].peer.pid > 1);
      assert.equal(await ask(path, "status", NOBODY), 'ok: {"state":"running"}\n');
      assert.equal(seen[1].peer.uid, NOBODY);
      assert.equal(seen[1].peer.gid, NOBODY);
      assert.equal(await ask(path, "shutdown", NOBODY), `error: unauthorized (uid ${NOBODY} is not root)\n`);
      assert.equal(seen.length, 2, "the refused command never reached the handler");
      assert.equal(await ask(path, "shutdown"), "ok: shutting down\n");
      assert.equal(await ask(path, "frobnicate"), "error: unknown command\n");
      assert.ok(
        logs.some((line) => line.startsWith("warn ") && line.includes('refused "shutdown"')),
        logs.join("\n"),
      );
      assert.ok(logs.some((line) => line.includes(`"shutdown" from pid`) && line.includes("(root)")));
    });
  },
);

testWhen(unmetHere, "peer server: runner mode accepts only the trusted action with the token", async () => {
  const runner = await FakeRunner.create("peer");
  const token = generateControlToken();
  const proc = new ProcReader();
  try {
    await withServer({
      runner: true,
      actionRepository: ACTION,
      token,
      contextOf: (pid) => trustedContext(pid, proc, runner.constants),
    }, async (path, seen) => {
      const asStep = (request: string, env: Record<string, string>) =>
        stepOutput(runner.step(["/usr/bin/python3", CLIENT, path, request], { uid: NOBODY, env }));
      const ours = { GITHUB_ACTION: "__owner_egress", GITHUB_ACTION_REPOSITORY: ACTION };

      assert.equal(await asStep(`shutdown ${token}`, ours), "ok: shutting down\n");
      assert.deepEqual(seen.at(-1)?.args, [], "the token is not passed to the handler");
      assert.equal(seen.at(-1)?.peer.uid, NOBODY);
      assert.equal(await asStep("shutdown", ours), "error: unauthorized (missing control token)\n");
      assert.equal(
        await asStep(`shutdown ${token.slice(1)}x`, ours),
        "error: unauthorized (wrong control token)\n",
      );
      assert.equal(
        await asStep(`shutdown ${token}`, {
          GITHUB_ACTION: "__fork_egress",
          GITHUB_ACTION_REPOSITORY: "fork/egress",
        }),
        "error: unauthorized (action fork/egress is not owner/egress)\n",
      );
      // A run: step has a step name but no action repository.
      assert.match(
        await asStep(`shutdown ${token}`, { GITHUB_ACTION: "__run_2" }),
        /no trusted action context/,
      );
      // Outside the ancestry, a forged environment is worth nothing.
      const forged = await new Deno.Command("setpriv", {
        args: [
          `--reuid=${NOBODY}`,
          `--regid=${NOBODY}`,
          "--clear-groups",
          "env",
          `GITHUB_ACTION_REPOSITORY=${ACTION}`,
          "/usr/bin/python3",
          CLIENT,
          path,
          `shutdown ${token}`,
        ],
        stdout: "piped",
      }).output();
      assert.match(
        new TextDecoder().decode(forged.stdout),
        /^error: unauthorized \(pid \d+ has no trusted action context\)\n$/,
      );
      // A grandchild of the step top process inherits the forged-proof context of its step.
      const nested = await stepOutput(
        runner.step(["sh", "-c", `/usr/bin/python3 ${CLIENT} ${path} "disable-sudo ${token}"; exit $?`], {
          uid: NOBODY,
          env: ours,
        }),
      );
      assert.equal(nested, "error: unknown command\n", "authorized, then the handler answered");
      assert.equal(seen.at(-1)?.command, "disable-sudo");
    });
  } finally {
    await runner.remove();
  }
});

testWhen(
  unmetHere,
  "peer server: a silent client is dropped after the timeout without blocking others",
  async () => {
    await withServer({ runner: false }, async (path, _seen, logs) => {
      const started = Date.now();
      const silent = new Deno.Command("/usr/bin/python3", {
        args: [CLIENT, path, "--silent"],
        stdout: "piped",
      }).spawn();
      const silent2 = new Deno.Command("/usr/bin/python3", {
        args: [CLIENT, path, "--silent"],
        stdout: "piped",
      }).spawn();
      await new Promise((resolve) => setTimeout(resolve, 150));
      assert.equal(await ask(path, "status"), 'ok: {"state":"running"}\n');
      const answered = Date.now() - started;
      assert.ok(answered < 550, `status answered after ${answered} ms, behind the silent clients`);
      const [one, two] = await Promise.all([silent.output(), silent2.output()]);
      const elapsed = Date.now() - started;
      assert.equal(new TextDecoder().decode(one.stdout), "error: request timed out\n");
      assert.equal(new TextDecoder().decode(two.stdout), "error: request timed out\n");
      assert.ok(elapsed >= 600 && elapsed < 3000, `silent clients dropped after ${elapsed} ms`);
      assert.ok(logs.some((line) => line.includes("no request within 600 ms")));
    }, 600);
  },
);

testWhen(
  unmetHere,
  "peer server: over-long and non-UTF-8 requests are refused; socket mode and close",
  async () => {
    await withServer({ runner: false }, async (path) => {
      assert.equal((await Deno.stat(path)).mode! & 0o777, 0o666);
      assert.equal(await ask(path, "x".repeat(300)), "error: request too long\n");
      assert.equal(await ask(path, `status ${"y".repeat(240)}`), 'ok: {"state":"running"}\n');
    });
  },
);

testWhen(
  unmetHere,
  "peer server: a flood of silent clients cannot lock others out (the longest waiting is dropped)",
  async () => {
    await withServer({ runner: false }, async (path, _seen, logs) => {
      const silent: Deno.UnixConn[] = [];
      try {
        while (silent.length < 80) {
          try {
            silent.push(await Deno.connect({ transport: "unix", path }));
          } catch (error) {
            // the listen backlog is full until the server's next accept round
            if (!(error instanceof Deno.errors.WouldBlock)) throw error;
            await new Promise((resolve) => setTimeout(resolve, 10));
          }
        }
        await new Promise((resolve) => setTimeout(resolve, 200));
        const started = Date.now();
        assert.equal(await ask(path, "status"), 'ok: {"state":"running"}\n');
        assert.ok(Date.now() - started < 2000, "answered long before the silent clients time out");
        assert.ok(logs.some((line) => line.includes("too many clients, dropped the longest waiting")));
        const first = new Uint8Array(64);
        const n = await silent[0].read(first);
        assert.equal(new TextDecoder().decode(first.subarray(0, n ?? 0)), "error: busy\n");
      } finally {
        for (const conn of silent) conn.close();
      }
    }, 30_000);
  },
);
