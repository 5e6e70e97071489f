// Raw libc bindings (Deno.dlopen). Only symbol tables and thin, typed wrappers live here:
// no firewall or attribution logic, and no pointer ever leaves ffi/.
// Library handles are opened lazily on first use so that importing this file costs nothing.

const LIBC_PATH = "libc.so.6";

const symbols = {
  __errno_location: { parameters: [], result: "pointer" },
  strerror: { parameters: ["i32"], result: "pointer" },
  getpid: { parameters: [], result: "i32" },
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  send: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
  sendto: { parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"], result: "isize" },
  recv: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
  recvfrom: { parameters: ["i32", "buffer", "usize", "i32", "buffer", "buffer"], result: "isize" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  // Blocking wait declared nonblocking so it runs on a worker thread and returns a Promise.
  poll_async: { name: "poll", parameters: ["buffer", "u64", "i32"], result: "i32", nonblocking: true },
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  // bpf(2) through syscall(2): used only to probe which program types this kernel loads.
  syscall_bpf: { name: "syscall", parameters: ["i64", "i64", "buffer", "u64"], result: "i64" },
  // libbpf's print callback hands over a va_list (a pointer on x86_64 and, by reference, aarch64).
  vsnprintf: { parameters: ["buffer", "usize", "pointer", "pointer"], result: "i32" },
  mount: { parameters: ["buffer", "buffer", "buffer", "u64", "pointer"], result: "i32" },
  // eventfd wakes a poll() parked on a worker thread (nfqueue consumer close()).
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  // Unix stream server with peer credentials (src/control/peer_server.ts).
  listen: { parameters: ["i32", "i32"], result: "i32" },
  accept4: { parameters: ["i32", "buffer", "buffer", "i32"], result: "i32" },
  unlink: { parameters: ["buffer"], result: "i32" },
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

type LibC = Deno.DynamicLibrary<typeof symbols>["symbols"];

let library: Deno.DynamicLibrary<typeof symbols> | undefined;

/** Opens libc once; throws a message that names what is missing. */
export function libc(): LibC {
  if (!library) {
    try {
      library = Deno.dlopen(LIBC_PATH, symbols);
    } catch (error) {
      throw new Error(`Cannot load ${LIBC_PATH} (install package libc6): ${(error as Error).message}`);
    }
  }
  return library.symbols;
}

// Constants for Linux x86_64 / aarch64 (identical on both for the values used here).
export const O_RDONLY = 0;
export const O_DIRECTORY = 0o200000;
export const O_CLOEXEC = 0o2000000;
export const AF_UNIX = 1;
export const AF_INET = 2;
export const AF_INET6 = 10;
export const AF_NETLINK = 16;
export const SOCK_STREAM = 1;
export const SOCK_DGRAM = 2;
export const SOCK_RAW = 3;
export const SOCK_CLOEXEC = 0o2000000;
export const SOCK_NONBLOCK = 0o4000;
export const SOL_SOCKET = 1;
export const SO_PEERCRED = 17;
export const SO_MARK = 36;
export const SO_REUSEADDR = 2;
export const MSG_DONTWAIT = 0x40;
export const POLLIN = 0x1;
export const EAGAIN = 11;
export const EINTR = 4;
export const ENOENT = 2;
export const EPERM = 1;
export const ENOBUFS = 105;
export const SO_RCVBUF = 8;
export const SO_RCVBUFFORCE = 33;
export const EFD_CLOEXEC = 0o2000000;
export const EFD_NONBLOCK = 0o4000;
export const POLLOUT = 0x4;
export const POLLERR = 0x8;
export const POLLHUP = 0x10;
export const MSG_NOSIGNAL = 0x4000;
export const SHUT_WR = 1;

/** errno of the last failing call on this thread; read it right after the call. */
export function errno(): number {
  const pointer = libc().__errno_location();
  return pointer ? new Deno.UnsafePointerView(pointer).getInt32(0) : 0;
}

export function strerror(code: number): string {
  const pointer = libc().strerror(code);
  return pointer ? Deno.UnsafePointerView.getCString(pointer) : `errno ${code}`;
}

/** Error carrying errno, phrased "Cannot <what>: <strerror>". */
export class OsError extends Error {
  constructor(readonly what: string, readonly code: number) {
    super(`Cannot ${what}: ${strerror(code)} (errno ${code})`);
    this.name = "OsError";
  }
}

/** NUL-terminated copy of a JS string for `buffer` parameters. */
export function cString(text: string): Uint8Array<ArrayBuffer> {
  const bytes = new TextEncoder().encode(text);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

/** open(2) that throws OsError; returns the fd. */
export function openFile(path: string, flags: number): number {
  const fd = libc().open(cString(path), flags | O_CLOEXEC, 0);
  if (fd < 0) throw new OsError(`open ${path}`, errno());
  return fd;
}

export function closeFd(fd: number): void {
  if (fd >= 0) libc().close(fd);
}

const SYS_BPF = Deno.build.arch === "aarch64" ? 280 : 321;
const BPF_PROG_LOAD = 5;
const BPF_ATTR_SIZE = 128;

/**
 * Loads a program with bpf(BPF_PROG_LOAD) and closes it again at once: a feature probe, nothing is
 * attached. `insns` is the raw instruction bytes. Returns 0 when the kernel accepted it, else errno.
 */
export function probeBpfProgramLoad(probe: {
  progType: number;
  expectedAttachType: number;
  attachBtfId?: number;
  insns: Uint8Array<ArrayBuffer>;
}): number {
  const license = cString("GPL");
  const attr = new Uint8Array(BPF_ATTR_SIZE);
  const view = new DataView(attr.buffer);
  view.setUint32(0, probe.progType, true);
  view.setUint32(4, probe.insns.length / 8, true);
  view.setBigUint64(8, BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(probe.insns))), true);
  view.setBigUint64(16, BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(license))), true);
  view.setUint32(68, probe.expectedAttachType, true);
  view.setUint32(108, probe.attachBtfId ?? 0, true);
  const fd = Number(libc().syscall_bpf(BigInt(SYS_BPF), BigInt(BPF_PROG_LOAD), attr, BigInt(BPF_ATTR_SIZE)));
  if (fd < 0) return errno() || -1;
  libc().close(fd);
  return 0;
}

