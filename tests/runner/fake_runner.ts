// A simulated GitHub runner for tests: a fake Runner.Worker (a copy of /bin/sh at a test path)
// running in a test cgroup, under which step processes are started, so the real trusted-context
// code (src/proc/github_context.ts) sees the same process tree shape as on a hosted runner.
// Tests point egress at it with EGRESS_TEST_RUNNER_WORKER / EGRESS_TEST_RUNNER_CGROUP.

import { type CgroupPath, createCgroup, removeCgroup } from "../../src/kernel/cgroup.ts";
import type { RunnerConstants } from "../../src/proc/github_context.ts";

export const NOBODY = 65534;

export type StepOptions = {
  /** environment of the step's top process (the Runner.Worker child) */
  env?: Record<string, string>;
  /** run the step unprivileged (setpriv) */
  uid?: number;
  stdin?: "piped" | "null";
  /** run the Runner.Worker (and so the step) in this network namespace (path under /run/netns) */
  netns?: string;
};

export class FakeRunner {
  private constructor(
    readonly dir: string,
    readonly worker: string,
    readonly cgroup: CgroupPath,
  ) {}

  static async create(tag: string): Promise<FakeRunner> {
    const dir = await Deno.makeTempDir({ prefix: `egress-${tag}-runner-` });
    await Deno.chmod(dir, 0o755);
    const worker = `${dir}/Runner.Worker`;
    await Deno.copyFile("/bin/sh", worker);
    await Deno.chmod(worker, 0o755);
    const id = `${Deno.pid.toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
    const cgroup = createCgroup(`/egress-${tag}-${id}`);
    return new FakeRunner(dir, worker, cgroup);
  }

  get constants(): RunnerConstants {
    return { runnerCgroup: this.cgroup.hierarchyPath, runnerWorker: this.worker };
  }

  /** Environment entries that point egress at this fake runner. */
  get testEnv(): Record<string, string> {
    return { EGRESS_TEST_RUNNER_WORKER: this.worker, EGRESS_TEST_RUNNER_CGROUP: this.cgroup.hierarchyPath };
  }

  /**
   * Starts `argv` as a step: a shell joins the runner cgroup and execs Runner.Worker, which runs the
   * step as its child (`exit` after it keeps the shell from exec'ing the step in its place).
   */
  step(argv: string[], options: StepOptions = {}): Deno.ChildProcess {
    const envArgs = Object.entries(options.env ?? {}).map(([k, v]) => `${k}=${v}`);
    const privilege = options.uid === undefined
      ? []
      : ["setpriv", `--reuid=${options.uid}`, `--regid=${options.uid}`, "--clear-groups"];
    const stepArgv = [...privilege, "env", ...envArgs, ...argv];
    // The cgroup is joined before entering the namespace (nsenter keeps the cgroup2 tree visible).
    const enter = options.netns ? `nsenter --net=${options.netns} ` : "";
    const script = `echo $$ > "$1/cgroup.procs" && shift && exec ${enter}"$0" -c '"$@"; exit $?' worker "$@"`;
    return new Deno.Command("/bin/sh", {
      args: ["-c", script, this.worker, this.cgroup.fsPath, ...stepArgv],
      stdin: options.stdin ?? "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  }

  async remove(): Promise<void> {
    await removeCgroup(this.cgroup);
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}
