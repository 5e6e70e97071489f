// Loads egress's BPF objects (bpf/dist/*.bpf.o), attaches them to a cgroup and the BTF tracepoint,
// pins the deny hooks (and the map of guarded ports they read) in bpffs so they outlive a crashed
// daemon (fail closed), and detaches everything on close(). See docs/kernel.md.

import {
  BpfLink,
  type BpfMap,
  BpfObject,
  LibbpfError,
  type LibbpfLogLevel,
  setLibbpfLogHandler,
} from "../../ffi/libbpf.ts";
import { bpfObjPin, closeFd, errno, libc, O_DIRECTORY, O_RDONLY, openFile, OsError } from "../../ffi/libc.ts";
import { type CgroupPath, parseMountInfo, resolveCgroup } from "./cgroup.ts";

export type OperationalLog = (level: "error" | "warn" | "info" | "debug", message: string) => void;

export interface BpfLoadOptions {
  /** Instance name: pins go to `<bpffs>/egress-<instance>/`. Letters, digits, "-", "_", ".". */
  instance: string;
  /** cgroup (hierarchy path or full path) to attach to; default the cgroup2 root. */
  cgroup?: string;
  /** Directory holding egress_attr.bpf.o and egress_deny.bpf.o; default bpf/dist of this checkout. */
  objectDir?: string;
  /** Attach the deny hooks (IPv6, sockets other than TCP/UDP, binds to the ports below). Default true. */
  deny?: boolean;
  /** The proxy port the steering redirects TCP to: only root may bind it. Default 15080. */
  proxyPort?: number;
  /** The DNS port the steering redirects DNS to: only root may bind it. Default 15053. */
  dnsPort?: number;
  /** Attach the attribution programs. Default true. */
  attribution?: boolean;
  /** Pin the deny hooks in bpffs. Default true. */
  pin?: boolean;
  /** bpffs mount point; mounted there when nothing is. Default /sys/fs/bpf. */
  bpffs?: string;
  /** The netns whose sockets are keyed by netns cookie; default the caller's own netns. */
  netnsCookie?: bigint;
  /** Operational log sink; libbpf's messages (and verifier logs) go here. Default stderr. */
  log?: OperationalLog;
  /** Forward libbpf's debug messages too. */
  debug?: boolean;
}

/** The one error a failed load gives: names the kernel feature that is missing or refused. */
export class BpfLoadError extends Error {
  constructor(readonly feature: string, reason: string) {
    super(`Cannot load egress BPF programs: ${feature}: ${reason}`);
    this.name = "BpfLoadError";
  }
}

interface ProgramSpec {
  name: string;
  /** The section, which is also the kernel feature it needs. */
  feature: string;
  attach: "cgroup" | "auto";
}

export const ATTRIBUTION_PROGRAMS: readonly ProgramSpec[] = [
  { name: "egress_conn4", feature: "cgroup/connect4", attach: "cgroup" },
  { name: "egress_conn6", feature: "cgroup/connect6", attach: "cgroup" },
  { name: "egress_sockops", feature: "sockops", attach: "cgroup" },
  { name: "egress_sendmsg4", feature: "cgroup/sendmsg4", attach: "cgroup" },
  { name: "egress_sendmsg6", feature: "cgroup/sendmsg6", attach: "cgroup" },
  { name: "egress_udp_send", feature: "tp_btf/sock_send_length", attach: "auto" },
];

export const DENY_PROGRAMS: readonly ProgramSpec[] = [
  { name: "egress_deny_c6", feature: "cgroup/connect6", attach: "cgroup" },
  { name: "egress_deny_s6", feature: "cgroup/sendmsg6", attach: "cgroup" },
  { name: "egress_deny_sock", feature: "cgroup/sock_create", attach: "cgroup" },
  { name: "egress_deny_skb", feature: "cgroup_skb/egress", attach: "cgroup" },
  { name: "egress_deny_b4", feature: "cgroup/bind4", attach: "cgroup" },
  { name: "egress_deny_b6", feature: "cgroup/bind6", attach: "cgroup" },
];

