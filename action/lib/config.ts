// Where the daemon's files live on the runner. EGRESS_TEST_ROOT (tests only) moves every system
// path under a temporary directory, the same way the daemon's src/runner/paths.ts does.

import { dirname, join, resolve } from "node:path";
import process from "node:process";
import { type SystemPaths, systemPaths } from "../../src/runner/paths.ts";

export type ActionPaths = {
  system: SystemPaths;
  controlSocket: string;
  readyFile: string;
  stateDir: string;
  logFile: string;
  operationalLog: string;
  /** root of the action checkout (action.yml, mod.ts) */
  actionRoot: string;
  /** the egress CLI entry point the daemon runs */
  entry: string;
  /** runner-owned working directory for the action's own files */
  workDir: string;
};

/** The bundle's directory (action/dist), set by the CommonJS wrapper esbuild emits. */
declare const __dirname: string | undefined;

/** The bundle's directory; unbundled (Deno tests) the sources' action/lib, which sits as deep. */
function defaultBundleDir(): string {
  return typeof __dirname === "string" ? __dirname : new URL(".", import.meta.url).pathname;
}

export function actionPaths(
  env: NodeJS.ProcessEnv = process.env,
  bundleDir: string = defaultBundleDir(),
): ActionPaths {
  const root = env.EGRESS_TEST_ROOT ?? "";
  const actionRoot = resolve(bundleDir, "..", "..");
  const logFile = `${root}/var/log/egress/connections.jsonl`;
  return {
    system: systemPaths(root),
    controlSocket: `${root}/run/egress.sock`,
    readyFile: `${root}/run/egress.ready`,
    stateDir: `${root}/run/egress`,
    logFile,
    operationalLog: join(dirname(logFile), "egress.log"),
    actionRoot,
    entry: env.EGRESS_TEST_ENTRY || join(actionRoot, "mod.ts"),
    workDir: join(env.RUNNER_TEMP || "/tmp", "egress"),
  };
}
