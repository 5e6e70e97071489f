// Supervisor logic (runner.md §3): the supervisor keeps interception in place and restarts a dead
// worker (proxy, DNS proxy, NFQUEUE consumer) after 0.25 s × 2^(n−1), at most 8 s. An exit before
// ready, or within 30 s of it, is a failure; 60 s of health resets the count; after 5 consecutive
// failures it gives up and reports `degraded` — interception stays, so traffic fails closed.

export const RESTART_BASE_MS = 250;
export const RESTART_MAX_MS = 8000;
export const MAX_CONSECUTIVE_FAILURES = 5;
export const FAILURE_WINDOW_MS = 30_000;
export const HEALTHY_RESET_MS = 60_000;

export type SupervisorState = "starting" | "running" | "restarting" | "degraded" | "stopped";

/** Delay before restart number `n` (1-based) of a run of failures. */
export function restartDelayMs(n: number, baseMs = RESTART_BASE_MS, maxMs = RESTART_MAX_MS): number {
  return Math.min(maxMs, baseMs * 2 ** (Math.max(1, n) - 1));
}

/** Counts consecutive failures from worker start/ready/exit times. */
export class RestartTracker {
  #failures = 0;
  #readyAt: number | undefined;

  constructor(private readonly now: () => number = Date.now) {}

  get failures(): number {
    return this.#failures;
  }

  started(): void {
    this.#readyAt = undefined;
  }

  ready(): void {
    this.#readyAt = this.now();
  }

  /** The worker exited: restart after `delayMs`, or give up. */
  exited(): { action: "restart"; delayMs: number; failure: boolean } | { action: "give-up" } {
    const readyAt = this.#readyAt;
    const ranFor = readyAt === undefined ? 0 : this.now() - readyAt;
    if (readyAt !== undefined && ranFor >= HEALTHY_RESET_MS) this.#failures = 0;
    const failure = readyAt === undefined || ranFor < FAILURE_WINDOW_MS;
    if (failure) this.#failures++;
    if (this.#failures >= MAX_CONSECUTIVE_FAILURES) return { action: "give-up" };
    return { action: "restart", delayMs: restartDelayMs(this.#failures), failure };
  }
}

/** A running worker as the supervisor sees it. */
export type WorkerHandle = {
  /** resolves once its listeners are up; rejects when it exits before that */
  ready: Promise<void>;
  /** resolves with the exit code */
  exited: Promise<number>;
  /** asks it to stop (SIGTERM); `force` kills it */
  kill(force?: boolean): void;
};

export type SupervisorOptions = {
  spawn: () => WorkerHandle;
  log: (level: "info" | "warn" | "error", message: string) => void;
  now?: () => number;
  /** scales every delay (tests) */
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** grace before SIGKILL at stop */
  stopGraceMs?: number;
  onStateChange?: (state: SupervisorState) => void;
};

export class Supervisor {
  #state: SupervisorState = "stopped";
  #restarts = 0;
  #worker: WorkerHandle | undefined;
  #stopping = false;
  #wake: (() => void) | undefined;
  #loop: Promise<void> | undefined;
  readonly #tracker: RestartTracker;

  constructor(private readonly options: SupervisorOptions) {
    this.#tracker = new RestartTracker(options.now);
  }

  get state(): SupervisorState {
    return this.#state;
  }

  get restarts(): number {
    return this.#restarts;
  }

  #set(state: SupervisorState): void {
    this.#state = state;
    this.options.onStateChange?.(state);
  }

  /** Starts the first worker and resolves when it is ready; rejects if it dies before ready. */
  async start(): Promise<void> {
    this.#stopping = false;
    this.#set("starting");
    const worker = this.#spawn();
    const first = await worker.ready.then(() => "ready" as const, () => "exit" as const);
    if (first !== "ready") {
      this.#set("stopped");
      const code = await worker.exited;
      throw new Error(`Cannot start the egress worker: it exited with code ${code} before it was ready`);
    }
    this.#tracker.ready();
    this.#set("running");
    this.#loop = this.#watch(worker);
  }

  #spawn(): WorkerHandle {
    this.#tracker.started();
    const worker = this.options.spawn();
    this.#worker = worker;
    return worker;
  }

  async #watch(first: WorkerHandle): Promise<void> {
    let worker = first;
    for (;;) {
      const code = await worker.exited;
      if (this.#stopping) return;
      const next = this.#tracker.exited();
      if (next.action === "give-up") {
        this.#set("degraded");
        this.options.log(
          "error",
          `worker failed ${MAX_CONSECUTIVE_FAILURES} times in a row (last exit code ${code}): degraded, ` +
            "interception stays in place and traffic is blocked",
        );
        return;
      }
      const delay = restartDelayMs(this.#tracker.failures, this.options.baseDelayMs, this.options.maxDelayMs);
      this.#set("restarting");
      this.options.log("warn", `worker exited with code ${code}; restarting in ${delay} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delay);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#wake = undefined;
      if (this.#stopping) return;
      this.#restarts++;
      worker = this.#spawn();
      const outcome = await worker.ready.then(() => "ready" as const, () => "exit" as const);
      if (this.#stopping) return;
      if (outcome === "ready") {
        this.#tracker.ready();
        this.#set("running");
        this.options.log("info", `worker restarted (restart ${this.#restarts})`);
      }
    }
  }

  /** Stops restarting and stops the worker (SIGTERM, then SIGKILL after the grace period). */
  async stop(): Promise<void> {
    this.#stopping = true;
    this.#wake?.();
    const worker = this.#worker;
    if (worker) {
      worker.kill();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<"late">((
        resolve,
      ) => (timer = setTimeout(() => resolve("late"), this.options.stopGraceMs ?? 5000)));
      if (await Promise.race([worker.exited, late]) === "late") {
        worker.kill(true);
        await worker.exited;
      }
      clearTimeout(timer);
    }
    await this.#loop;
    this.#set("stopped");
  }
}

/** A worker child process; ready when `readyFile` exists (polled every 20 ms). */
export function spawnWorkerProcess(command: Deno.Command, readyFile: string): WorkerHandle {
  try {
    Deno.removeSync(readyFile);
  } catch {
    // not there
  }
  const child = command.spawn();
  let done = false;
  const exited = child.status.then((status) => {
    done = true;
    return status.code;
  });
  const isReady = () => {
    try {
      Deno.statSync(readyFile);
      return true;
    } catch {
      return false;
    }
  };
  const ready = (async () => {
    while (!done) {
      if (isReady()) return;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    if (!isReady()) throw new Error("worker exited before it was ready");
  })();
  ready.catch(() => {});
  return {
    ready,
    exited,
    kill(force = false) {
      try {
        child.kill(force ? "SIGKILL" : "SIGTERM");
      } catch {
        // gone already
      }
    },
  };
}
