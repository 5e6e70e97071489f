// `egress doctor`: which kernel features, libraries and binaries egress needs are present on this
// machine. Kernel program types are probed by really loading a two-instruction program with bpf()
// (nothing is attached) because configuration flags and `bpftool feature probe` disagree with what
// loads here: bpftool reports "tracing NOT available" on kernels that refuse fentry but load tp_btf.
// Without root the probes cannot run and those items say "unknown".

import { EPERM, probeBpfProgramLoad } from "../../ffi/libc.ts";
import { ConntrackClient } from "../kernel/conntrack.ts";

export type Status = "yes" | "no" | "unknown";

export type Check = {
  id: string;
  name: string;
  status: Status;
  required: boolean;
  detail: string;
  /** What to install or enable when the status is not "yes". */
  install: string;
};

export type DoctorReport = { ok: boolean; root: boolean; checks: Check[] };

const PINNED_DENO = "2.9.6";
const KERNEL_HINT = "Debian's linux-image-amd64 / linux-image-arm64 kernels have it";

// bpf program and attach types (include/uapi/linux/bpf.h)
const PROG_CGROUP_SKB = 8,
  PROG_CGROUP_SOCK = 9,
  PROG_SOCK_OPS = 13,
  PROG_CGROUP_SOCK_ADDR = 18,
  PROG_TRACING = 26;
const ATTACH_INET_EGRESS = 1, ATTACH_INET_SOCK_CREATE = 2, ATTACH_SOCK_OPS = 3;
const ATTACH_INET4_CONNECT = 10,
  ATTACH_INET6_CONNECT = 11,
  ATTACH_UDP4_SENDMSG = 14,
  ATTACH_UDP6_SENDMSG = 15;
const ATTACH_UDP4_RECVMSG = 19, ATTACH_TRACE_RAW_TP = 23;
const BTF_KIND_TYPEDEF = 8;

/** `r0 = value; exit` as raw eBPF instructions. */
function returnProgram(value: number): Uint8Array<ArrayBuffer> {
  const insns = new Uint8Array(16);
  const view = new DataView(insns.buffer);
  insns[0] = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K, dst r0
  view.setInt32(4, value, true);
  insns[8] = 0x95; // BPF_JMP | BPF_EXIT
  return insns;
}

/**
 * Type id of the BTF type `name` of `kind` in raw BTF (e.g. /sys/kernel/btf/vmlinux), or undefined.
 * Walks the type section; each kind's trailing data size is fixed by the BTF format.
 */
export function findBtfTypeId(data: Uint8Array, name: string, kind: number): number | undefined {
  if (data.length < 24) return undefined;
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  if (view.getUint16(0, true) !== 0xeb9f) return undefined;
  const headerLength = view.getUint32(4, true);
  const typeStart = headerLength + view.getUint32(8, true);
  const typeEnd = typeStart + view.getUint32(12, true);
  const stringStart = headerLength + view.getUint32(16, true);
  const stringEnd = stringStart + view.getUint32(20, true);
  if (typeEnd > data.length || stringEnd > data.length) return undefined;
  const wanted = new TextEncoder().encode(name);
  const nameMatches = (offset: number) => {
    const at = stringStart + offset;
    if (at + wanted.length >= stringEnd) return false;
    for (let i = 0; i < wanted.length; i++) if (data[at + i] !== wanted[i]) return false;
    return data[at + wanted.length] === 0;
  };
  let offset = typeStart;
  for (let id = 1; offset + 12 <= typeEnd; id++) {
    const nameOffset = view.getUint32(offset, true);
    const info = view.getUint32(offset + 4, true);
    const typeKind = (info >>> 24) & 0x1f;
    const vlen = info & 0xffff;
    if (typeKind === kind && nameMatches(nameOffset)) return id;
    offset += 12;
    switch (typeKind) {
      case 1: // INT
      case 14: // VAR
      case 17: // DECL_TAG
        offset += 4;
        break;
      case 3: // ARRAY
        offset += 12;
        break;
      case 4: // STRUCT
      case 5: // UNION
      case 15: // DATASEC
      case 19: // ENUM64
        offset += 12 * vlen;
        break;
      case 6: // ENUM
      case 13: // FUNC_PROTO
        offset += 8 * vlen;
        break;
      default: // PTR FWD TYPEDEF VOLATILE CONST RESTRICT FUNC FLOAT TYPE_TAG: no trailing data
        break;
    }
  }
  return undefined;
}

function isRoot(): boolean {
  try {
    return Deno.uid() === 0;
  } catch {
    return false;
  }
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

function readText(path: string): string | undefined {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return undefined;
  }
}