/** The deny object's map of guarded ports (struct egress_deny_ports), pinned beside its links. */
export const DENY_PORTS_MAP = "egress_deny_ports";
/** Mirrors EGRESS_GUARDED_PORTS in bpf/egress_deny.bpf.c. */
export const GUARDED_PORT_SLOTS = 4;
export const DEFAULT_PROXY_PORT = 15080;
export const DEFAULT_DNS_PORT = 15053;

/** struct egress_deny_ports: netns cookie (u64), then GUARDED_PORT_SLOTS u16 ports (0 = unused). */
export function encodeDenyPorts(netnsCookie: bigint, ports: readonly number[]): Uint8Array<ArrayBuffer> {
  if (ports.length > GUARDED_PORT_SLOTS) throw new Error(`at most ${GUARDED_PORT_SLOTS} guarded ports`);
  const value = new Uint8Array(8 + 2 * GUARDED_PORT_SLOTS);
  const view = new DataView(value.buffer);
  view.setBigUint64(0, netnsCookie, hostLittleEndian);
  ports.forEach((port, index) => view.setUint16(8 + 2 * index, port, hostLittleEndian));
  return value;
}

/**
 * Guarded ports an unprivileged process could still get by autobind (connect, listen or sendto on an
 * unbound socket, or bind to port 0 never run the bind hook): those inside the ephemeral range
 * (`ip_local_port_range`) and not in `ip_local_reserved_ports`.
 */
export function autobindablePorts(range: string, reserved: string, ports: readonly number[]): number[] {
  const [low, high] = range.trim().split(/\s+/).map(Number);
  const isReserved = (port: number) =>
    reserved.trim().split(",").filter(Boolean).some((item) => {
      const [a, b = a] = item.split("-").map(Number);
      return port >= a && port <= b;
    });
  return ports.filter((port) => port >= low && port <= high && !isReserved(port));
}

function checkPort(name: string, port: number): number {
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new Error(`Cannot load egress BPF programs: ${name} ${port} is not a port (1-65535)`);
  }
  return port;
}

/** Mirrors EGRESS_CONN_ENTRIES / EGRESS_STASH_ENTRIES in bpf/egress.h. */
export const EGRESS_CONN_ENTRIES = 65536;
export const EGRESS_STASH_ENTRIES = 16384;

const SOL_SOCKET = 1;
const SO_NETNS_COOKIE = 71;
const INSTANCE_NAME = /^[A-Za-z0-9_.-]{1,64}$/;

function defaultLog(level: string, message: string): void {
  if (level === "debug") return;
  console.error(`egress bpf ${level}: ${message}`);
}

function defaultObjectDir(): string {
  return new URL("../../bpf/dist", import.meta.url).pathname;
}

/** Cookie of the caller's network namespace (SO_NETNS_COOKIE on a throwaway socket). */
export function ownNetnsCookie(): bigint {
  const fd = libc().socket(2, 2, 0);
  if (fd < 0) throw new OsError("create a socket to read the netns cookie", errno());
  try {
    const value = new Uint8Array(8);
    const length = new Uint32Array([8]);
    const result = libc().getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, value, new Uint8Array(length.buffer));
    if (result < 0) throw new OsError("read the netns cookie (SO_NETNS_COOKIE)", errno());
    return new DataView(value.buffer).getBigUint64(0, hostLittleEndian);
  } finally {
    closeFd(fd);
  }
}

export const hostLittleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Mounts bpffs at `path` unless a bpf filesystem is already mounted there. */
export function ensureBpffs(path = "/sys/fs/bpf"): void {
  const mounted = parseMountInfo(Deno.readTextFileSync("/proc/self/mountinfo"))
    .some((entry) => entry.fsType === "bpf" && entry.mountPoint === path);
  if (mounted) return;
  Deno.mkdirSync(path, { recursive: true });
  const enc = (text: string) => new TextEncoder().encode(text + "\0");
  if (libc().mount(enc("bpf"), enc(path), enc("bpf"), 0n, null) < 0) {
    throw new OsError(`mount bpffs at ${path}`, errno());
  }
}

/**
 * Removes the pins a previous instance of the same name left behind (a killed daemon): each link
 * is reopened, unpinned and destroyed, which detaches its program; other pins (the ports map) are
 * unlinked. Returns how many pins were removed.
 */
/** Where a daemon pins its attribution map for its worker process (outside the deny-link directory). */
export function attributionMapPin(instance: string, bpffs = "/sys/fs/bpf"): string {
  return `${bpffs}/egress-${instance}-conns`;
}

