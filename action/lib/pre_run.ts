// The action's `pre` step (runner.md §2): check the runner, validate the policy (annotations that
// point at the policy line), install Deno, start the daemon as root in its own cgroup, wait for it
// to be ready, and export the CA variables. The daemon runs from a root-owned copy of Deno and
// its code (root_install.ts), never from the runner-writable checkout or tool cache.

import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, openSync, statSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { caEnvironment } from "../../src/runner/paths.ts";
import { annotation, emit, exportVariable, saveState, setSecret } from "./actions.ts";
import { type ActionPaths, actionPaths } from "./config.ts";
import { ensureDeno, pinnedVersion } from "./deno_install.ts";
import { checkRunner, type Inputs, readInputs } from "./inputs.ts";
import { validatePolicy } from "./policy_library.ts";
import { asRoot, readPrivileged, tail } from "./privileged.ts";
import {
  chainProblem,
  installCode,
  type InstalledCode,
  installedCode,
  installProblem,
  planInstall,
  seedEntries,
} from "./root_install.ts";

export const READY_POLL_MS = 100;
export const READY_TIMEOUT_MS = 30_000;
/** Variables handed to the daemon; nothing else of the runner's environment reaches it. */
export const DAEMON_VARIABLES = [
  "PATH",
  "GITHUB_REPOSITORY",
  "GITHUB_ACTION_REPOSITORY",
  "RUNNER_TEMP",
  "EGRESS_GITHUB_TOKEN",
  "ACTIONS_ID_TOKEN_REQUEST_URL",
  "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
  "ACTIONS_RUNTIME_TOKEN",
] as const;
const TEST_VARIABLES = [
  "EGRESS_TEST_ROOT",
  "EGRESS_TEST_RUNNER_WORKER",
  "EGRESS_TEST_RUNNER_CGROUP",
] as const;

export class StepFailure extends Error {
  constructor(message: string) {
    super(message);
    this.name = "StepFailure";
  }
}

/** Annotations for the policy's issues; returns whether the step must fail (enforce + errors). */
export function reportPolicy(
  inputs: Inputs,
  repository: string | undefined,
): { failed: boolean; rules: number } {
  const result = validatePolicy(inputs.policy, { runner: true, repository: repository || undefined });
  const title = "egress policy";
  for (const warning of result.warnings) {
    const where = warning.line > 0 ? `line ${warning.line}, column ${warning.column}: ` : "";
    emit(annotation("warning", `${where}${warning.message}`, { title }));
  }
  for (const error of result.errors) {
    emit(
      annotation(
        inputs.audit ? "warning" : "error",
        `line ${error.line}, column ${error.column}: ${error.message}`,
        { title },
      ),
    );
  }
  return { failed: !inputs.audit && result.errors.length > 0, rules: result.rules.length };
}

/** Shared libraries the daemon loads through FFI (Debian/Ubuntu package names). */
const LIBRARIES: Array<[string, string]> = [["libbpf.so.1", "libbpf1"], [
  "libnetfilter_queue.so.1",
  "libnetfilter-queue1",
]];

export function ensureLibraries(): string[] {
  let cache = "";
  try {
    cache = execFileSync("/sbin/ldconfig", ["-p"], { encoding: "utf8" });
  } catch {
    cache = "";
  }
  const missing = LIBRARIES.filter(([soname]) => !cache.includes(soname)).map(([, pkg]) => pkg);
  if (missing.length === 0) return [];
  const install = asRoot(["apt-get", "install", "-y", "--no-install-recommends", ...missing]);
  try {
    execFileSync(install[0], install.slice(1), {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
      timeout: 180_000,
    });
  } catch (error) {
    const stderr = (error as { stderr?: { toString(): string } }).stderr?.toString().trim();
    throw new StepFailure(`Cannot install ${missing.join(", ")}: ${stderr || (error as Error).message}`);
  }
  return missing;
}

