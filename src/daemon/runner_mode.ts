// `--runner` hardening of the daemon (runner.md §3 step 7, §5, §6): sudo disabled (or logged with
// --allow-sudo), user namespaces blocked, the CA trusted system-wide, the runc wrapper installed.
// Each change registers its undo with the teardown as soon as it is made, so shutdown and a failed
// startup restore the runner: sudo events written, sudoers, runc and sysctls restored, CA removed.

import type { ConnectionLog } from "../log/connection_log.ts";
import type { OperationalLog } from "../log/operational_log.ts";
import { installCaTrust, removeCaTrust } from "../runner/ca_trust.ts";
import { type SystemPaths, systemPaths } from "../runner/paths.ts";
import { findNode, installRuncWrapper, removeRuncWrapper } from "../runner/runc_wrapper.ts";
import {
  disableSudo,
  enableSudo,
  enableSudoLogging,
  restoreSudoers,
  type SudoTools,
  systemSudoTools,
  takeSudoLog,
} from "../runner/sudo.ts";
import { parseSudoLog } from "../runner/sudo_log.ts";
import { blockUserNamespaces, restoreUserNamespaces } from "../runner/userns.ts";
import type { DaemonConfig } from "./config.ts";
import { PHASE, type Teardown } from "./teardown.ts";

/** Injectable pieces of runner mode (tests point every path into a temporary root). */
export type RunnerEnvironment = {
  paths: SystemPaths;
  sudoTools: SudoTools;
  /** absolute Node binary for the runc wrapper; undefined: no wrapper (warning) */
  node?: string;
  /** the bundled Node part of the runc wrapper */
  wrapperScript: string;
};

export function realRunnerEnvironment(): RunnerEnvironment {
  return {
    paths: systemPaths(Deno.env.get("EGRESS_TEST_ROOT") ?? ""),
    sudoTools: systemSudoTools,
    node: findNode(),
    wrapperScript: new URL("../../action/dist/runc-wrapper.cjs", import.meta.url).pathname,
  };
}

export type SudoControl = { disable(): Promise<string>; enable(): Promise<string> };

/** Writes the sudo log as `sudo` events into the connection log (before it closes). */
export async function writeSudoEvents(
  stateDir: string,
  log: ConnectionLog,
  year = new Date().getUTCFullYear(),
): Promise<number> {
  const text = await takeSudoLog(stateDir);
  if (text === undefined) return 0;
  const events = parseSudoLog(text, year);
  for (const event of events) log.write(event);
  await log.flush();
  return events.length;
}

/** Step 7 of startup. Returns the sudo switch for the control commands. */
export async function applyRunnerHardening(options: {
  config: DaemonConfig;
  env: RunnerEnvironment;
  caPem: string;
  teardown: Teardown;
  oplog: OperationalLog;
  connectionLog: ConnectionLog;
}): Promise<SudoControl> {
  const { config, env, teardown, oplog } = options;
  const stateDir = config.stateDir;
  const warnAll = (warnings: string[]) => warnings.forEach((w) => oplog.warn(`sudo: ${w}`));

  teardown.add(PHASE.runnerEvents, "write sudo events", async () => {
    const count = await writeSudoEvents(stateDir, options.connectionLog);
    oplog.info(`sudo: ${count} sudo event(s) written`);
  });
  teardown.add(
    PHASE.runnerRestore,
    "restore sudoers",
    async () => oplog.info(await restoreSudoers(env.paths, stateDir)),
  );
  if (config.allowSudo) {
    const result = await enableSudoLogging(env.paths, stateDir, env.sudoTools);
    warnAll(result.warnings);
    oplog.info(`sudo: allowed, use logged to ${stateDir}/sudo.log`);
  } else {
    const result = await disableSudo(env.paths, stateDir, env.sudoTools);
    warnAll(result.warnings);
    oplog.info(`sudo: ${result.message}`);
  }

  teardown.add(PHASE.runnerRestore, "restore the user-namespace sysctl", async () => {
    oplog.info(await restoreUserNamespaces(stateDir));
  });
  const sysctl = await blockUserNamespaces(env.paths, stateDir);
  oplog.info(`user namespaces blocked: ${sysctl.path} = 0 (was ${sysctl.previous})`);

  teardown.add(PHASE.runnerRestore, "remove the CA from the system trust store", async () => {
    for (const line of await removeCaTrust(env.paths, stateDir)) oplog.info(`CA trust: ${line}`);
  });
  for (const line of await installCaTrust(env.paths, stateDir, options.caPem)) {
    oplog.info(`CA trust: ${line}`);
  }

  if (config.containerCerts) {
    teardown.add(
      PHASE.runnerRestore,
      "remove the runc wrapper",
      async () => oplog.info(await removeRuncWrapper(env.paths)),
    );
    if (env.node === undefined) {
      oplog.warn(
        "runc wrapper not installed: no node binary on PATH (containers will not trust the egress CA)",
      );
    } else {
      const outcome = await installRuncWrapper(env.paths, {
        node: env.node,
        scriptSource: env.wrapperScript,
      });
      if (outcome.installed) oplog.info(outcome.message);
      else oplog.warn(outcome.message);
    }
  }

  return {
    async disable() {
      const result = await disableSudo(env.paths, stateDir, env.sudoTools);
      warnAll(result.warnings);
      return result.message;
    },
    async enable() {
      const result = await enableSudo(env.paths, stateDir, env.sudoTools, { logging: config.allowSudo });
      warnAll(result.warnings);
      return result.message;
    },
  };
}

/** Leftovers of a killed run: a wrapper still in place is taken out before anything else. */
export async function removeRunnerLeftovers(env: RunnerEnvironment, oplog: OperationalLog): Promise<void> {
  const message = await removeRuncWrapper(env.paths);
  if (message !== "runc wrapper: not installed") oplog.info(`leftover: ${message}`);
}
