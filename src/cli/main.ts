// `egress` command-line entry: dispatches to the command modules, each imported lazily so that a
// command loads only its own code. User errors are one line on stderr; anything unexpected is an
// internal error (exit 1).

import denoConfig from "../../deno.json" with { type: "json" };
import { CliError } from "./args.ts";

export const USAGE = `Usage: egress <command> [options]

Commands:
  validate     check policy files and the egress policies of workflows
  analyze      replay a connection log against a policy
  start        run the daemon in the foreground (root)
  stop         ask the running daemon to shut down
  status       show the running daemon's mode and counters
  demo         live demo in throw-away network namespaces (root; deno task start)
  doctor       check this machine for what egress needs
  suggest      write the tightest policy allowing every connection of a log
  permissions  the minimal GitHub token permissions the requests of a log needed
  sidecar      DNS/egress sidecar for sandboxes and Kubernetes pods

Options:
  -h, --help   help (also after a command: egress validate --help)
  --version    print the version

Exit: 0 ok, 1 policy invalid / blocked / failed, 2 usage error or unreadable file.`;

type Command = (args: string[]) => Promise<number>;

const COMMANDS: Record<string, () => Promise<Command>> = {
  validate: async () => (await import("./validate.ts")).runValidate,
  analyze: async () => (await import("./analyze.ts")).runAnalyze,
  demo: async () => (await import("./demo.ts")).runDemo,
  sidecar: async () => (await import("./sidecar.ts")).runSidecar,
  suggest: async () => (await import("./suggest.ts")).runSuggest,
  permissions: async () => (await import("./permissions.ts")).runPermissions,
  start: async () => (await import("./start.ts")).runStart,
  stop: async () => (await import("./stop.ts")).runStop,
  status: async () => (await import("./status.ts")).runStatus,
  doctor: async () => (await import("./doctor.ts")).runDoctor,
};

export function version(): string {
  return denoConfig.version;
}

export async function main(args: string[]): Promise<number> {
  const [first, ...rest] = args;
  if (first === undefined) {
    console.error(USAGE);
    return 2;
  }
  if (first === "-h" || first === "--help") {
    console.log(USAGE);
    return 0;
  }
  if (first === "--version") {
    console.log(`egress ${version()}`);
    return 0;
  }
  if (first === "help") {
    if (rest.length === 0) {
      console.log(USAGE);
      return 0;
    }
    return await main([rest[0], "--help"]);
  }
  const load = Object.hasOwn(COMMANDS, first) ? COMMANDS[first] : undefined;
  if (load === undefined) {
    console.error(
      first.startsWith("-") ? `egress: unknown option "${first}"` : `egress: unknown command "${first}"`,
    );
    console.error(USAGE);
    return 2;
  }
  return await runGuarded(first, async () => (await load())(rest));
}

/**
 * Runs a command: a CliError becomes its one-line message and exit code; anything else is an
 * internal error (exit 1), with the stack only under EGRESS_DEBUG=1.
 */
export async function runGuarded(name: string, run: () => Promise<number>): Promise<number> {
  try {
    return await run();
  } catch (e) {
    if (e instanceof CliError) {
      console.error(`egress ${name}: ${e.message}`);
      return e.exitCode;
    }
    const detail = e instanceof Error ? e.message : String(e);
    console.error(`egress: internal error: ${detail}`);
    if (debugEnabled() && e instanceof Error && e.stack) console.error(e.stack);
    return 1;
  }
}

function debugEnabled(): boolean {
  try {
    return Deno.env.get("EGRESS_DEBUG") === "1";
  } catch {
    return false; // no env permission
  }
}
