// Process attribution: maps what the proxy sees of an accepted connection, or what the NFQUEUE
// consumer sees of a queued packet, to the process that opened it, through the egress_conns map
// written by bpf/egress_attr.bpf.c. Key and value layouts mirror bpf/egress.h.
// A miss means "unknown process": never an allow (docs/kernel.md).

import type { BpfMap } from "../../ffi/libbpf.ts";
import { type EgressBpf, hostLittleEndian } from "./bpf_loader.ts";
import { queryOriginalByReply } from "./conntrack.ts";

export interface ProcessInfo {
  pid: number;
  uid: number;
  comm: string;
  cgroupId: bigint;
  /** Original (pre-NAT) destination. */
  dst_ip: string;
  dst_port: number;
}

export interface AcceptedConnection {
  /** The client as the proxy sees it (Deno.Conn.remoteAddr). */
  peerIp: string;
  peerPort: number;
  /** The proxy's end (Deno.Conn.localAddr): the REDIRECT target. */
  localIp: string;
  localPort: number;
}

export interface QueuedPacket {
  protocol: "tcp" | "udp";
  srcIp: string;
  srcPort: number;
  dstIp: string;
  dstPort: number;
}

export interface Tuple {
  srcIp: string;
  srcPort: number;
  dstIp: string;
  dstPort: number;
}

/** conntrack lookup: reply tuple in, original tuple out (src/kernel/conntrack.ts). */
export type OriginalByReply = (
  t: { protocol: "tcp" | "udp"; srcIp: string; srcPort: number; dstIp: string; dstPort: number },
) => Promise<Tuple | undefined>;

/** The full map key, as the BPF side writes it. */
export interface ConnKey {
  protocol: "tcp" | "udp";
  dstIp: string;
  dstPort: number;
  clientPort: number;
  scope: { kind: "netns"; cookie: bigint } | { kind: "source"; ip: string };
}

const PROTOCOL_NUMBER = { tcp: 6, udp: 17 } as const;
const SCOPE_NETNS = 1;
const SCOPE_SOURCE = 2;
export const KEY_SIZE = 24;
export const VALUE_SIZE = 48;

/** "a.b.c.d" (also "::ffff:a.b.c.d") → 4 bytes; undefined for anything else (pure). */
export function parseIpv4(text: string): Uint8Array | undefined {
  const plain = text.toLowerCase().startsWith("::ffff:") ? text.slice(7) : text;
  const parts = plain.split(".");
  if (parts.length !== 4) return undefined;
  const bytes = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    if (!/^\d{1,3}$/.test(parts[i])) return undefined;
    const value = Number(parts[i]);
    if (value > 255) return undefined;
    bytes[i] = value;
  }
  return bytes;
}

function requireIpv4(text: string, what: string): Uint8Array {
  const bytes = parseIpv4(text);
  if (!bytes) throw new Error(`Cannot attribute ${what} ${JSON.stringify(text)}: not an IPv4 address`);
  return bytes;
}

function requirePort(port: number, what: string): number {
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`Cannot attribute ${what} ${port}: not a port number`);
  }
  return port;
}

/** Encodes a key exactly as struct egress_conn_key (pure). */
export function encodeKey(key: ConnKey): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(KEY_SIZE);
  const view = new DataView(out.buffer);
  out.set(requireIpv4(key.dstIp, "destination"), 0);
  view.setUint16(4, requirePort(key.dstPort, "destination port"), hostLittleEndian);
  view.setUint16(6, requirePort(key.clientPort, "client port"), hostLittleEndian);
  out[8] = PROTOCOL_NUMBER[key.protocol];
  if (key.scope.kind === "netns") {
    out[9] = SCOPE_NETNS;
    view.setBigUint64(16, key.scope.cookie, hostLittleEndian);
  } else {
    out[9] = SCOPE_SOURCE;
    // The BPF side stores the network-order __u32 widened to __u64: its bytes lead on little endian.
    out.set(requireIpv4(key.scope.ip, "source"), hostLittleEndian ? 16 : 20);
  }
  return out;
}

export interface ConnValue {
  tgid: number;
  pid: number;
  uid: number;
  gid: number;
  cgroupId: bigint;
  recordedNs: bigint;
  comm: string;
}

/** Decodes struct egress_conn_value (pure). */
export function decodeValue(bytes: Uint8Array): ConnValue {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const commBytes = bytes.subarray(24, 40);
  const end = commBytes.indexOf(0);
  return {
    tgid: view.getUint32(0, hostLittleEndian),
    uid: view.getUint32(4, hostLittleEndian),
    cgroupId: view.getBigUint64(8, hostLittleEndian),
    recordedNs: view.getBigUint64(16, hostLittleEndian),
    comm: new TextDecoder().decode(end < 0 ? commBytes : commBytes.subarray(0, end)),
    pid: view.getUint32(40, hostLittleEndian),
    gid: view.getUint32(44, hostLittleEndian),
  };
}