async function kernelConfig(): Promise<Map<string, string> | undefined> {
  try {
    const file = await Deno.open("/proc/config.gz");
    const text = await new Response(file.readable.pipeThrough(new DecompressionStream("gzip"))).text();
    const config = new Map<string, string>();
    for (const line of text.split("\n")) {
      const match = /^(CONFIG_\w+)=(.*)$/.exec(line);
      if (match) config.set(match[1], match[2]);
    }
    return config;
  } catch {
    return undefined;
  }
}

function cgroup2Mount(): { mount?: string; hybrid: boolean } {
  const info = readText("/proc/self/mountinfo") ?? "";
  let mount: string | undefined, hybrid = false;
  for (const line of info.split("\n")) {
    const [before, after] = line.split(" - ");
    if (!after) continue;
    if (after.startsWith("cgroup2 ")) mount ??= before.split(" ")[4];
    else if (after.startsWith("cgroup ")) hybrid = true;
  }
  return { mount, hybrid };
}

function canLoadLibrary(name: string, dirs: string[]): { status: Status; detail: string } {
  try {
    Deno.dlopen(name, {}).close();
    return { status: "yes", detail: `${name} loads` };
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied) {
      const found = dirs.map((d) => `${d}/${name}`).find(exists);
      return found
        ? { status: "yes", detail: `${found} present (not loaded: no --allow-ffi)` }
        : { status: "unknown", detail: "cannot try to load it without --allow-ffi" };
    }
    return { status: "no", detail: `${name} does not load: ${(error as Error).message.split("\n")[0]}` };
  }
}

function findBinary(name: string): string | undefined {
  const dirs = [...(Deno.env.get("PATH") ?? "").split(":"), "/usr/sbin", "/sbin", "/usr/bin", "/bin"];
  for (const dir of dirs) {
    if (!dir) continue;
    try {
      if (Deno.statSync(`${dir}/${name}`).isFile) return `${dir}/${name}`;
    } catch { /* next */ }
  }
  return undefined;
}

async function binaryVersion(name: string): Promise<{ status: Status; detail: string }> {
  const path = findBinary(name);
  if (!path) return { status: "no", detail: `${name} not found in PATH, /usr/sbin or /sbin` };
  try {
    const command = new Deno.Command(path, {
      args: ["--version"],
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(5000),
    });
    const output = await command.output();
    const text = new TextDecoder().decode(output.stdout).trim() ||
      new TextDecoder().decode(output.stderr).trim();
    if (!output.success) return { status: "no", detail: `${path} --version failed: ${text.split("\n")[0]}` };
    return { status: "yes", detail: `${path}: ${text.split("\n")[0]}` };
  } catch (error) {
    return { status: "unknown", detail: `Cannot run ${path} --version: ${(error as Error).message}` };
  }
}

type Probe = { label: string; progType: number; attach: number; ret: number; btfName?: string };

function runProbes(
  probes: Probe[],
  root: boolean,
  btf: Uint8Array | undefined,
): { status: Status; detail: string } {
  if (!root) {
    return { status: "unknown", detail: "probing loads a test program with bpf(), which needs root" };
  }
  const results: string[] = [];
  let all = true;
  for (const probe of probes) {
    let attachBtfId: number | undefined;
    if (probe.btfName) {
      attachBtfId = btf ? findBtfTypeId(btf, probe.btfName, BTF_KIND_TYPEDEF) : undefined;
      if (attachBtfId === undefined) {
        all = false;
        results.push(`${probe.label}: not in kernel BTF`);
        continue;
      }
    }
    let code: number;
    try {
      code = probeBpfProgramLoad({
        progType: probe.progType,
        expectedAttachType: probe.attach,
        attachBtfId,
        insns: returnProgram(probe.ret),
      });
    } catch (error) {
      return { status: "unknown", detail: `Cannot probe with bpf(): ${(error as Error).message}` };
    }
    if (code === 0) {
      results.push(`${probe.label} ok`);
    } else {
      all = false;
      results.push(`${probe.label} refused (errno ${code}${code === EPERM ? ", EPERM" : ""})`);
    }
  }
  return { status: all ? "yes" : "no", detail: results.join(", ") };
}

