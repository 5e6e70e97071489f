// The single-process egress daemon: the composition root of `egress start` (runner.md §3).
// Startup: policy (before touching anything) → own cgroup → leftovers of an earlier run → CA →
// BPF attach to --cgroup → proxy, DNS proxy, NFQUEUE consumer listening → steering + UDP conntrack
// flush → control socket → ready file. Shutdown (signal, `shutdown`, or a failed startup) runs
// the teardown by phase: stop accepting, flush the log, remove steering, detach BPF, delete the CA
// key, remove the socket, leave the cgroup — every step logged, none skipped by another's failure.

import { type Attribution, Attribution as KernelAttribution } from "../kernel/attribution.ts";
import { attributionMapPin, loadEgressBpf } from "../kernel/bpf_loader.ts";
import { cgroup2Mount } from "../kernel/cgroup.ts";
import { closeConntrack, queryOriginalByReply } from "../kernel/conntrack.ts";
import { ConnectionLog } from "../log/connection_log.ts";
import { OperationalLog } from "../log/operational_log.ts";
import { PolicyError } from "../policy/mod.ts";
import { describeProcess } from "../proc/process_info.ts";
import { EgressCertificates } from "../proxy/certificates.ts";
import { sendControlCommand } from "../control/client.ts";
import { generateControlToken, PeerControlServer, writeControlToken } from "../control/peer_server.ts";
import { errorLine, okLine, type StatusReply } from "../control/protocol.ts";
import {
  runnerSelfCheck,
  type SelfCheckResult,
  type TrustedContext,
  trustedContext,
} from "../proc/github_context.ts";
import { cgroupOfProcess } from "../kernel/cgroup.ts";
import {
  applyRunnerHardening,
  realRunnerEnvironment,
  removeRunnerLeftovers,
  type RunnerEnvironment,
  type SudoControl,
} from "./runner_mode.ts";
import { type DaemonConfig, instanceName } from "./config.ts";
import { createConnectionResolver } from "./attribution_wiring.ts";
import { enterOwnCgroup, leaveOwnCgroup, removeStaleOwnCgroups } from "./own_cgroup.ts";
import {
  type Counters,
  type DaemonParts,
  loadRealParts,
  type PartContext,
  PartMissing,
  type RunningPart,
} from "./parts.ts";
import { formatIssue, parseDaemonPolicy, PolicyState } from "./policy_state.ts";
import { elapsed, PHASE, Teardown } from "./teardown.ts";
import { WORKER_SPEC_FILE, type WorkerSpec } from "./worker.ts";
import { spawnWorker, type WorkerProcess } from "./worker_process.ts";
import { Supervisor } from "../runner/supervisor.ts";
import { bpfObjPin } from "../../ffi/libc.ts";

/** Kernel-facing operations, injectable so the order and cleanup can be tested without root. */
export interface DaemonSystem {
  enterOwnCgroup(): { path: string; leave(): Promise<void> };
  removeStaleOwnCgroups(): string[];
  /** Pinned links of an earlier run of this instance (replaced once the new hooks attach). */
  countLeftoverPins(instance: string): number;
  loadBpf(options: {
    instance: string;
    cgroup?: string;
    /** only root may bind these while the deny hooks are attached (and pinned, after a crash) */
    proxyPort?: number;
    dnsPort?: number;
    log: (level: string, message: string) => void;
  }): {
    attribution?: Attribution;
    /** fd of the egress_conns map, pinned for the worker process */
    connsFd?: number;
    programNames(): string[];
    close(): void;
  };
  resolver(
    attribution: Attribution | undefined,
    onError: (message: string) => void,
  ): PartContext["resolveConnection"];
  closeConntrack(): void;
}

