// A simulated hosted runner for the action tests and the action benchmark: a temporary root with
// the system files the daemon changes, GitHub's command files, a tool cache, and the environment
// a JS action step gets. Not a test file itself.
import { type SystemPaths, systemPaths } from "../../src/runner/paths.ts";
import type { FakeRunner } from "../runner/fake_runner.ts";

const repo = new URL("../../", import.meta.url).pathname;

export const SUDOERS = "runner ALL=(ALL) NOPASSWD:ALL\n";
export const BUNDLE = "-----BEGIN CERTIFICATE-----\nMIIBdistro\n-----END CERTIFICATE-----\n";
export const RUNC = "#!/bin/sh\nexit 0\n";
export const ACTION = "owner/egress";

export type SimulatedRunner = {
  root: string;
  paths: SystemPaths;
  files: { env: string; state: string; output: string; summary: string };
  env: Record<string, string>;
  remove(): Promise<void>;
};

/** GITHUB_ENV / GITHUB_STATE files: `NAME<<DELIM`, value lines, `DELIM`. */
export function parseFileCommands(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const match = /^([^<=]+)<<(.+)$/.exec(lines[i]);
    if (!match) continue;
    const value: string[] = [];
    for (i++; i < lines.length && lines[i] !== match[2]; i++) value.push(lines[i]);
    out[match[1]] = value.join("\n");
  }
  return out;
}

export async function denoDir(): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json"],
    stdout: "piped",
    env: { DENO_NO_UPDATE_CHECK: "1" },
  }).output();
  return JSON.parse(new TextDecoder().decode(out.stdout)).denoDir;
}

/** A tool cache that already holds the pinned Deno (this very binary): the warm path of pre. */
export async function warmToolCache(dir: string): Promise<void> {
  const lock = JSON.parse(await Deno.readTextFile(`${repo}action/deno/package-lock.json`));
  const version = lock.packages["node_modules/deno"].version;
  const arch = Deno.build.arch === "x86_64" ? "x64" : "arm64";
  const install = `${dir}/egress-deno/${version}/${arch}`;
  await Deno.mkdir(`${install}/node_modules/@deno/linux-${arch}-glibc`, { recursive: true });
  await Deno.symlink(Deno.execPath(), `${install}/node_modules/@deno/linux-${arch}-glibc/deno`);
  await Deno.writeTextFile(`${install}/.complete`, version);
}

/**
 * Creates the root. `warm`: Deno already in the tool cache and the daemon's modules in the
 * machine's DENO_DIR; cold: both empty, as on a fresh runner.
 */
export async function createSimulatedRunner(
  runner: FakeRunner,
  node: string,
  options: { warm: boolean; inputs?: Record<string, string> },
): Promise<SimulatedRunner> {
  const root = await Deno.makeTempDir({ prefix: "egress-action-root-" });
  const paths = systemPaths(root);
  await Deno.chmod(root, 0o755);
  for (
    const dir of [
      "etc/sudoers.d",
      "etc/ssl/certs",
      "usr/bin",
      "proc/sys/kernel",
      "proc/sys/user",
      "run",
      "var/log/egress",
      "tmp",
      "cache",
      "github",
    ]
  ) {
    await Deno.mkdir(`${root}/${dir}`, { recursive: true, mode: 0o755 });
  }
  await Deno.writeTextFile(paths.sudoersRunner, SUDOERS, { mode: 0o440 });
  await Deno.writeTextFile(paths.systemCaBundle, BUNDLE);
  await Deno.writeTextFile(paths.runc, RUNC, { mode: 0o755 });
  await Deno.writeTextFile(paths.usernsClone, "1\n");
  await Deno.writeTextFile(paths.maxUserNamespaces, "63413\n");
  if (options.warm) await warmToolCache(`${root}/cache`);
  const files = {
    env: `${root}/github/env`,
    state: `${root}/github/state`,
    output: `${root}/github/output`,
    summary: `${root}/github/summary.md`,
  };
  for (const file of Object.values(files)) await Deno.writeTextFile(file, "");
  const env: Record<string, string> = {
    PATH: `${node.slice(0, node.lastIndexOf("/"))}:/usr/sbin:/usr/bin:/sbin:/bin`,
    HOME: `${root}/tmp`,
    RUNNER_OS: "Linux",
    RUNNER_ARCH: "X64",
    RUNNER_ENVIRONMENT: "github-hosted",
    ImageOS: "ubuntu24",
    RUNNER_TEMP: `${root}/tmp`,
    RUNNER_TOOL_CACHE: `${root}/cache`,
    ...(options.warm ? { DENO_DIR: await denoDir() } : {}),
    GITHUB_REPOSITORY: "owner/repo",
    GITHUB_ACTION: "__owner_egress",
    GITHUB_ACTION_REPOSITORY: ACTION,
    GITHUB_ENV: files.env,
    GITHUB_STATE: files.state,
    GITHUB_OUTPUT: files.output,
    GITHUB_STEP_SUMMARY: files.summary,
    INPUT_POLICY: "allowed.egress.test\n",
    INPUT_AUDIT: "false",
    "INPUT_UPLOAD-LOG": "auto",
    "INPUT_FAIL-ON-DENY": "true",
    "INPUT_CONTAINER-CERTS": "true",
    "INPUT_GITHUB-TOKEN": "ghs_" + "x".repeat(36),
    EGRESS_TEST_ROOT: root,
    EGRESS_TEST_CGROUP: runner.cgroup.hierarchyPath,
    ...runner.testEnv,
    ...options.inputs,
  };
  return { root, paths, files, env, remove: () => Deno.remove(root, { recursive: true }) };
}

/** What a runner's `_actions/<owner>/egress/<ref>` holds that pre, main and post use. */
const CHECKOUT = ["action.yml", "action", "deno.json", "deno.lock", "mod.ts", "src", "ffi"];

/**
 * A copy of this checkout at `dest`, owned by `uid` (the runner user: it can change every file),
 * as the runner's action download is. Returns `dest`.
 */
export async function copyCheckout(dest: string, uid: number): Promise<string> {
  await Deno.mkdir(`${dest}/bpf`, { recursive: true });
  for (
    const args of [
      ["cp", "-R", ...CHECKOUT.map((path) => `${repo}${path}`), dest],
      ["cp", "-R", `${repo}bpf/dist`, `${dest}/bpf/`],
      ["chown", "-R", `${uid}:${uid}`, dest],
    ]
  ) {
    const out = await new Deno.Command(args[0], { args: args.slice(1), stderr: "piped" }).output();
    if (!out.success) throw new Error(`${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
  return dest;
}

export async function output(
  child: Deno.ChildProcess,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await child.output();
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}
