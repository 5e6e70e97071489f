// What the proxy attaches to a connection about its process: one /proc snapshot per connection,
// the trusted GitHub context from the ancestry, and the container image for Docker cgroups.
// Never throws: whatever cannot be read is simply absent.

import { DockerImageResolver, type DockerOptions } from "./docker.ts";
import { type RunnerConstants, runnerConstants, trustedContextOf } from "./github_context.ts";
import type { ProcessFields } from "./process_fields.ts";
import { ProcReader } from "./process.ts";

/** What describe() found out about a process: always the pid, the rest when known. */
export type ProcessInfo = ProcessFields;

export type DescriberOptions = {
  procRoot?: string;
  docker?: DockerImageResolver | DockerOptions;
  /** Trusted context constants; `false` disables step/action (not on a runner). */
  runner?: RunnerConstants | false;
};

const CONTEXT_KEYS = ["GITHUB_ACTION", "GITHUB_ACTION_REPOSITORY"];

export class ProcessDescriber {
  readonly proc: ProcReader;
  readonly docker: DockerImageResolver;
  readonly #runner: RunnerConstants | false;

  constructor(options: DescriberOptions = {}) {
    this.proc = new ProcReader(options.procRoot);
    this.docker = options.docker instanceof DockerImageResolver
      ? options.docker
      : new DockerImageResolver(options.docker);
    this.#runner = options.runner === undefined ? runnerConstants() : options.runner;
  }

  async describe(pid: number): Promise<ProcessInfo> {
    const info: ProcessInfo = { pid };
    try {
      // The environment is read only when the process could get a context (runner cgroup), and
      // only the two context keys: other variables (secrets) are never read into memory.
      const runner = this.#runner;
      const snapshot = this.proc.read(
        pid,
        runner ? { envKeys: CONTEXT_KEYS, envOnlyInCgroup: runner.runnerCgroup } : {},
      );
      if (!snapshot) return info;
      if (snapshot.exe !== undefined) info.exe = snapshot.exe;
      if (snapshot.cmdline !== undefined) info.cmdline = snapshot.cmdline;
      if (snapshot.cgroup !== undefined) info.cgroup = snapshot.cgroup;
      if (runner && snapshot.cgroup === runner.runnerCgroup) {
        const context = trustedContextOf(this.proc, snapshot, runner);
        if (context.step !== undefined) info.step = context.step;
        if (context.action !== undefined) info.action = context.action;
      }
      const image = await this.docker.imageForCgroup(snapshot.cgroup);
      if (image !== undefined) info.image = image;
    } catch {
      // Defensive: a reader bug must not take a connection down; the process stays unknown.
    }
    return info;
  }
}

let shared: ProcessDescriber | undefined;

/** describe() on a shared default describer (/proc, /var/run/docker.sock, runner constants from env). */
export function describeProcess(pid: number): Promise<ProcessInfo> {
  shared ??= new ProcessDescriber();
  return shared.describe(pid);
}
