// Ordered cleanup of what the daemon set up. Each action is registered when its resource exists;
// shutdown (or a failed startup) runs them by phase: stop accepting first, so traffic is denied
// rather than let through while the rest is taken down. A failing action is logged and does not
// skip the next one.

export const PHASE = {
  readyFile: 10,
  controlAccept: 20,
  listeners: 30,
  /** runner mode: sudo events go into the connection log before it closes */
  runnerEvents: 35,
  connectionLog: 40,
  steering: 50,
  bpf: 60,
  /** runner mode: sudoers, runc, sysctls, CA trust */
  runnerRestore: 65,
  caKey: 70,
  controlFile: 80,
  ownCgroup: 90,
} as const;

type Action = { phase: number; name: string; run: () => Promise<void> | void; order: number };

export type TeardownLog = { info(message: string): void; error(message: string): void };

export class Teardown {
  #actions: Action[] = [];
  #order = 0;
  #ran = false;

  add(phase: number, name: string, run: () => Promise<void> | void): void {
    this.#actions.push({ phase, name, run, order: this.#order++ });
  }

  get size(): number {
    return this.#actions.length;
  }

  /** Runs every action once (by phase, later registrations first within one); true if all succeeded. */
  async run(log: TeardownLog): Promise<boolean> {
    if (this.#ran) return true;
    this.#ran = true;
    const actions = [...this.#actions].sort((a, b) => a.phase - b.phase || b.order - a.order);
    let ok = true;
    for (const action of actions) {
      const started = performance.now();
      try {
        await action.run();
        log.info(`shutdown: ${action.name}: done in ${elapsed(started)}`);
      } catch (error) {
        ok = false;
        log.error(`shutdown: Cannot ${action.name}: ${(error as Error).message}`);
      }
    }
    return ok;
  }
}

export function elapsed(started: number): string {
  return `${(performance.now() - started).toFixed(1)} ms`;
}