export const realSystem: DaemonSystem = {
  enterOwnCgroup() {
    const mount = cgroup2Mount();
    const own = enterOwnCgroup(mount);
    return { path: own.cgroup.hierarchyPath, leave: () => leaveOwnCgroup(own, mount) };
  },
  removeStaleOwnCgroups: () => removeStaleOwnCgroups(cgroup2Mount()),
  countLeftoverPins(instance) {
    try {
      return [...Deno.readDirSync(`/sys/fs/bpf/egress-${instance}`)].length;
    } catch {
      return 0;
    }
  },
  loadBpf(options) {
    const bpf = loadEgressBpf({
      instance: options.instance,
      cgroup: options.cgroup,
      proxyPort: options.proxyPort,
      dnsPort: options.dnsPort,
      log: (level, message) => options.log(level, message),
    });
    return {
      attribution: new KernelAttribution(bpf),
      connsFd: bpf.conns?.fd,
      programNames: () => bpf.programNames(),
      close: () => bpf.close(),
    };
  },
  resolver: (attribution, onError) =>
    createConnectionResolver({
      originalByReply: (reply) => queryOriginalByReply(reply),
      attribution,
      describe: describeProcess,
      onError,
    }),
  closeConntrack,
};

export type DaemonDeps = {
  parts?: DaemonParts;
  system?: DaemonSystem;
  /** Install SIGINT/SIGTERM/SIGHUP listeners (default true). */
  signals?: boolean;
  /** Operational log (default: file beside the connection log, and stderr). */
  oplog?: OperationalLog;
  /** Called once the daemon is ready; gets a stop function (tests). */
  onReady?: (stop: () => void) => void;
  /** Runner mode pieces (tests: a temporary root, fake sudo tools, a fake runner tree). */
  runner?: Partial<RunnerEnvironment> & {
    selfCheck?: () => SelfCheckResult;
    contextOf?: (pid: number) => TrustedContext;
    /** egress's own GITHUB_ACTION_REPOSITORY (default: from the environment at start) */
    actionRepository?: string;
  };
};

/** Where `systemd-run --scope --unit=egress` puts the daemon on a hosted runner. */
export const RUNNER_EGRESS_SCOPE = "/system.slice/egress.scope";

/** A control answer: the reply line, and what to do once it has been sent. */
type ControlAnswer = { reply: string; afterReply?: () => void };

/** Thrown by a step: startup stops, what was set up is removed, exit 1. */
class StartupFailed extends Error {}

function socketExists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