/** The daemon's argv (before sudo/systemd-run) for these inputs. */
export function daemonArgs(
  code: Pick<InstalledCode, "deno" | "config" | "entry">,
  paths: ActionPaths,
  inputs: Inputs,
  env: NodeJS.ProcessEnv = process.env,
): string[] {
  return [
    code.deno,
    "run",
    "-A",
    "--no-prompt",
    "--config",
    code.config,
    env.EGRESS_TEST_ENTRY || code.entry,
    "start",
    "--runner",
    "--policy",
    "-",
    "--ready-file",
    paths.readyFile,
    "--control-socket",
    paths.controlSocket,
    "--state-dir",
    paths.stateDir,
    "--log",
    paths.logFile,
    ...(inputs.audit ? ["--audit"] : []),
    ...(inputs.allowSudo ? ["--allow-sudo"] : []),
    ...(inputs.socketSecurity ? ["--package-check"] : []),
    ...(inputs.containerCerts ? [] : ["--no-container-certs"]),
    // Tests only: attach the hooks to the simulated runner's cgroup, never the machine's root.
    ...(env.EGRESS_TEST_CGROUP ? ["--cgroup", env.EGRESS_TEST_CGROUP] : []),
  ];
}

/**
 * The full command: as root (sudo keeps only the listed variables, so no secret is on argv and
 * HOME is dropped), in `/system.slice/egress.scope` via systemd-run where systemd is PID 1.
 */
export function launchCommand(daemon: string[], env: Record<string, string>): string[] {
  const scoped = existsSync("/run/systemd/system")
    ? ["systemd-run", "--scope", "--unit=egress", "--collect", "--quiet", ...daemon]
    : daemon;
  return asRoot(["/usr/bin/env", "-u", "HOME", ...scoped], Object.keys(env));
}

/**
 * The daemon's PATH: system directories only. It runs iptables, visudo, sudo, systemd-run and (in
 * the runc wrapper) node as root by name, and the runner's own PATH starts with directories the
 * runner user can write (~/.local/bin, the tool cache): a `sudo` planted there would run as root.
 */
export const DAEMON_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** Exactly the variables the daemon gets (runner.md §2 step 4), the GitHub token under its own name. */
export function daemonEnvironment(
  env: NodeJS.ProcessEnv,
  inputs: Pick<Inputs, "githubToken">,
  denoDir: string,
): Record<string, string> {
  const out: Record<string, string> = {};
  const source: NodeJS.ProcessEnv = { ...env, PATH: DAEMON_PATH, EGRESS_GITHUB_TOKEN: inputs.githubToken };
  for (const name of [...DAEMON_VARIABLES, ...TEST_VARIABLES]) {
    const value = source[name];
    if (value) out[name] = value;
  }
  out.DENO_DIR = denoDir;
  out.DENO_NO_UPDATE_CHECK = "1";
  return out;
}

/**
 * The ready file exists and was written after `since`: a file left by an earlier run (the daemon
 * removes it only once it gets going) must not make pre report enforcing before it is. A second of
 * slack for the file system's coarse clock.
 */