/** Runs every check; never throws (a check that fails to run is "unknown"). */
export async function collectChecks(): Promise<DoctorReport> {
  const root = isRoot();
  const config = await kernelConfig();
  const configSays = (key: string) => config?.get(key);
  const checks: Check[] = [];
  const add = (check: Check) => checks.push(check);

  let btf: Uint8Array | undefined;
  try {
    btf = Deno.readFileSync("/sys/kernel/btf/vmlinux");
  } catch { /* absent or unreadable */ }
  add({
    id: "btf",
    name: "BTF (/sys/kernel/btf/vmlinux)",
    status: btf ? "yes" : exists("/sys/kernel/btf/vmlinux") ? "unknown" : "no",
    required: true,
    detail: btf
      ? `${(btf.length / 1048576).toFixed(1)} MiB`
      : "kernel type information is missing or unreadable",
    install: `a kernel built with CONFIG_DEBUG_INFO_BTF=y (${KERNEL_HINT})`,
  });

  const cgroups = cgroup2Mount();
  add({
    id: "cgroup2",
    name: "cgroup v2",
    status: cgroups.mount ? "yes" : "no",
    required: true,
    detail: cgroups.mount
      ? `mounted at ${cgroups.mount}${cgroups.hybrid ? " (hybrid: cgroup v1 hierarchies mounted too)" : ""}`
      : "no cgroup2 mount in /proc/self/mountinfo",
    install: "mount cgroup v2 (systemd does by default; by hand: mount -t cgroup2 none /sys/fs/cgroup)",
  });

  const hooks = runProbes(
    [
      { label: "connect4", progType: PROG_CGROUP_SOCK_ADDR, attach: ATTACH_INET4_CONNECT, ret: 1 },
      { label: "connect6", progType: PROG_CGROUP_SOCK_ADDR, attach: ATTACH_INET6_CONNECT, ret: 1 },
      { label: "sendmsg4", progType: PROG_CGROUP_SOCK_ADDR, attach: ATTACH_UDP4_SENDMSG, ret: 1 },
      { label: "sendmsg6", progType: PROG_CGROUP_SOCK_ADDR, attach: ATTACH_UDP6_SENDMSG, ret: 1 },
      { label: "recvmsg4", progType: PROG_CGROUP_SOCK_ADDR, attach: ATTACH_UDP4_RECVMSG, ret: 1 },
      { label: "sock_create", progType: PROG_CGROUP_SOCK, attach: ATTACH_INET_SOCK_CREATE, ret: 1 },
      { label: "cgroup_skb/egress", progType: PROG_CGROUP_SKB, attach: ATTACH_INET_EGRESS, ret: 1 },
    ],
    root,
    btf,
  );
  add({
    id: "cgroup_bpf",
    name: "cgroup BPF hooks",
    ...hooks,
    detail: hooks.status === "unknown" && configSays("CONFIG_CGROUP_BPF")
      ? `${hooks.detail} (CONFIG_CGROUP_BPF=${configSays("CONFIG_CGROUP_BPF")})`
      : hooks.detail,
    required: true,
    install: `a kernel with CONFIG_CGROUP_BPF=y (${KERNEL_HINT}); run doctor as root to probe`,
  });

  add({
    id: "sockops",
    name: "sockops",
    ...runProbes([{ label: "sockops", progType: PROG_SOCK_OPS, attach: ATTACH_SOCK_OPS, ret: 1 }], root, btf),
    required: true,
    install: `a kernel with CONFIG_CGROUP_BPF=y (${KERNEL_HINT}); run doctor as root to probe`,
  });

  add({
    id: "tp_btf",
    name: "BTF tracepoints (tp_btf)",
    ...runProbes(
      [
        {
          label: "sock_send_length",
          progType: PROG_TRACING,
          attach: ATTACH_TRACE_RAW_TP,
          ret: 0,
          btfName: "btf_trace_sock_send_length",
        },
        {
          label: "inet_sock_set_state",
          progType: PROG_TRACING,
          attach: ATTACH_TRACE_RAW_TP,
          ret: 0,
          btfName: "btf_trace_inet_sock_set_state",
        },
      ],
      root,
      btf,
    ),
    required: true,
    install:
      `a kernel with BTF and BPF trampolines (CONFIG_DEBUG_INFO_BTF=y, ${KERNEL_HINT}); run doctor as root`,
  });

  const libDirs = [`/usr/lib/${Deno.build.arch}-linux-gnu`, "/usr/lib", "/lib", "/usr/lib64"];
  add({
    id: "libbpf",
    name: "libbpf.so.1",
    ...canLoadLibrary("libbpf.so.1", libDirs),
    required: true,
    install: "apt-get install libbpf1",
  });
  add({
    id: "libnetfilter_queue",
    name: "libnetfilter_queue.so.1",
    ...canLoadLibrary("libnetfilter_queue.so.1", libDirs),
    required: true,
    install: "apt-get install libnetfilter-queue1",
  });

  const targets = readText("/proc/net/ip_tables_targets");
  const nfqueueConfig = configSays("CONFIG_NETFILTER_XT_TARGET_NFQUEUE");
  let nfqueue: { status: Status; detail: string };
  if (targets?.split("\n").includes("NFQUEUE")) {
    nfqueue = { status: "yes", detail: "NFQUEUE listed in /proc/net/ip_tables_targets" };
  } else if (nfqueueConfig === "y" || nfqueueConfig === "m") {
    nfqueue = { status: "yes", detail: `CONFIG_NETFILTER_XT_TARGET_NFQUEUE=${nfqueueConfig}` };
  } else if (nfqueueConfig === undefined && config) {
    nfqueue = { status: "no", detail: "CONFIG_NETFILTER_XT_TARGET_NFQUEUE is not set" };
  } else {
    nfqueue = {
      status: "unknown",
      detail: targets === undefined
        ? "/proc/net/ip_tables_targets unreadable (needs root)"
        : "NFQUEUE not loaded yet",
    };
  }
  add({
    id: "xt_nfqueue",
    name: "xt_NFQUEUE",
    ...nfqueue,
    required: true,
    install: `kernel module xt_NFQUEUE (CONFIG_NETFILTER_XT_TARGET_NFQUEUE, ${KERNEL_HINT})`,
  });

  let conntrack: { status: Status; detail: string };
  const procConntrack = exists("/proc/net/nf_conntrack");
  if (root) {
    const client = new ConntrackClient({ timeoutMs: 500 });
    const result = await client.lookupByReply({
      protocol: "tcp",
      srcIp: "127.0.0.1",
      srcPort: 1,
      dstIp: "127.0.0.1",
      dstPort: 1,
    });
    client.close();
    if (result.found || /no conntrack entry/.test(result.reason)) {
      conntrack = { status: "yes", detail: `ctnetlink answers (${result.micros} µs)` };
    } else {
      conntrack = { status: "no", detail: `ctnetlink query: ${result.reason}` };
    }
  } else {
    const netlinkConfig = configSays("CONFIG_NF_CT_NETLINK");
    conntrack = {
      status: "unknown",
      detail: `ctnetlink queries need root${procConntrack ? "; /proc/net/nf_conntrack present" : ""}${
        netlinkConfig ? `; CONFIG_NF_CT_NETLINK=${netlinkConfig}` : ""
      }`,
    };
  }
  add({
    id: "conntrack",
    name: "conntrack (ctnetlink)",
    ...conntrack,
    required: true,
    install:
      `kernel modules nf_conntrack and nf_conntrack_netlink (${KERNEL_HINT}); run doctor as root to probe`,
  });

  add({
    id: "iptables",
    name: "iptables",
    ...await binaryVersion("iptables"),
    required: true,
    install: "apt-get install iptables",
  });
  add({
    id: "nft",
    name: "nft (sidecar dns+nft level only)",
    ...await binaryVersion("nft"),
    required: false,
    install: "apt-get install nftables",
  });

  const deno = Deno.version.deno;
  add({
    id: "deno",
    name: "Deno",
    status: "yes",
    required: true,
    detail: deno === PINNED_DENO ? `Deno ${deno}` : `Deno ${deno} (egress is tested with ${PINNED_DENO})`,
    install: `npm package deno@${PINNED_DENO} (npx -y deno@${PINNED_DENO})`,
  });

  return { ok: checks.every((c) => !c.required || c.status === "yes"), root, checks };
}

