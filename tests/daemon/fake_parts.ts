// Fakes of the daemon's pieces that record what happened, in order. Not a test file itself.
import type { DaemonSystem } from "../../src/daemon/daemon.ts";
import type { DaemonParts, PartContext, RunningPart } from "../../src/daemon/parts.ts";

export type Recorder = {
  events: string[];
  fail: Set<string>;
  contexts: PartContext[];
  unhealthy: Set<string>;
};

export function recorder(fail: string[] = []): Recorder {
  return { events: [], fail: new Set(fail), contexts: [], unhealthy: new Set() };
}

function maybeFail(rec: Recorder, event: string): void {
  rec.events.push(event);
  if (rec.fail.has(event)) throw new Error(`${event} failed (injected)`);
}

export function fakeSystem(rec: Recorder): DaemonSystem {
  return {
    enterOwnCgroup() {
      maybeFail(rec, "cgroup.enter");
      return { path: "/egress-test.scope", leave: () => Promise.resolve(maybeFail(rec, "cgroup.leave")) };
    },
    removeStaleOwnCgroups() {
      rec.events.push("cgroup.stale");
      return [];
    },
    countLeftoverPins: () => 0,
    loadBpf() {
      maybeFail(rec, "bpf.load");
      return { programNames: () => ["fake"], close: () => maybeFail(rec, "bpf.close") };
    },
    resolver: () => () => Promise.resolve(undefined),
    closeConntrack: () => rec.events.push("conntrack.close"),
  };
}

function part(rec: Recorder, name: string, context: PartContext): RunningPart {
  maybeFail(rec, `${name}.start`);
  rec.contexts.push(context);
  return {
    name,
    close: () => Promise.resolve(maybeFail(rec, `${name}.close`)),
    counters: () => ({ allowed: 1, denied: 2, dns: name === "dns" ? 3 : 0, errors: 0 }),
    healthy: () => !rec.unhealthy.has(name),
  };
}

export function fakeParts(rec: Recorder): DaemonParts {
  return {
    steering: {
      removeLeftovers: () => Promise.resolve((maybeFail(rec, "steering.leftovers"), 0)),
      install: (settings) => Promise.resolve(maybeFail(rec, `steering.install ${settings.exemptCgroupPath}`)),
      remove: () => Promise.resolve(maybeFail(rec, "steering.remove")),
      flushUdpConntrack: () => Promise.resolve(maybeFail(rec, "steering.flush")),
      revokeFastPath: () => Promise.resolve(maybeFail(rec, "steering.revoke")),
    },
    startProxy: (context) => Promise.resolve(part(rec, "proxy", context)),
    startDns: (context) => Promise.resolve(part(rec, "dns", context)),
    startUdp: (context) => Promise.resolve(part(rec, "udp", context)),
  };
}