function isLoopback(ip: string): boolean {
  return parseIpv4(ip)?.[0] === 127;
}

export interface AttributionOptions {
  /** conntrack by reply tuple; default: queryOriginalByReply of src/kernel/conntrack.ts. */
  originalByReply?: OriginalByReply;
  /** Whether a client address belongs to this daemon's netns; default: loopback or an interface address. */
  isLocal?: (ip: string) => boolean;
}

/** Lookups against one egress instance's map. Synchronous map reads (≈ µs); no caching. */
export class Attribution {
  #conns: () => BpfMap | undefined;
  #netnsCookie: bigint;
  #originalByReply: OriginalByReply;
  #isLocal: (ip: string) => boolean;
  #value = new Uint8Array(VALUE_SIZE);

  constructor(bpf: EgressBpf, options: AttributionOptions = {}) {
    this.#conns = () => bpf.conns;
    this.#netnsCookie = bpf.netnsCookie;
    this.#originalByReply = options.originalByReply ?? ((tuple) => queryOriginalByReply(tuple));
    this.#isLocal = options.isLocal ?? isLocalAddress;
  }

  /** Exact lookup of one key; undefined on a miss or when the instance is closed. */
  lookupKey(key: ConnKey): ConnValue | undefined {
    const conns = this.#conns();
    if (!conns) return undefined;
    return conns.lookup(encodeKey(key), this.#value) ? decodeValue(this.#value) : undefined;
  }

  /**
   * The process behind a flow given its original (pre-NAT) tuple, seen from the client side.
   * A client whose source address is local (loopback or an address of this netns) is keyed by
   * the netns; any other client (bridge, veth) by its source address. Exactly one key is tried:
   * a second guess could hand one namespace's process to another's connection.
   */
  lookupOriginal(protocol: "tcp" | "udp", original: Tuple): ProcessInfo | undefined {
    const scope: ConnKey["scope"] = this.#isLocal(original.srcIp)
      ? { kind: "netns", cookie: this.#netnsCookie }
      : { kind: "source", ip: normalizeIpv4(original.srcIp) };
    const value = this.lookupKey({
      protocol,
      dstIp: normalizeIpv4(original.dstIp),
      dstPort: original.dstPort,
      clientPort: original.srcPort,
      scope,
    });
    if (!value) return undefined;
    return {
      pid: value.tgid,
      uid: value.uid,
      comm: value.comm,
      cgroupId: value.cgroupId,
      dst_ip: normalizeIpv4(original.dstIp),
      dst_port: original.dstPort,
    };
  }

  /** A queued packet is seen before NAT: its tuple is the original one. */
  lookupPacket(packet: QueuedPacket): ProcessInfo | undefined {
    return this.lookupOriginal(packet.protocol, packet);
  }

  /**
   * An accepted (REDIRECTed) TCP connection: conntrack by reply tuple gives the original
   * destination and the pre-NAT client port. Without a conntrack entry the connection was not
   * translated and the proxy's own address is the destination.
   */
  async lookupAccepted(connection: AcceptedConnection): Promise<ProcessInfo | undefined> {
    const original = await this.#originalByReply({
      protocol: "tcp",
      srcIp: normalizeIpv4(connection.localIp),
      srcPort: connection.localPort,
      dstIp: normalizeIpv4(connection.peerIp),
      dstPort: connection.peerPort,
    });
    return this.lookupOriginal(
      "tcp",
      original ?? {
        srcIp: connection.peerIp,
        srcPort: connection.peerPort,
        dstIp: connection.localIp,
        dstPort: connection.localPort,
      },
    );
  }
}

function normalizeIpv4(ip: string): string {
  return ip.toLowerCase().startsWith("::ffff:") ? ip.slice(7) : ip;
}

/** IPv4 addresses of this process's network namespace, re-read at most every 2 s. */
let localAddresses: { at: number; set: Set<string> } | undefined;

export function isLocalAddress(ip: string): boolean {
  if (isLoopback(ip)) return true;
  const now = Date.now();
  if (!localAddresses || now - localAddresses.at > 2000) {
    const set = new Set<string>();
    for (const entry of Deno.networkInterfaces()) if (entry.family === "IPv4") set.add(entry.address);
    localAddresses = { at: now, set };
  }
  return localAddresses.set.has(normalizeIpv4(ip));
}