const USAGE = "Usage: egress doctor [--json]\n\n" +
  "Prints whether each kernel feature, library and binary egress needs is present on this machine.\n" +
  "Exit 0 when every required item is present, 1 otherwise. Run as root for the kernel probes.";

export function formatReport(report: DoctorReport): string {
  const width = Math.max(...report.checks.map((c) => c.name.length));
  const lines = [`egress doctor${report.root ? "" : " (not root: kernel probes are skipped)"}`];
  for (const check of report.checks) {
    const tag = check.required ? "" : " (optional)";
    lines.push(`  ${check.status.padEnd(7)} ${check.name.padEnd(width)}  ${check.detail}${tag}`);
    if (check.status !== "yes") {
      lines.push(`  ${"".padEnd(7)} ${"".padEnd(width)}  install: ${check.install}`);
    }
  }
  const missing = report.checks.filter((c) => c.required && c.status !== "yes").map((c) => c.id);
  lines.push(report.ok ? "all required items present" : `not ready: ${missing.join(", ")}`);
  return lines.join("\n");
}

/** `egress doctor [--json]`: 0 when every required item is "yes", 1 otherwise, 2 on a usage error. */
export async function runDoctor(args: string[]): Promise<number> {
  let json = false;
  for (const arg of args) {
    if (arg === "--json") json = true;
    else if (arg === "-h" || arg === "--help") {
      console.log(USAGE);
      return 0;
    } else {
      console.error(`egress doctor: unknown argument ${arg}\n${USAGE}`);
      return 2;
    }
  }
  const report = await collectChecks();
  console.log(json ? JSON.stringify(report, null, 2) : formatReport(report));
  return report.ok ? 0 : 1;
}

if (import.meta.main) Deno.exit(await runDoctor(Deno.args));
