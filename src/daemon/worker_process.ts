// The supervisor's side of a worker process (src/daemon/worker.ts): spawn, the `ready` line, and
// one request at a time over stdin/stdout (`counters`, `reload`).

import type { WorkerHandle } from "../runner/supervisor.ts";

export type WorkerProcess = WorkerHandle & {
  pid: number;
  /** Sends one request line; resolves with the reply line, or rejects after `timeoutMs`. */
  request(line: string, timeoutMs?: number): Promise<string>;
};

const WORKER_SCRIPT = new URL("./worker.ts", import.meta.url).pathname;
const CONFIG = new URL("../../deno.json", import.meta.url).pathname;

export function spawnWorker(specPath: string): WorkerProcess {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-prompt", "--config", CONFIG, WORKER_SCRIPT, specPath],
    // Upstream TLS is verified against the system's trust store plus --upstream-ca (issue 4);
    // Deno's default is its bundled Mozilla list, which ignores what the machine trusts.
    env: { DENO_TLS_CA_STORE: "system" },
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const writer = child.stdin.getWriter();
  let readyResolve!: () => void;
  let readyReject!: (error: Error) => void;
  const ready = new Promise<void>((resolve, reject) => {
    readyResolve = resolve;
    readyReject = reject;
  });
  ready.catch(() => {});
  const waiting: Array<(line: string) => void> = [];
  let isReady = false;
  const exited = child.status.then((status) => {
    if (!isReady) readyReject(new Error(`worker exited with code ${status.code} before it was ready`));
    for (const resolve of waiting.splice(0)) resolve("reply error: the worker exited");
    writer.close().catch(() => {});
    return status.code;
  });
  (async () => {
    let buffer = "";
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      buffer += chunk;
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        if (line === "ready" && !isReady) {
          isReady = true;
          readyResolve();
        } else {
          waiting.shift()?.(line);
        }
      }
    }
  })().catch(() => {});
  let chain: Promise<unknown> = Promise.resolve();
  const request = (line: string, timeoutMs = 5000): Promise<string> => {
    const run = async () => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      let resolver!: (line: string) => void;
      const reply = new Promise<string>((resolve) => waiting.push(resolver = resolve));
      try {
        await writer.write(new TextEncoder().encode(line + "\n"));
        return await Promise.race([
          reply,
          new Promise<string>((_, reject) => {
            timer = setTimeout(
              () => reject(new Error(`the worker did not answer ${line} in ${timeoutMs} ms`)),
              timeoutMs,
            );
          }),
        ]);
      } finally {
        clearTimeout(timer);
        // A late reply must not be taken for the next request's.
        const index = waiting.indexOf(resolver);
        if (index >= 0) waiting.splice(index, 1);
      }
    };
    const result = chain.then(run, run);
    chain = result.catch(() => {});
    return result;
  };
  return {
    pid: child.pid,
    ready,
    exited,
    request,
    kill(force = false) {
      try {
        child.kill(force ? "SIGKILL" : "SIGTERM");
      } catch {
        // gone already
      }
    },
  };
}
