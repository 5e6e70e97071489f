import assert from "node:assert/strict";
import { DockerImageResolver } from "../../src/proc/docker.ts";
import { describeProcess, ProcessDescriber } from "../../src/proc/process_info.ts";
import { makeFakeProc } from "./fake_proc.ts";

const WORKER = "/opt/runner/Runner.Worker";
const RUNNER_CG = "/runner.service";
const ID = "ab".repeat(32);

function miniDocker(image: string) {
  const dir = Deno.makeTempDirSync({ prefix: "egress-docker-" });
  const path = `${dir}/d.sock`;
  const listener = Deno.listen({ transport: "unix", path });
  let requests = 0;
  const loop = (async () => {
    for await (const conn of listener) {
      requests++;
      const buffer = new Uint8Array(4096);
      await conn.read(buffer);
      const body = JSON.stringify({ Config: { Image: image } });
      await conn.write(
        new TextEncoder().encode(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`),
      );
      conn.close();
    }
  })().catch(() => undefined);
  return {
    path,
    requests: () => requests,
    close: async () => {
      listener.close();
      await loop;
      Deno.removeSync(dir, { recursive: true });
    },
  };
}

Deno.test("describeProcess combines /proc, trusted context and container image", async () => {
  const root = makeFakeProc([
    { pid: 10, ppid: 1, exe: WORKER, cgroup: RUNNER_CG, startTime: 1 },
    {
      pid: 20,
      ppid: 10,
      exe: "/usr/bin/node",
      cgroup: RUNNER_CG,
      startTime: 2,
      env: { GITHUB_ACTION: "s", GITHUB_ACTION_REPOSITORY: "o/a", SECRET: "x" },
      cmdline: ["node", "index.js"],
    },
    { pid: 30, ppid: 20, exe: "/usr/bin/curl", cgroup: RUNNER_CG, startTime: 3, cmdline: ["curl", "x"] },
    { pid: 40, ppid: 1, exe: "/usr/bin/python3", cgroup: `/system.slice/docker-${ID}.scope`, startTime: 4 },
  ]);
  const docker = miniDocker("python:3.12-slim");
  try {
    const describer = new ProcessDescriber({
      procRoot: root,
      docker: new DockerImageResolver({ socketPath: docker.path }),
      runner: { runnerCgroup: RUNNER_CG, runnerWorker: WORKER },
    });
    assert.deepEqual(await describer.describe(30), {
      pid: 30,
      exe: "/usr/bin/curl",
      cmdline: ["curl", "x"],
      cgroup: RUNNER_CG,
      step: "s",
      action: "o/a",
    });
    assert.deepEqual(await describer.describe(20), {
      pid: 20,
      exe: "/usr/bin/node",
      cmdline: ["node", "index.js"],
      cgroup: RUNNER_CG,
      step: "s",
      action: "o/a",
    });
    const container = {
      pid: 40,
      exe: "/usr/bin/python3",
      cmdline: ["/usr/bin/python3"],
      cgroup: `/system.slice/docker-${ID}.scope`,
      image: "python:3.12-slim",
    };
    assert.deepEqual(await describer.describe(40), container);
    assert.deepEqual(await describer.describe(40), container);
    assert.equal(docker.requests(), 1, "the image is cached per container id");
    assert.deepEqual(await describer.describe(77), { pid: 77 }, "unknown pid: only the pid");

    const notRunner = new ProcessDescriber({
      procRoot: root,
      docker: { socketPath: docker.path },
      runner: false,
    });
    assert.equal((await notRunner.describe(30)).step, undefined, "no trusted context outside runner mode");
  } finally {
    await docker.close();
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("describeProcess on a live process and on one that exited never throws", async () => {
  const child = new Deno.Command("/bin/sleep", { args: ["30"] }).spawn();
  const info = await describeProcess(child.pid);
  child.kill("SIGKILL");
  await child.status;
  assert.equal(info.pid, child.pid);
  assert.equal(info.exe, Deno.realPathSync("/bin/sleep"));
  assert.deepEqual(info.cmdline, ["/bin/sleep", "30"]);
  assert.equal(typeof info.cgroup, "string");
  assert.deepEqual(await describeProcess(child.pid), { pid: child.pid });
  assert.deepEqual(await describeProcess(0), { pid: 0 });
});
