// Test network namespaces for the nfqueue tests: created with a per-run unique name, always removed
// (which also removes every iptables rule inside). Nothing here touches the root namespace's
// firewall: iptables only ever runs under `ip netns exec <test namespace>`.

import { commandExists, isRoot, unmet } from "../helpers/requirements.ts";
import { libnetfilterQueueAvailable } from "../../ffi/libnetfilter_queue.ts";

const AGENT = new URL("./nfqueue_agent.ts", import.meta.url).pathname;

export function nfqueueTestRequirements(): string | undefined {
  return unmet([
    [isRoot(), "needs root (network namespaces, iptables, nfqueue)"],
    [
      commandExists("/usr/sbin/ip") || commandExists("/sbin/ip") || commandExists("/usr/bin/ip"),
      "needs iproute2 (ip)",
    ],
    [commandExists("/usr/bin/nsenter"), "needs util-linux nsenter"],
    [commandExists("/usr/sbin/iptables") || commandExists("/sbin/iptables"), "needs iptables"],
    [libnetfilterQueueAvailable(), "needs libnetfilter_queue.so.1 (Debian package libnetfilter-queue1)"],
  ]);
}

const runId = `${Deno.pid.toString(36)}${Math.floor(Math.random() * 36 ** 3).toString(36)}`;
let namespaceCount = 0;
// Queues are per namespace, but a per-run random base keeps parallel runs apart in any case.
let nextQueueNum = 1000 + Math.floor(Math.random() * 50_000);

export function uniqueQueueNum(): number {
  return nextQueueNum++;
}

async function run(
  command: string,
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await new Deno.Command(command, { args, stdout: "piped", stderr: "piped" }).output();
  const decoder = new TextDecoder();
  return { code: output.code, stdout: decoder.decode(output.stdout), stderr: decoder.decode(output.stderr) };
}

async function runOrThrow(command: string, args: string[]): Promise<string> {
  const result = await run(command, args);
  if (result.code !== 0) {
    throw new Error(`Cannot run ${command} ${args.join(" ")}: exit ${result.code}: ${result.stderr.trim()}`);
  }
  return result.stdout;
}

/** A child Deno process running tests/udp/nfqueue_agent.ts inside the namespace, JSON lines on stdout. */
export class Agent {
  readonly #child: Deno.ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #lines: AsyncIterator<string>;
  readonly #stderr: Promise<string>;

  constructor(child: Deno.ChildProcess) {
    this.#child = child;
    this.#writer = child.stdin.getWriter();
    this.#lines = child.stdout.pipeThrough(new TextDecoderStream()).pipeThrough(splitLines()).values();
    this.#stderr = new Response(child.stderr).text();
  }

  async send(line: string): Promise<void> {
    await this.#writer.write(new TextEncoder().encode(`${line}\n`));
  }