async function removeFile(path: string): Promise<boolean> {
  try {
    await Deno.remove(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/** Reads the policy text for reload: the --policy file, or the state-dir copy for stdin. */
async function readPolicyForReload(config: DaemonConfig): Promise<string> {
  if (config.policyPath === undefined) return "";
  const path = config.policyPath === "-" ? `${config.stateDir}/policy.txt` : config.policyPath;
  return await Deno.readTextFile(path);
}

/**
 * Runs the daemon until it is stopped. Returns the exit code: 0 stopped cleanly, 1 startup failed,
 * invalid policy or a cleanup step failed.
 */
export async function runDaemon(
  config: DaemonConfig,
  policyText: string,
  upstreamCaPems: string[],
  deps: DaemonDeps = {},
): Promise<number> {
  const system = deps.system ?? realSystem;
  const startedAt = performance.now();
  const mode = config.audit ? "audit" : "enforce";

  // 1. The policy, before anything on the machine is touched.
  const early = deps.oplog ?? new OperationalLog({ stderr: true });
  let parsed;
  try {
    parsed = parseDaemonPolicy(policyText, {
      audit: config.audit,
      repository: config.repository,
      runner: config.runner,
    });
  } catch (error) {
    if (error instanceof PolicyError) {
      for (const issue of error.issues) early.error(`policy: ${formatIssue(issue)}`);
      early.error(`Cannot start egress: the policy has ${error.issues.length} error(s) (enforce mode)`);
      return 1;
    }
    throw error;
  }
  if (config.repository === undefined && /\{(owner|repo)\}/.test(policyText)) {
    early.warn("policy: {owner}/{repo} placeholders without --repo or $GITHUB_REPOSITORY: using owner/repo");
  }
  for (const issue of parsed.skipped) early.warn(`policy: ${formatIssue(issue)} (line skipped, audit mode)`);
  for (const issue of parsed.warnings) early.warn(`policy: warning: ${formatIssue(issue)}`);

  // Every piece must be in this build before anything is set up.
  let parts: DaemonParts;
  try {
    parts = deps.parts ?? await loadRealParts();
  } catch (error) {
    if (error instanceof PartMissing) {
      early.error(error.message);
      return 1;
    }
    throw error;
  }

  // Runner mode: egress must run below Runner.Worker, or the trusted context means nothing.
  const runnerEnv: RunnerEnvironment | undefined = config.runner
    ? { ...realRunnerEnvironment(), ...deps.runner }
    : undefined;
  const actionRepository = deps.runner?.actionRepository ?? Deno.env.get("GITHUB_ACTION_REPOSITORY") ??
    undefined;
  if (config.runner) {
    const check = (deps.runner?.selfCheck ?? (() => runnerSelfCheck()))();
    if (!check.ok) {
      early.error(check.error);
      return 1;
    }
    early.info(`runner self-check: Runner.Worker is ancestor pid ${check.workerPid}`);
  }

  // A daemon still answering on the socket owns this setup: never tear down its rules.
  if (socketExists(config.controlSocket)) {
    const answered = await sendControlCommand(config.controlSocket, "status", 1000).then(
      () => true,
      () => false,
    );
    if (answered) {
      early.error(`Cannot start egress: another egress daemon answers on ${config.controlSocket}`);
      return 1;
    }
  }

  let oplog: OperationalLog;
  try {
    oplog = deps.oplog ?? new OperationalLog({ path: config.operationalLogPath });
  } catch (error) {
    early.error(`Cannot start egress: ${(error as Error).message}`);
    return 1;
  }
  if (oplog !== early) early.close();
  const policy = new PolicyState(parsed.policy, config.audit);
  const builtins = parsed.policy.rules.filter((rule) => rule.line === 0).length;
  oplog.info(`policy loaded: ${parsed.policy.rules.length} rules (${builtins} built-in), ${mode}`);

  const teardown = new Teardown();
  const running: RunningPart[] = [];
  let stopReason: string | undefined;
  let wake: () => void = () => {};
  const stopped = new Promise<void>((resolve) => (wake = resolve));
  const requestStop = (reason: string) => {
    if (stopReason !== undefined) return;
    stopReason = reason;
    oplog.info(`stopping: ${reason}`);
    wake();
  };

  let reloading = false;
  const reload = async (): Promise<ControlAnswer> => {
    if (reloading) return { reply: errorLine("a reload is already in progress") };
    reloading = true;
    try {
      const text = await readPolicyForReload(config);
      const next = parseDaemonPolicy(text, {
        audit: config.audit,
        repository: config.repository,
        runner: config.runner,
      });
      for (const issue of next.skipped) {
        oplog.warn(`reload: policy: ${formatIssue(issue)} (line skipped, audit mode)`);
      }
      policy.swap(next.policy);
      if (config.policyPath !== undefined && config.policyPath !== "-") {
        await Deno.writeTextFile(`${config.stateDir}/policy.txt`, text, { mode: 0o600 });
      }
      if (worker && supervisor?.state === "running") {
        const reply = await worker.request("reload", 10_000);
        if (!reply.startsWith("reply ok:")) {
          throw new Error(`the worker refused the reload: ${reply.slice(6)}`);
        }
      }
      try {
        await parts.steering.revokeFastPath();
      } catch (error) {
        oplog.error(`reload: Cannot revoke the UDP fast path: ${(error as Error).message}`);
      }
      oplog.info(`policy reloaded: ${next.policy.rules.length} rules, ${mode}`);
      return { reply: okLine(`reloaded ${next.policy.rules.length} rules`) };
    } catch (error) {
      const message = error instanceof PolicyError
        ? error.issues.map(formatIssue).join("; ")
        : (error as Error).message;
      oplog.error(`reload refused, the old policy stays: ${message}`);
      return { reply: errorLine(`policy not reloaded: ${message}`.slice(0, 1000)) };
    } finally {
      reloading = false;
    }
  };

  const counters = (): Counters => {
    const sum: Counters = { allowed: 0, denied: 0, dns: 0, errors: 0 };
    for (const part of running) {
      const c = part.counters?.() ?? {};
      sum.allowed += c.allowed ?? 0;
      sum.denied += c.denied ?? 0;
      sum.dns += c.dns ?? 0;
      sum.errors += c.errors ?? 0;
    }
    return sum;
  };
  // Real runs: proxy, DNS proxy and NFQUEUE consumer live in a supervised worker process.
  const useWorker = deps.parts === undefined;
  let supervisor: Supervisor | undefined;
  let worker: WorkerProcess | undefined;
  let lastWorkerCounters: Counters = { allowed: 0, denied: 0, dns: 0, errors: 0 };
  const status = async (): Promise<StatusReply> => {
    if (!supervisor) {
      return {
        mode,
        state: running.every((part) => part.healthy?.() ?? true) ? "running" : "degraded",
        rules: policy.policy.rules.length,
        restarts: 0,
        counters: counters(),
      };
    }
    let healthy = supervisor.state !== "degraded";
    if (supervisor.state === "running" && worker) {
      try {
        const reply = await worker.request("counters", 2000);
        if (reply.startsWith("counters ")) {
          const body = JSON.parse(reply.slice("counters ".length));
          healthy = healthy && body.healthy !== false;
          lastWorkerCounters = {
            allowed: body.allowed,
            denied: body.denied,
            dns: body.dns,
            errors: body.errors,
          };
        }
      } catch {
        // keep the last counters; the supervisor notices a dead worker by itself
      }
    }
    return {
      mode,
      state: healthy ? "running" : "degraded",
      rules: policy.policy.rules.length,
      restarts: supervisor.restarts,
      counters: lastWorkerCounters,
    };
  };

  const signalHandlers: Array<[Deno.Signal, () => void]> = [];
  if (deps.signals ?? true) {
    signalHandlers.push(["SIGINT", () => requestStop("SIGINT")]);
    signalHandlers.push(["SIGTERM", () => requestStop("SIGTERM")]);
    signalHandlers.push(["SIGHUP", () => {
      oplog.info("SIGHUP: reloading the policy");
      reload().catch(() => {});
    }]);
    for (const [signal, handler] of signalHandlers) Deno.addSignalListener(signal, handler);
  }

  const step = async <T>(name: string, run: () => Promise<T> | T): Promise<T> => {
    if (stopReason !== undefined) throw new StartupFailed(`startup interrupted (${stopReason})`);
    const started = performance.now();
    try {
      const result = await run();
      oplog.info(`startup: ${name}: done in ${elapsed(started)}`);
      return result;
    } catch (error) {
      throw new StartupFailed(`Cannot ${name}: ${(error as Error).message}`);
    }
  };

  let exitCode = 0;
  try {
    const own = await step("move into egress's own cgroup", () => {
      if (config.runner && deps.system === undefined && cgroupOfProcess() === RUNNER_EGRESS_SCOPE) {
        oplog.info(`own cgroup: ${RUNNER_EGRESS_SCOPE} (systemd-run scope)`);
        return { path: RUNNER_EGRESS_SCOPE, leave: async () => {} };
      }
      const own = system.enterOwnCgroup();
      teardown.add(PHASE.ownCgroup, `leave and remove cgroup ${own.path}`, () => own.leave());
      oplog.info(`own cgroup: ${own.path}`);
      return own;
    });

    const instance = instanceName(config.stateDir);
    let connsPin: string | undefined;
    await step("remove leftovers of an earlier run", async () => {
      for (const path of system.removeStaleOwnCgroups()) oplog.info(`leftover: removed empty cgroup ${path}`);
      const chains = await parts.steering.removeLeftovers((message) => oplog.info(`leftover: ${message}`));
      if (chains > 0) oplog.info(`leftover: removed ${chains} steering chains of an earlier run`);
      if (await removeFile(config.controlSocket)) {
        oplog.info(`leftover: removed stale socket ${config.controlSocket}`);
      }
      if (config.readyFile && await removeFile(config.readyFile)) {
        oplog.info(`leftover: removed stale ready file ${config.readyFile}`);
      }
      if (runnerEnv) await removeRunnerLeftovers(runnerEnv, oplog);
      const pins = system.countLeftoverPins(instance);
      if (pins > 0) {
        oplog.info(
          `leftover: ${pins} pinned BPF links of egress-${instance}: replaced once the new hooks attach`,
        );
      }
    });

    const certificates = await step("load or create the CA", async () => {
      await Deno.mkdir(config.stateDir, { recursive: true, mode: 0o700 });
      await Deno.chmod(config.stateDir, 0o700);
      const certificates = await EgressCertificates.loadOrCreate(config.stateDir);
      teardown.add(PHASE.caKey, "delete the CA key", () => certificates.deleteCaKey());
      await Deno.writeTextFile(`${config.stateDir}/policy.txt`, policyText, { mode: 0o600 });
      oplog.info(`CA ${certificates.createdCa ? "created" : "reused"}: ${certificates.caCertPath}`);
      return certificates;
    });

    const bpf = await step(`load BPF and attach to cgroup ${config.cgroup ?? "/"}`, () => {
      const bpf = system.loadBpf({
        instance,
        cgroup: config.cgroup,
        proxyPort: config.proxyPort,
        dnsPort: config.dnsPort,
        log: (level, message) =>
          oplog.log(
            level === "error" ? "ERROR" : level === "warn" ? "WARN" : level === "info" ? "INFO" : "DEBUG",
            message,
          ),
      });
      teardown.add(PHASE.bpf, "close the conntrack socket", () => system.closeConntrack());
      teardown.add(PHASE.bpf, "detach BPF programs and remove their pins", () => bpf.close());
      oplog.info(`BPF programs attached: ${bpf.programNames().join(", ")}`);
      if (useWorker && bpf.connsFd !== undefined) {
        // The worker reads attribution from the same map through this pin.
        const pin = attributionMapPin(instance);
        try {
          Deno.removeSync(pin);
        } catch {
          // no stale pin
        }
        bpfObjPin(bpf.connsFd, pin);
        connsPin = pin;
        teardown.add(PHASE.bpf, `remove the map pin ${pin}`, () => Deno.remove(pin).catch(() => {}));
      }
      return bpf;
    });

    const connectionLog = await step(`open the connection log ${config.logPath}`, async () => {
      const log = await ConnectionLog.open({
        path: config.logPath,
        // With a worker process, the worker rotates; two rotating writers would race.
        maxFileBytes: useWorker ? 0 : config.logMaxBytes,
        reporter: { warn: (m) => oplog.warn(m), error: (m) => oplog.error(m) },
      });
      teardown.add(PHASE.connectionLog, "flush and close the connection log", () => log.close());
      return log;
    });

    const context: PartContext = {
      config,
      policy,
      connectionLog,
      oplog,
      certificates,
      upstreamCaPems,
      attribution: bpf.attribution,
      resolveConnection: system.resolver(bpf.attribution, (message) => oplog.warn(message)),
      shared: new Map(),
    };
    const listen = async (name: string, start: (context: PartContext) => Promise<RunningPart>) => {
      await step(`start the ${name}`, async () => {
        const part = await start(context);
        running.push(part);
        teardown.add(PHASE.listeners, `stop the ${name}`, () => part.close());
      });
    };
    if (useWorker) {
      await step("start the worker (proxy, DNS proxy, NFQUEUE consumer)", async () => {
        const spec: WorkerSpec = { config, upstreamCaPems, connsPin };
        const specPath = `${config.stateDir}/${WORKER_SPEC_FILE}`;
        await Deno.writeTextFile(specPath, JSON.stringify(spec), { mode: 0o600 });
        teardown.add(PHASE.caKey, `remove ${specPath}`, () => removeFile(specPath).then(() => {}));
        supervisor = new Supervisor({
          spawn: () => {
            worker = spawnWorker(specPath);
            oplog.info(`worker started: pid ${worker.pid}`);
            return worker;
          },
          log: (level, message) =>
            oplog.log(level === "error" ? "ERROR" : level === "warn" ? "WARN" : "INFO", message),
        });
        const started = supervisor;
        teardown.add(PHASE.listeners, "stop the worker", () => started.stop());
        await started.start();
      });
    } else {
      // DNS first: the proxy hands DNS-over-TCP on other ports to it.
      await listen(`DNS proxy on port ${config.dnsPort}`, parts.startDns);
      await listen(`transparent proxy on port ${config.proxyPort}`, parts.startProxy);
      await listen(`NFQUEUE consumer on queue ${config.queueNum}`, parts.startUdp);
    }

    await step("install packet steering", async () => {
      // Registered first: a half-applied install is removed as well.
      teardown.add(
        PHASE.steering,
        "remove packet steering",
        () => parts.steering.remove((message) => oplog.info(`steering: ${message}`)),
      );
      await parts.steering.install(
        {
          proxyPort: config.proxyPort,
          dnsPort: config.dnsPort,
          queueNum: config.queueNum,
          exemptCgroupPath: own.path,
        },
        (message) => oplog.info(`steering: ${message}`),
      );
    });
    await step("flush UDP conntrack entries", () => parts.steering.flushUdpConntrack());

    let sudo: SudoControl | undefined;
    if (runnerEnv) {
      sudo = await step(
        "harden the runner (sudo, user namespaces, CA trust, runc wrapper)",
        () =>
          applyRunnerHardening({
            config,
            env: runnerEnv,
            caPem: certificates.caCertPem,
            teardown,
            oplog,
            connectionLog,
          }),
      );
    }
    const sudoCommand = async (action: "disable" | "enable"): Promise<ControlAnswer> => {
      if (!sudo) return { reply: errorLine("sudo control needs --runner") };
      try {
        return { reply: okLine(await sudo[action]()) };
      } catch (error) {
        oplog.error(`${action}-sudo: ${(error as Error).message}`);
        return { reply: errorLine((error as Error).message) };
      }
    };

    await step(`open the control socket ${config.controlSocket}`, async () => {
      let token: string | undefined;
      if (config.runner) {
        // Root-only; `pre` reads it through sudo and hands it on only through the action's state.
        token = generateControlToken();
        const tokenPath = `${config.stateDir}/control-token`;
        await writeControlToken(tokenPath, token);
        teardown.add(
          PHASE.controlFile,
          "remove the control token",
          () => removeFile(tokenPath).then(() => {}),
        );
      }
      const contextOf = deps.runner?.contextOf ?? ((pid: number) => trustedContext(pid));
      const server = await PeerControlServer.listen({
        path: config.controlSocket,
        // Runner mode: anyone may connect; peer credentials, trusted context and token decide.
        mode: config.runner ? 0o666 : 0o600,
        authentication: { runner: config.runner, actionRepository, token, contextOf },
        log: (level, message) =>
          oplog.log(level === "error" ? "ERROR" : level === "warn" ? "WARN" : "INFO", message),
        handler: (command) => {
          switch (command) {
            case "status":
              return status().then((body) => ({ reply: okLine(JSON.stringify(body)) }));
            case "shutdown":
              return { reply: okLine("shutting down"), afterReply: () => requestStop("control shutdown") };
            case "reload":
              return reload();
            case "disable-sudo":
              return sudoCommand("disable");
            case "enable-sudo":
              return sudoCommand("enable");
            default:
              return { reply: errorLine("unknown command") };
          }
        },
      });
      teardown.add(PHASE.controlAccept, "stop accepting control connections", () => server.close());
      teardown.add(
        PHASE.controlFile,
        `remove the control socket ${config.controlSocket}`,
        () => server.remove(),
      );
    });

    if (config.readyFile) {
      const readyFile = config.readyFile;
      await step(`create the ready file ${readyFile}`, async () => {
        teardown.add(PHASE.readyFile, `remove the ready file ${readyFile}`, async () => {
          await removeFile(readyFile);
        });
        await Deno.writeTextFile(readyFile, `${Deno.pid}\n`);
      });
    }
    oplog.info(
      `egress running (${mode}, ${policy.policy.rules.length} rules): interception active after ${
        elapsed(startedAt)
      }`,
    );
    deps.onReady?.(() => requestStop("stop requested"));
    await stopped;
  } catch (error) {
    if (error instanceof StartupFailed) {
      if (stopReason === undefined) {
        oplog.error(`startup failed: ${error.message}`);
        exitCode = 1;
      } else {
        oplog.info(error.message);
      }
    } else {
      oplog.error(`internal error: ${(error as Error).message}`);
      exitCode = 1;
    }
  }

  const cleanupStarted = performance.now();
  const clean = await teardown.run(oplog);
  if (!clean) exitCode = 1;
  for (const [signal, handler] of signalHandlers) Deno.removeSignalListener(signal, handler);
  oplog.info(
    `egress stopped${clean ? "" : " (some cleanup steps failed)"}: cleanup took ${elapsed(cleanupStarted)}`,
  );
  if (!deps.oplog) oplog.close();
  return exitCode;
}
