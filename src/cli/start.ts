// `egress start`: the foreground daemon (cli.md). Reads its inputs (policy, upstream CAs) before
// anything else, so a missing file is a usage error (exit 2) that touched nothing.

import { CliError } from "./args.ts";
import { parseStartArgs, START_USAGE } from "../daemon/config.ts";

async function readInput(path: string, what: string): Promise<string> {
  try {
    if (path === "-") return await new Response(Deno.stdin.readable).text();
    return await Deno.readTextFile(path);
  } catch (error) {
    throw new CliError(`Cannot read ${what} ${path}: ${(error as Error).message}`, 2);
  }
}

export async function runStart(args: string[], uid: () => number | null = () => Deno.uid()): Promise<number> {
  const config = parseStartArgs(args, (key) => Deno.env.get(key));
  if (config === "help") {
    console.log(START_USAGE);
    return 0;
  }
  if (uid() !== 0) {
    throw new CliError(
      "needs root: it installs packet-steering rules and BPF programs (run it with sudo)",
      1,
    );
  }
  const policyText = config.policyPath === undefined ? "" : await readInput(config.policyPath, "policy");
  const upstreamCaPems: string[] = [];
  for (const file of config.upstreamCaFiles) {
    const pem = await readInput(file, "upstream CA file");
    if (!pem.includes("-----BEGIN CERTIFICATE-----")) {
      throw new CliError(`Cannot use upstream CA file ${file}: it holds no PEM certificate`, 2);
    }
    upstreamCaPems.push(pem);
  }
  const { runDaemon } = await import("../daemon/daemon.ts");
  return await runDaemon(config, policyText, upstreamCaPems);
}