  /** Next JSON line, within `timeoutMs`. */
  async next<T = Record<string, unknown>>(timeoutMs = 20_000): Promise<T> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`agent said nothing within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      const result = await Promise.race([this.#lines.next(), timeout]);
      if (result.done) throw new Error(`agent exited without output; stderr: ${await this.#stderr}`);
      return JSON.parse(result.value) as T;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Sends a command and returns its JSON answer. */
  async ask<T = Record<string, unknown>>(line: string): Promise<T> {
    await this.send(line);
    return await this.next<T>();
  }

  /** SIGKILL, as a crashing daemon would die. */
  kill(): void {
    this.#child.kill("SIGKILL");
  }

  /** Waits for exit (killing after `timeoutMs`); returns the exit code and stderr. */
  async finish(timeoutMs = 10_000): Promise<{ code: number; stderr: string }> {
    await this.#writer.close().catch(() => {});
    const timer = setTimeout(() => {
      try {
        this.#child.kill("SIGKILL");
      } catch {
        // already gone
      }
    }, timeoutMs);
    try {
      const status = await this.#child.status;
      // Drain what is left so the stream resources close.
      for (;;) if ((await this.#lines.next()).done) break;
      return { code: status.code, stderr: await this.#stderr };
    } finally {
      clearTimeout(timer);
    }
  }
}

function splitLines(): TransformStream<string, string> {
  let pending = "";
  return new TransformStream({
    transform(chunk, controller) {
      pending += chunk;
      let index: number;
      while ((index = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, index).trim();
        pending = pending.slice(index + 1);
        if (line.startsWith("{")) controller.enqueue(line);
      }
    },
    flush(controller) {
      if (pending.trim().startsWith("{")) controller.enqueue(pending.trim());
    },
  });
}

export class TestNetns {
  private constructor(readonly name: string) {}

  static async create(): Promise<TestNetns> {
    const name = `egnfq-${runId}-${namespaceCount++}`;
    await runOrThrow("ip", ["netns", "add", name]);
    const netns = new TestNetns(name);
    try {
      await runOrThrow("ip", ["-n", name, "link", "set", "lo", "up"]);
    } catch (error) {
      await netns.remove();
      throw error;
    }
    return netns;
  }

  /** iptables inside the namespace (never the root namespace). */
  async iptables(...args: string[]): Promise<string> {
    return await runOrThrow("ip", ["netns", "exec", this.name, "iptables", "-w", ...args]);
  }

  /** Packet counter of the first rule of `chain` in `table` whose text contains `match`. */
  async ruleCounter(table: string, chain: string, match: string): Promise<number> {
    const listing = await this.iptables("-t", table, "-L", chain, "-v", "-x", "-n");
    for (const line of listing.split("\n")) {
      if (line.includes(match)) return Number(line.trim().split(/\s+/)[0]);
    }
    throw new Error(`Cannot find a rule matching ${match} in ${table} ${chain}:\n${listing}`);
  }

  /** Starts the agent inside the namespace (nsenter keeps /sys and the cgroup tree as they are). */
  spawnAgent(...args: string[]): Agent {
    const child = new Deno.Command("nsenter", {
      args: [`--net=/run/netns/${this.name}`, Deno.execPath(), "run", "-A", AGENT, ...args],
      env: { DENO_NO_UPDATE_CHECK: "1" },
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    return new Agent(child);
  }

  /** Runs the traffic agent to completion and returns its report. */
  async traffic(port: number, count: number, letters: string, empty = false): Promise<TrafficReport> {
    const agent = this.spawnAgent(
      "traffic",
      String(port),
      String(count),
      letters,
      ...(empty ? ["empty"] : []),
    );
    const report = await agent.next<TrafficReport>(60_000).catch((error: Error) => error);
    const { code, stderr } = await agent.finish();
    if (report instanceof Error) throw report;
    if (code !== 0) throw new Error(`traffic agent failed (exit ${code}): ${stderr}`);
    return report;
  }

  async remove(): Promise<void> {
    await run("ip", ["netns", "del", this.name]);
  }
}

export type TrafficReport = {
  sent: number;
  receivedTotal: number;
  received: Record<string, number>;
  /** the namespace's UDP RcvbufErrors so far (drops at the receiving socket, not the queue) */
  receiveBufferErrors: number;
};

export type ConsumerReport = {
  counters: {
    received: number;
    accepted: number;
    dropped: number;
    repeated: number;
    enobufs: number;
    handlerErrors: number;
    verdictErrors: number;
    verdictRejected: number;
    malformed: number;
  };
  kernel: { waiting: number; queueDropped: number; userDropped: number; idSequence: number } | null;
  firstIds: number[];
  maxPayloadLength: number;
  byLetter: Record<string, number>;
  fatal: string | null;
  kernelAfterClose?: unknown;
  error?: string;
};

/** Creates a namespace, runs `body`, always removes the namespace. */
export async function withNetns(body: (netns: TestNetns) => Promise<void>): Promise<void> {
  const netns = await TestNetns.create();
  try {
    await body(netns);
  } finally {
    await netns.remove();
  }
}

/** Starts a consumer agent on `queueNum`, runs `body`, then always closes it and checks its exit. */
export async function withConsumer(
  netns: TestNetns,
  queueNum: number,
  body: (consumer: Agent) => Promise<void>,
  copyRange?: number,
  receiveBufferBytes?: number,
): Promise<void> {
  const agent = netns.spawnAgent(
    "consumer",
    String(queueNum),
    copyRange === undefined ? "-" : String(copyRange),
    ...(receiveBufferBytes === undefined ? [] : [String(receiveBufferBytes)]),
  );
  let failure: unknown;
  try {
    const ready = await agent.next();
    if (ready.ready !== true) throw new Error(`consumer did not start: ${JSON.stringify(ready)}`);
    await body(agent);
  } catch (error) {
    failure = error;
  }
  await agent.send("close").catch(() => {});
  const { code, stderr } = await agent.finish();
  if (failure !== undefined) throw failure;
  if (code !== 0) throw new Error(`consumer agent failed (exit ${code}): ${stderr}`);
}