export function isFreshFile(path: string, since: number): boolean {
  try {
    return statSync(path).mtimeMs >= since - 1000;
  } catch {
    return false;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Deno and the daemon's code in a root-owned directory (root_install.ts): reused when an earlier
 * job left it (checked: root-owned all the way up, nothing group/other-writable), else Deno from
 * the tool cache (installed there first when missing) and the checkout's files are copied in, the
 * module cache seeded from the runner's DENO_DIR (or the one beside Deno in the tool cache).
 */
export function installDaemonCode(paths: ActionPaths, env: NodeJS.ProcessEnv): InstalledCode {
  const lockDir = join(paths.actionRoot, "action", "deno");
  const version = pinnedVersion(lockDir);
  const plan = planInstall(paths.actionRoot, paths.system.libDir, version);
  const code = installedCode(plan.dir);
  if (existsSync(plan.dir)) {
    const problem = installProblem(plan);
    if (problem) throw new StepFailure(`Cannot use the daemon's code in ${plan.dir}: ${problem}`);
    emit(`egress: Deno ${version} and the daemon's code from ${plan.dir} (kept from an earlier job)`);
    return code;
  }
  const chain = chainProblem(paths.system.libDir);
  if (chain) throw new StepFailure(`Cannot install the daemon's code into ${paths.system.libDir}: ${chain}`);
  const deno = ensureDeno(lockDir, env);
  emit(`egress: Deno ${deno.version} ${deno.cached ? "from the cache" : "installed"} (${deno.path})`);
  const started = Date.now();
  try {
    installCode(plan, deno.path, seedEntries(paths.actionRoot, env.DENO_DIR || join(deno.dir, "deno-dir")));
  } catch (error) {
    throw new StepFailure((error as Error).message);
  }
  const problem = installProblem(plan);
  if (problem) throw new StepFailure(`Cannot use the daemon's code in ${plan.dir}: ${problem}`);
  emit(`egress: the daemon runs from ${plan.dir} (root-owned copy, ${Date.now() - started} ms)`);
  return code;
}

export type PreOptions = { env?: NodeJS.ProcessEnv; readyTimeoutMs?: number; now?: () => number };

export async function runPre(options: PreOptions = {}): Promise<void> {
  const env = options.env ?? process.env;
  const started = Date.now();
  const inputs = readInputs(env);
  checkRunner(env);
  const paths = actionPaths(env);
  const policy = reportPolicy(inputs, env.GITHUB_REPOSITORY);
  if (policy.failed) throw new StepFailure("The egress policy has errors (see the annotations above)");

  const code = installDaemonCode(paths, env);
  const installed = ensureLibraries();
  if (installed.length > 0) emit(`egress: installed ${installed.join(", ")}`);

  mkdirSync(paths.workDir, { recursive: true, mode: 0o700 });
  const daemonEnv = daemonEnvironment(env, inputs, code.denoDir);
  const argv = launchCommand(daemonArgs(code, paths, inputs, env), daemonEnv);
  const outputPath = join(paths.workDir, "daemon.out");
  const output = openSync(outputPath, "a", 0o600);
  const launched = Date.now();
  const child = spawn(argv[0], argv.slice(1), {
    cwd: code.app,
    detached: true,
    stdio: ["pipe", output, output],
    env: daemonEnv,
  });
  let exitCode: number | null | undefined;
  child.on("exit", (code, signal) => (exitCode = code ?? (signal ? 128 : 1)));
  child.on("error", () => (exitCode = 127));
  child.stdin!.end(inputs.policy);
  child.unref();
  saveState("started", "true", env);
  saveState("deno", code.deno, env);
  saveState("entry", code.entry, env);
  saveState("daemon_pid", String(child.pid ?? ""), env);
  saveState("audit", String(inputs.audit), env);

  const timeout = options.readyTimeoutMs ?? READY_TIMEOUT_MS;
  const deadline = Date.now() + timeout;
  while (!isFreshFile(paths.readyFile, launched)) {
    if (exitCode !== undefined || Date.now() > deadline) {
      const why = exitCode !== undefined
        ? `the daemon exited with code ${exitCode}`
        : `no ready file after ${timeout / 1000} s`;
      const details = [tail(outputPath), tail(paths.operationalLog)].filter(Boolean).join("\n");
      if (details) emit(`::group::egress daemon output\n${details}\n::endgroup::`);
      throw new StepFailure(`Cannot start egress: ${why}`);
    }
    await sleep(READY_POLL_MS);
  }

  // The token is root-only; read it now, while sudo still works, and hand it on only through state
  // (to main, which offers it as a step output for the sub-actions, and to post). Never to a file:
  // every step runs as the same user, so a runner-owned copy would be everyone's.
  const token = readPrivileged(join(paths.stateDir, "control-token"))?.trim();
  if (!token) throw new StepFailure(`Cannot read the control token from ${paths.stateDir}`);
  setSecret(token);
  saveState("control_token", token, env);

  for (const [name, value] of Object.entries(caEnvironment(paths.system))) exportVariable(name, value, env);
  saveState("ready_ms", String(Date.now() - started), env);
  emit(`egress: enforcing in ${Date.now() - started} ms${inputs.audit ? " (audit mode)" : ""}`);
}