const BPF_MAP_LOOKUP_ELEM = 1;
const BPF_OBJ_PIN = 6;
const BPF_OBJ_GET = 7;

function pointerValue(buffer: Uint8Array<ArrayBuffer>): bigint {
  return BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buffer)));
}

/** bpf(BPF_OBJ_PIN): pins a BPF object (here: a map) by fd at a bpffs path. Throws OsError. */
export function bpfObjPin(fd: number, path: string): void {
  const pathname = cString(path);
  const attr = new Uint8Array(BPF_ATTR_SIZE);
  const view = new DataView(attr.buffer);
  view.setBigUint64(0, pointerValue(pathname), true);
  view.setUint32(8, fd, true);
  const result = Number(
    libc().syscall_bpf(BigInt(SYS_BPF), BigInt(BPF_OBJ_PIN), attr, BigInt(BPF_ATTR_SIZE)),
  );
  if (result < 0) throw new OsError(`pin BPF object at ${path}`, errno());
}

/** bpf(BPF_OBJ_GET): opens a pinned BPF object; returns its fd. Throws OsError. */
export function bpfObjGet(path: string): number {
  const pathname = cString(path);
  const attr = new Uint8Array(BPF_ATTR_SIZE);
  new DataView(attr.buffer).setBigUint64(0, pointerValue(pathname), true);
  const fd = Number(libc().syscall_bpf(BigInt(SYS_BPF), BigInt(BPF_OBJ_GET), attr, BigInt(BPF_ATTR_SIZE)));
  if (fd < 0) throw new OsError(`open pinned BPF object ${path}`, errno());
  return fd;
}

/** bpf(BPF_MAP_LOOKUP_ELEM) on a map fd: fills `value`; false when the key is absent. */
export function bpfMapLookup(
  fd: number,
  key: Uint8Array<ArrayBuffer>,
  value: Uint8Array<ArrayBuffer>,
): boolean {
  const attr = new Uint8Array(BPF_ATTR_SIZE);
  const view = new DataView(attr.buffer);
  view.setUint32(0, fd, true);
  view.setBigUint64(8, pointerValue(key), true);
  view.setBigUint64(16, pointerValue(value), true);
  const result = Number(
    libc().syscall_bpf(BigInt(SYS_BPF), BigInt(BPF_MAP_LOOKUP_ELEM), attr, BigInt(BPF_ATTR_SIZE)),
  );
  if (result === 0) return true;
  const code = errno();
  if (code === ENOENT) return false;
  throw new OsError(`look up in BPF map fd ${fd}`, code);
}
