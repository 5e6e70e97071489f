// Raw libbpf bindings (Deno.dlopen of libbpf.so.1, Debian 12's libbpf 1.1 ABI). Only symbol tables
// and thin typed wrappers live here: no firewall or attribution logic. Pointers stay inside the
// wrapper classes (private fields) and never leave ffi/. Every handle has an idempotent close().
// libbpf 1.x returns NULL + errno from pointer APIs and negative error codes from the others.

import { cString, errno, libc } from "./libc.ts";

const LIBBPF_PATH = "libbpf.so.1";

const symbols = {
  bpf_object__open_file: { parameters: ["buffer", "pointer"], result: "pointer" },
  bpf_object__load: { parameters: ["pointer"], result: "i32" },
  bpf_object__close: { parameters: ["pointer"], result: "void" },
  bpf_object__find_program_by_name: { parameters: ["pointer", "buffer"], result: "pointer" },
  bpf_object__next_program: { parameters: ["pointer", "pointer"], result: "pointer" },
  bpf_object__find_map_by_name: { parameters: ["pointer", "buffer"], result: "pointer" },
  bpf_program__name: { parameters: ["pointer"], result: "pointer" },
  bpf_program__attach: { parameters: ["pointer"], result: "pointer" },
  bpf_program__attach_cgroup: { parameters: ["pointer", "i32"], result: "pointer" },
  bpf_link__pin: { parameters: ["pointer", "buffer"], result: "i32" },
  bpf_link__unpin: { parameters: ["pointer"], result: "i32" },
  bpf_link__destroy: { parameters: ["pointer"], result: "i32" },
  bpf_link__fd: { parameters: ["pointer"], result: "i32" },
  bpf_link__open: { parameters: ["buffer"], result: "pointer" },
  bpf_map__fd: { parameters: ["pointer"], result: "i32" },
  bpf_map_lookup_elem: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  bpf_map_update_elem: { parameters: ["i32", "buffer", "buffer", "u64"], result: "i32" },
  bpf_map_delete_elem: { parameters: ["i32", "buffer"], result: "i32" },
  bpf_map_get_next_key: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  libbpf_get_error: { parameters: ["pointer"], result: "i64" },
  libbpf_strerror: { parameters: ["i32", "buffer", "usize"], result: "i32" },
  libbpf_set_print: { parameters: ["function"], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

type Libbpf = Deno.DynamicLibrary<typeof symbols>["symbols"];

let library: Deno.DynamicLibrary<typeof symbols> | undefined;

/** Opens libbpf once; the error names the Debian package that provides it. */
function bpf(): Libbpf {
  if (!library) {
    try {
      library = Deno.dlopen(LIBBPF_PATH, symbols);
    } catch (error) {
      throw new Error(
        `Cannot load ${LIBBPF_PATH} (install the Debian package libbpf1): ${(error as Error).message}`,
      );
    }
    installPrintCallback(library.symbols);
  }
  return library.symbols;
}

/** True when libbpf.so.1 can be opened (for feature checks; never throws). */
export function libbpfAvailable(): boolean {
  try {
    bpf();
    return true;
  } catch {
    return false;
  }
}

/** libbpf's message for a (positive or negative) error code. */
export function libbpfStrerror(code: number): string {
  const buffer = new Uint8Array(256);
  bpf().libbpf_strerror(-Math.abs(code), buffer, BigInt(buffer.length));
  const end = buffer.indexOf(0);
  return new TextDecoder().decode(buffer.subarray(0, end < 0 ? buffer.length : end));
}

/** Error carrying the (positive) errno-style code, phrased "Cannot <what>: <libbpf message>". */
export class LibbpfError extends Error {
  constructor(readonly what: string, readonly code: number) {
    super(`Cannot ${what}: ${libbpfStrerror(code)} (error ${code})`);
    this.name = "LibbpfError";
  }
}

function check(what: string, result: number): void {
  if (result < 0) throw new LibbpfError(what, -result);
}

function checkPointer(what: string, pointer: Deno.PointerValue): Deno.PointerObject {
  if (pointer === null) {
    // libbpf_get_error(NULL) yields -errno of the failed call; read it before anything else runs.
    const code = -Number(bpf().libbpf_get_error(null));
    throw new LibbpfError(what, code > 0 ? code : errno() || 22);
  }
  return pointer;
}

// ---- log callback ------------------------------------------------------------------------------

export type LibbpfLogLevel = "warn" | "info" | "debug";
export type LibbpfLogHandler = (level: LibbpfLogLevel, message: string) => void;

const LEVELS: LibbpfLogLevel[] = ["warn", "info", "debug"];
let logHandler: LibbpfLogHandler | undefined;
let printCallback:
  | Deno.UnsafeCallback<{ parameters: ["i32", "pointer", "pointer"]; result: "i32" }>
  | undefined;

/**
 * Routes libbpf's messages (including the verifier log of a rejected program, at level "warn") to
 * `handler`; undefined silences them. libbpf calls it synchronously on the calling thread.
 */
export function setLibbpfLogHandler(handler: LibbpfLogHandler | undefined): void {
  logHandler = handler;
  bpf();
}

function installPrintCallback(symbols: Libbpf): void {
  const formatted = new Uint8Array(8192);
  printCallback = new Deno.UnsafeCallback(
    { parameters: ["i32", "pointer", "pointer"], result: "i32" },
    (level, format, args) => {
      if (!logHandler || format === null) return 0;
      const length = libc().vsnprintf(formatted, BigInt(formatted.length), format, args);
      if (length < 0) return 0;
      const text = new TextDecoder().decode(formatted.subarray(0, Math.min(length, formatted.length - 1)));
      try {
        logHandler(LEVELS[level] ?? "debug", text.replace(/\n$/, ""));
      } catch {
        // A failing log sink must not unwind through libbpf's C frames.
      }
      return length;
    },
  );
  symbols.libbpf_set_print(printCallback.pointer);
}

// ---- objects, programs, links, maps -------------------------------------------------------------

/** An opened (and later loaded) BPF object file. Programs and maps belong to it. */
export class BpfObject {
  #pointer: Deno.PointerObject | null;
  #links = new Set<BpfLink>();

  private constructor(pointer: Deno.PointerObject, readonly path: string) {
    this.#pointer = pointer;
  }

  /** bpf_object__open_file: parses the ELF, does not touch the kernel yet. */
  static open(path: string): BpfObject {
    const pointer = checkPointer(`open BPF object ${path}`, bpf().bpf_object__open_file(cString(path), null));
    return new BpfObject(pointer, path);
  }

  #live(): Deno.PointerObject {
    if (this.#pointer === null) throw new Error(`Cannot use BPF object ${this.path}: it is closed`);
    return this.#pointer;
  }

  /** bpf_object__load: creates maps, relocates (CO-RE) and verifies every program. */
  load(): void {
    check(`load BPF object ${this.path}`, bpf().bpf_object__load(this.#live()));
  }

  programNames(): string[] {
    const names: string[] = [];
    let program: Deno.PointerValue = null;
    for (;;) {
      program = bpf().bpf_object__next_program(this.#live(), program);
      if (program === null) break;
      names.push(Deno.UnsafePointerView.getCString(bpf().bpf_program__name(program)!));
    }
    return names;
  }

  program(name: string): BpfProgram {
    const pointer = bpf().bpf_object__find_program_by_name(this.#live(), cString(name));
    if (pointer === null) throw new Error(`Cannot find BPF program ${name} in ${this.path}`);
    return new BpfProgram(this, pointer, name);
  }

  map(name: string): BpfMap {
    const pointer = bpf().bpf_object__find_map_by_name(this.#live(), cString(name));
    if (pointer === null) throw new Error(`Cannot find BPF map ${name} in ${this.path}`);
    const fd = bpf().bpf_map__fd(pointer);
    return new BpfMap(this, name, fd);
  }

  /** @internal used by BpfProgram */
  adopt(link: BpfLink): BpfLink {
    this.#links.add(link);
    return link;
  }

  get closed(): boolean {
    return this.#pointer === null;
  }

  /** Destroys links still open (pinned ones stay attached through their pin), then the object. */
  close(): void {
    if (this.#pointer === null) return;
    for (const link of this.#links) link.close();
    this.#links.clear();
    bpf().bpf_object__close(this.#pointer);
    this.#pointer = null;
  }
}

export class BpfProgram {
  #pointer: Deno.PointerObject;
  constructor(readonly object: BpfObject, pointer: Deno.PointerObject, readonly name: string) {
    this.#pointer = pointer;
  }

  #live(): Deno.PointerObject {
    if (this.object.closed) throw new Error(`Cannot use BPF program ${this.name}: its object is closed`);
    return this.#pointer;
  }

  /** bpf_program__attach: auto-attach by section (tp_btf/..., raw_tp/...). */
  attach(): BpfLink {
    const link = checkPointer(`attach BPF program ${this.name}`, bpf().bpf_program__attach(this.#live()));
    return this.object.adopt(new BpfLink(link, this.name));
  }

  /** bpf_program__attach_cgroup with an fd of the cgroup directory (O_RDONLY|O_DIRECTORY). */
  attachCgroup(cgroupFd: number): BpfLink {
    const link = checkPointer(
      `attach BPF program ${this.name} to a cgroup`,
      bpf().bpf_program__attach_cgroup(this.#live(), cgroupFd),
    );
    return this.object.adopt(new BpfLink(link, this.name));
  }
}

/** A BPF link. close() destroys the handle; a pinned link stays attached until unpin(). */
export class BpfLink {
  #pointer: Deno.PointerObject | null;
  constructor(pointer: Deno.PointerObject, readonly name: string) {
    this.#pointer = pointer;
  }

  /** bpf_link__open: reopens a link pinned in bpffs (e.g. left by a crashed daemon). */
  static open(pinPath: string): BpfLink {
    const pointer = checkPointer(`open pinned BPF link ${pinPath}`, bpf().bpf_link__open(cString(pinPath)));
    return new BpfLink(pointer, pinPath);
  }

  #live(): Deno.PointerObject {
    if (this.#pointer === null) throw new Error(`Cannot use BPF link ${this.name}: it is closed`);
    return this.#pointer;
  }

  get fd(): number {
    return bpf().bpf_link__fd(this.#live());
  }

  pin(path: string): void {
    check(`pin BPF link ${this.name} at ${path}`, bpf().bpf_link__pin(this.#live(), cString(path)));
  }

  /** Removes the pin file (for a link opened from a pin too). */
  unpin(): void {
    check(`unpin BPF link ${this.name}`, bpf().bpf_link__unpin(this.#live()));
  }

  get closed(): boolean {
    return this.#pointer === null;
  }

  close(): void {
    if (this.#pointer === null) return;
    bpf().bpf_link__destroy(this.#pointer);
    this.#pointer = null;
  }
}

/** A map of a loaded object, used through its fd with caller-owned key/value buffers. */
export class BpfMap {
  constructor(readonly object: BpfObject, readonly name: string, readonly fd: number) {}

  #fd(): number {
    if (this.object.closed) throw new Error(`Cannot use BPF map ${this.name}: its object is closed`);
    return this.fd;
  }

  /** Fills `value`; false when the key is absent (ENOENT). */
  lookup(key: Uint8Array<ArrayBuffer>, value: Uint8Array<ArrayBuffer>): boolean {
    const result = bpf().bpf_map_lookup_elem(this.#fd(), key, value);
    if (result === 0) return true;
    if (result === -2) return false;
    throw new LibbpfError(`look up in BPF map ${this.name}`, -result);
  }

  update(key: Uint8Array<ArrayBuffer>, value: Uint8Array<ArrayBuffer>, flags = 0): void {
    check(`update BPF map ${this.name}`, bpf().bpf_map_update_elem(this.#fd(), key, value, BigInt(flags)));
  }

  /** False when the key was absent. */
  delete(key: Uint8Array<ArrayBuffer>): boolean {
    const result = bpf().bpf_map_delete_elem(this.#fd(), key);
    if (result === 0) return true;
    if (result === -2) return false;
    throw new LibbpfError(`delete from BPF map ${this.name}`, -result);
  }

  /** Writes the key after `key` (the first key when `key` is null) into `next`; false at the end. */
  nextKey(key: Uint8Array<ArrayBuffer> | null, next: Uint8Array<ArrayBuffer>): boolean {
    const result = bpf().bpf_map_get_next_key(this.#fd(), key, next);
    if (result === 0) return true;
    if (result === -2) return false;
    throw new LibbpfError(`iterate BPF map ${this.name}`, -result);
  }
}