/** Removes everything a killed daemon of this instance left in bpffs: deny links, maps, the map pin. */
export function removeLeftoverPins(instance: string, bpffs = "/sys/fs/bpf"): number {
  const { links, others } = removePins(instance, bpffs);
  let mapPin = 0;
  try {
    Deno.removeSync(attributionMapPin(instance, bpffs));
    mapPin = 1;
  } catch {
    // none left
  }
  return links + others + mapPin;
}

function removePins(instance: string, bpffs: string): { links: number; others: number } {
  const dir = `${bpffs}/egress-${instance}`;
  let links = 0, others = 0;
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(dir)];
  } catch {
    return { links, others };
  }
  for (const entry of entries) {
    const path = `${dir}/${entry.name}`;
    try {
      const link = BpfLink.open(path);
      try {
        link.unpin();
      } finally {
        link.close();
      }
      links++;
    } catch {
      // Not a link (the ports map, or unreadable): unlinking the pin drops the reference all the same.
      Deno.removeSync(path);
      others++;
    }
  }
  Deno.removeSync(dir);
  return { links, others };
}

export interface BpfStats {
  tcpPublished: bigint;
  udpRecorded: bigint;
  stashMiss: bigint;
  noSource: bigint;
  stashed: bigint;
}

/** Loaded and attached egress BPF. close() detaches everything and removes the pins. */
export class EgressBpf {
  #objects: BpfObject[] = [];
  #links: BpfLink[] = [];
  #pinned: BpfLink[] = [];
  #pinnedFiles: string[] = [];
  #closed = false;
  /** Attribution maps; undefined when attribution was not requested. */
  conns?: BpfMap;
  stats?: BpfMap;
  /** Pins (links and the ports map) of an earlier instance of the same name that this load removed. */
  leftoversRemoved = 0;
  /** Ports only root may bind (in this netns, under the cgroup); empty without the deny hooks. */
  guardedPorts: readonly number[] = [];

  constructor(
    readonly instance: string,
    readonly cgroup: CgroupPath,
    readonly netnsCookie: bigint,
    readonly pinDir: string | undefined,
    readonly log: OperationalLog,
  ) {}

  /** @internal */
  track(object: BpfObject): void {
    this.#objects.push(object);
  }
  /** @internal */
  trackLink(link: BpfLink): void {
    this.#links.push(link);
  }
  /** @internal */
  markPinned(link: BpfLink): void {
    this.#pinned.push(link);
  }
  /** @internal a pinned object that is not a link (removed by close()) */
  markPinnedFile(path: string): void {
    this.#pinnedFiles.push(path);
  }

  /** Names of the programs loaded by this instance (kernel-visible names). */
  programNames(): string[] {
    return this.#objects.flatMap((object) => object.programNames());
  }

  readStats(): BpfStats {
    const read = (index: number): bigint => {
      if (!this.stats) return 0n;
      const key = new Uint8Array(4);
      new DataView(key.buffer).setUint32(0, index, hostLittleEndian);
      const value = new Uint8Array(8);
      return this.stats.lookup(key, value)
        ? new DataView(value.buffer).getBigUint64(0, hostLittleEndian)
        : 0n;
    };
    return {
      tcpPublished: read(0),
      udpRecorded: read(1),
      stashMiss: read(2),
      noSource: read(3),
      stashed: read(4),
    };
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Unpins the deny hooks, destroys every link (detaching it) and closes the objects. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const failures: string[] = [];
    for (const link of this.#pinned) {
      try {
        link.unpin();
      } catch (error) {
        failures.push((error as Error).message);
      }
    }
    for (const path of this.#pinnedFiles) {
      try {
        Deno.removeSync(path);
      } catch (error) {
        if (!(error instanceof Deno.errors.NotFound)) failures.push((error as Error).message);
      }
    }
    for (const link of this.#links) link.close();
    for (const object of this.#objects) object.close();
    if (this.pinDir) {
      try {
        Deno.removeSync(this.pinDir);
      } catch (error) {
        if (!(error instanceof Deno.errors.NotFound)) failures.push((error as Error).message);
      }
    }
    this.conns = undefined;
    this.stats = undefined;
    for (const failure of failures) this.log("warn", `while detaching BPF: ${failure}`);
  }
}

function featureOfFailedLoad(lines: string[], specs: readonly ProgramSpec[]): string {
  for (const line of lines) {
    const match = line.match(/prog '([^']+)': (?:BPF program load failed|failed to load)/);
    if (match) {
      const spec = specs.find((candidate) => candidate.name === match[1]);
      if (spec) return `${spec.feature} (program ${spec.name})`;
    }
  }
  return "BPF program load";
}

function loadObject(
  path: string,
  specs: readonly ProgramSpec[],
  bpf: EgressBpf,
  options: BpfLoadOptions,
): BpfObject {
  const log = bpf.log;
  const captured: string[] = [];
  setLibbpfLogHandler((level: LibbpfLogLevel, message: string) => {
    captured.push(message);
    if (level !== "debug" || options.debug) log(level, `libbpf: ${message}`);
  });
  try {
    let object: BpfObject;
    try {
      object = BpfObject.open(path);
    } catch (error) {
      throw new BpfLoadError(`BPF object ${path}`, (error as Error).message);
    }
    bpf.track(object);
    try {
      object.load();
    } catch (error) {
      const code = error instanceof LibbpfError ? error.code : 0;
      const feature = featureOfFailedLoad(captured, specs);
      const hint = code === 1
        ? "the kernel refused it (EPERM: lockdown, missing CAP_BPF/CAP_SYS_ADMIN, or the program type is disabled)"
        : "the kernel or its verifier rejected it; libbpf's verifier log is in the operational log";
      throw new BpfLoadError(feature, `${hint} (${(error as Error).message})`);
    }
    return object;
  } finally {
    setLibbpfLogHandler((level, message) => {
      if (level !== "debug" || options.debug) log(level, `libbpf: ${message}`);
    });
  }
}

function attachAll(
  object: BpfObject,
  specs: readonly ProgramSpec[],
  cgroupFd: number,
  bpf: EgressBpf,
): BpfLink[] {
  const links: BpfLink[] = [];
  for (const spec of specs) {
    let link: BpfLink;
    try {
      const program = object.program(spec.name);
      link = spec.attach === "cgroup" ? program.attachCgroup(cgroupFd) : program.attach();
    } catch (error) {
      const reason = spec.attach === "cgroup"
        ? `cannot attach to cgroup ${bpf.cgroup.hierarchyPath} (kernel without CONFIG_CGROUP_BPF or this hook?)`
        : "cannot attach (kernel without BTF tracepoints?)";
      throw new BpfLoadError(
        `${spec.feature} (program ${spec.name})`,
        `${reason}: ${(error as Error).message}`,
      );
    }
    bpf.trackLink(link);
    links.push(link);
  }
  return links;
}

/** Warns when autobind could hand out a guarded port (the bind hook never sees autobind). */
function warnAutobindable(ports: readonly number[], log: OperationalLog): void {
  let exposed: number[];
  try {
    exposed = autobindablePorts(
      Deno.readTextFileSync("/proc/sys/net/ipv4/ip_local_port_range"),
      Deno.readTextFileSync("/proc/sys/net/ipv4/ip_local_reserved_ports"),
      ports,
    );
  } catch {
    return;
  }
  if (exposed.length > 0) {
    log(
      "warn",
      `ports ${
        exposed.join(", ")
      } lie in net.ipv4.ip_local_port_range: an unprivileged process can get them ` +
        `by autobind while egress is not running; add them to net.ipv4.ip_local_reserved_ports`,
    );
  }
}

/**
 * Opens, loads and attaches egress's BPF programs. Any failure detaches what was attached and
 * throws one BpfLoadError naming the feature.
 */
export function loadEgressBpf(options: BpfLoadOptions): EgressBpf {
  if (!INSTANCE_NAME.test(options.instance)) {
    throw new Error(
      `Cannot load egress BPF programs: invalid instance name ${JSON.stringify(options.instance)}`,
    );
  }
  const log = options.log ?? defaultLog;
  try {
    Deno.statSync("/sys/kernel/btf/vmlinux");
  } catch {
    throw new BpfLoadError(
      "kernel BTF",
      "/sys/kernel/btf/vmlinux is missing (kernel built without CONFIG_DEBUG_INFO_BTF)",
    );
  }
  try {
    setLibbpfLogHandler(undefined); // opens libbpf.so.1 now, so a missing library is named as such
  } catch (error) {
    throw new BpfLoadError("libbpf.so.1", (error as Error).message);
  }
  const cgroup = resolveCgroup(options.cgroup ?? "/");
  const objectDir = options.objectDir ?? defaultObjectDir();
  const wantDeny = options.deny ?? true;
  const wantAttribution = options.attribution ?? true;
  const wantPin = wantDeny && (options.pin ?? true);
  const proxyPort = checkPort("proxy port", options.proxyPort ?? DEFAULT_PROXY_PORT);
  const dnsPort = checkPort("DNS port", options.dnsPort ?? DEFAULT_DNS_PORT);
  const bpffs = options.bpffs ?? "/sys/fs/bpf";
  const pinDir = wantPin ? `${bpffs}/egress-${options.instance}` : undefined;
  const netnsCookie = options.netnsCookie ?? ownNetnsCookie();
  const bpf = new EgressBpf(options.instance, cgroup, netnsCookie, pinDir, log);

  let cgroupFd = -1;
  try {
    cgroupFd = openFile(cgroup.fsPath, O_RDONLY | O_DIRECTORY);
    if (wantAttribution) {
      const object = loadObject(`${objectDir}/egress_attr.bpf.o`, ATTRIBUTION_PROGRAMS, bpf, options);
      const config = object.map("egress_config");
      const key = new Uint8Array(4);
      const value = new Uint8Array(16);
      const view = new DataView(value.buffer);
      view.setBigUint64(0, netnsCookie, hostLittleEndian);
      view.setUint32(8, 1, hostLittleEndian);
      config.update(key, value);
      const cgroupSlot = new Uint8Array(4);
      new DataView(cgroupSlot.buffer).setUint32(0, cgroupFd, hostLittleEndian);
      object.map("egress_cgroup").update(key, cgroupSlot);
      bpf.conns = object.map("egress_conns");
      bpf.stats = object.map("egress_stats");
      attachAll(object, ATTRIBUTION_PROGRAMS, cgroupFd, bpf);
    }
    if (wantDeny) {
      const object = loadObject(`${objectDir}/egress_deny.bpf.o`, DENY_PROGRAMS, bpf, options);
      const guardedPorts = [...new Set([proxyPort, dnsPort])];
      const portsMap = object.map(DENY_PORTS_MAP);
      portsMap.update(new Uint8Array(4), encodeDenyPorts(netnsCookie, guardedPorts));
      bpf.guardedPorts = guardedPorts;
      warnAutobindable(guardedPorts, log);
      // New hooks attach before the leftovers go, so the denial has no gap across a restart: the
      // old hooks keep their own (pinned) ports map until they are removed.
      const links = attachAll(object, DENY_PROGRAMS, cgroupFd, bpf);
      if (pinDir) {
        try {
          ensureBpffs(bpffs);
          const leftovers = removePins(options.instance, bpffs);
          bpf.leftoversRemoved = leftovers.links + leftovers.others;
          if (bpf.leftoversRemoved > 0) {
            const others = leftovers.others > 0 ? ` (and ${leftovers.others} other pins: the ports map)` : "";
            log(
              "info",
              `removed ${leftovers.links} pinned BPF links left by an earlier egress-${options.instance}${others}`,
            );
          }
          Deno.mkdirSync(pinDir, { recursive: true });
          links.forEach((link, index) => {
            link.pin(`${pinDir}/${DENY_PROGRAMS[index].name}`);
            bpf.markPinned(link);
          });
          // The pinned links keep the map alive anyway; the pin makes it inspectable
          // (bpftool map dump pinned ...) and is a leftover the next start removes.
          bpfObjPin(portsMap.fd, `${pinDir}/${DENY_PORTS_MAP}`);
          bpf.markPinnedFile(`${pinDir}/${DENY_PORTS_MAP}`);
        } catch (error) {
          if (error instanceof BpfLoadError) throw error;
          throw new BpfLoadError(`bpffs pinning at ${pinDir}`, (error as Error).message);
        }
      }
    }
    return bpf;
  } catch (error) {
    bpf.close();
    throw error;
  } finally {
    closeFd(cgroupFd);
  }
}
