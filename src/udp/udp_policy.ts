// Policy side of the NFQUEUE consumer: one synchronous verdict per queued UDP packet.
//
// The packet is seen in mangle OUTPUT/PREROUTING, before NAT, so its destination is the original
// one and the sender can be attributed. A DNS query (port 53, or a payload shaped like a query on
// any port) is recorded in the rendezvous table and sent back through the hook with the DNS mark,
// so nat REDIRECTs it to the DNS proxy, which judges it. Any other datagram is a `udp` event:
// allowed ⇒ sent back (NF_REPEAT) with the allowed-flow mark, which the steering rules save to the
// connmark, so later packets of the flow skip the queue; denied ⇒ dropped. Anything unexpected
// (not IPv4/UDP, fragments, malformed, an exception, a packet already marked by us) ⇒ drop.

import type { Enforcer } from "../policy/enforcer.ts";
import type { Policy } from "../policy/policy.ts";
import type { ConnectionEvent } from "../policy/types.ts";
import type { ProcessInfo as KernelProcessInfo, QueuedPacket } from "../kernel/attribution.ts";
import type { ProcessInfo } from "../proc/process_info.ts";
import { ProcReader } from "../proc/process.ts";
import { ipv4ToString, newIpv4UdpInfo, parseIpv4UdpInto } from "../proto/ipv4_udp.ts";
import { looksLikeDnsQuery, readDnsQuestions } from "../proto/dns_detect.ts";
import type { Rendezvous, RendezvousScope } from "../dns/rendezvous.ts";
import {
  addDecisionFields,
  addProcessFields,
  type ConnectionLogSink,
  type OperationalSink,
  silentOperationalLog,
  withProcess,
} from "../dns/decision_log.ts";
import type { ConnectionLogEvent } from "../log/connection_log.ts";
import type { SteeringMarks } from "../netfilter/rules.ts";
import type { NfqueueVerdict, QueuedPacket as NfqueuePacket } from "./nfqueue.ts";

/** The packet as the nfqueue consumer hands it over (only what is read here). */
export type UdpQueuedPacket = Pick<NfqueuePacket, "bytes" | "payloadOffset" | "payloadLength" | "mark">;

/** one `udp` line per flow, a denied flow at most every 60 s (src/udp/flow_table.ts FlowLogLimiter) */
export interface FlowLimiter {
  shouldLogKey(key: string): boolean;
}

/** The mark bits the steering rules use (src/netfilter/rules.ts SteeringMarks): single bits. */
export type UdpMarks = Pick<SteeringMarks, "dns" | "allowedFlow">;

/** Why the last verdict was given (counters, tests). */
export type VerdictKind =
  | "dns"
  | "allowed"
  | "denied"
  | "malformed"
  | "not_udp"
  | "fragment"
  | "loop"
  | "error";

export type UdpPacketCounters = Record<VerdictKind, number>;

export interface PacketAttribution {
  lookupPacket(packet: QueuedPacket): KernelProcessInfo | undefined;
}

export type UdpPacketHandlerOptions = {
  /** current enforcer (a policy reload swaps it) */
  getEnforcer: () => Enforcer;
  /** current policy, for the rule source text in log lines */
  getPolicy?: () => Policy | undefined;
  /** absent ⇒ every sender is unknown */
  attribution?: PacketAttribution;
  /** synchronous process description for an attributed pid (exe, cmdline, cgroup…) */
  describe?: (pid: number) => ProcessInfo | undefined;
  rendezvous: Rendezvous;
  log: ConnectionLogSink;
  oplog?: OperationalSink;
  marks: UdpMarks;
  flowLimiter: FlowLimiter;
  /** whether a source address is this network namespace's own (rendezvous and attribution scope) */
  isLocal: (ip: string) => boolean;
  audit?: boolean;
  now?: () => number;
};

/**
 * A synchronous `describe` for the handler: exe, cmdline and cgroup from /proc (no Docker image or
 * trusted step context: those need async lookups; the DNS proxy path gets them the same way).
 */
export function procDescriber(
  reader: ProcReader = new ProcReader(),
): (pid: number) => ProcessInfo | undefined {
  return (pid) => {
    const snapshot = reader.read(pid, {});
    if (!snapshot) return { pid };
    const info: ProcessInfo = { pid };
    if (snapshot.exe !== undefined) info.exe = snapshot.exe;
    if (snapshot.cmdline !== undefined) info.cmdline = snapshot.cmdline;
    if (snapshot.cgroup !== undefined) info.cgroup = snapshot.cgroup;
    return info;
  };
}

function checkBit(bit: number, what: string): number {
  if (!Number.isInteger(bit) || bit <= 0 || bit > 0xffffffff || ((bit >>> 0) & ((bit >>> 0) - 1)) !== 0) {
    throw new TypeError(`Cannot create UDP packet handler: marks.${what} must be a single bit`);
  }
  return bit >>> 0;
}

export type UdpPacketHandler = ((packet: UdpQueuedPacket) => NfqueueVerdict) & {
  readonly counters: UdpPacketCounters;
  /** why the last verdict was given */
  readonly lastKind: VerdictKind;
};

const DROP_VERDICT: NfqueueVerdict = Object.freeze({ verdict: "drop" });

/** Builds the synchronous per-packet function for the nfqueue consumer. */
export function createUdpPacketHandler(options: UdpPacketHandlerOptions): UdpPacketHandler {
  const dnsBit = checkBit(options.marks?.dns, "dns");
  const allowedBit = checkBit(options.marks?.allowedFlow, "allowedFlow");
  if (dnsBit === allowedBit) {
    throw new TypeError("Cannot create UDP packet handler: marks.dns and marks.allowedFlow must differ");
  }
  const ourBits = (dnsBit | allowedBit) >>> 0;
  const oplog = options.oplog ?? silentOperationalLog;
  const now = options.now ?? Date.now;
  const audit = options.audit === true;
  const info = newIpv4UdpInfo();
  // One reused verdict object for marked verdicts: read before the next packet (nfqueue does).
  const marked: { verdict: "repeat"; mark: number } = { verdict: "repeat", mark: 0 };
  const counters: UdpPacketCounters = {
    dns: 0,
    allowed: 0,
    denied: 0,
    malformed: 0,
    not_udp: 0,
    fragment: 0,
    loop: 0,
    error: 0,
  };
  let lastKind: VerdictKind = "error";
  let lastLoopWarning = -Infinity;

  function drop(kind: VerdictKind): NfqueueVerdict {
    counters[kind]++;
    lastKind = kind;
    return DROP_VERDICT;
  }

  function repeatWith(kind: VerdictKind, currentMark: number, bit: number): NfqueueVerdict {
    counters[kind]++;
    lastKind = kind;
    marked.mark = (currentMark | bit) >>> 0;
    return marked;
  }

  function attribute(srcIp: string, dstIp: string): ProcessInfo | undefined {
    const found = options.attribution?.lookupPacket({
      protocol: "udp",
      srcIp,
      srcPort: info.srcPort,
      dstIp,
      dstPort: info.dstPort,
    });
    if (!found) return undefined;
    return options.describe?.(found.pid) ?? { pid: found.pid };
  }

  function onDnsQuery(packet: UdpQueuedPacket): NfqueueVerdict {
    const start = info.payloadOffset; // already counted from the start of packet.bytes
    const questions = readDnsQuestions(packet.bytes.subarray(start, start + info.payloadLength));
    if (questions.kind === "ok") {
      const srcIp = ipv4ToString(info.srcAddr);
      const dstIp = ipv4ToString(info.dstAddr);
      const scope: RendezvousScope = options.isLocal(srcIp) ? "netns" : "source";
      options.rendezvous.record({
        scope,
        clientIp: srcIp,
        clientPort: info.srcPort,
        id: questions.id,
        name: questions.questions[0]?.name ?? "",
        resolverIp: dstIp,
        resolverPort: info.dstPort,
        process: attribute(srcIp, dstIp),
      });
    }
    // Unreadable port-53 payloads still go to the proxy, which drops and logs them.
    return repeatWith("dns", packet.mark, dnsBit);
  }

  function onFlow(packet: UdpQueuedPacket): NfqueueVerdict {
    const srcIp = ipv4ToString(info.srcAddr);
    const dstIp = ipv4ToString(info.dstAddr);
    const process = attribute(srcIp, dstIp);
    const event: ConnectionEvent = withProcess(
      { type: "udp", dst_ip: dstIp, dst_port: info.dstPort },
      process,
    );
    const decision = options.getEnforcer().decide(event);
    const flowKey = `${
      decision.allowed ? "a" : "d"
    }${info.srcAddr}:${info.srcPort}>${info.dstAddr}:${info.dstPort}`;
    if (options.flowLimiter.shouldLogKey(flowKey)) {
      const line: ConnectionLogEvent = {
        type: "udp",
        dst_ip: dstIp,
        dst_port: info.dstPort,
        src_port: info.srcPort,
      };
      addDecisionFields(line, decision, options.getPolicy?.(), audit);
      options.log.write(addProcessFields(line, process));
    }
    if (!decision.allowed) return drop("denied");
    return repeatWith("allowed", packet.mark, allowedBit);
  }

  const onPacket = function onPacket(packet: UdpQueuedPacket): NfqueueVerdict {
    try {
      if (((packet.mark >>> 0) & ourBits) !== 0) {
        // Already judged once: the steering rules should have let it pass. Dropping avoids a
        // verdict loop; the warning tells the operator the rules are wrong.
        const at = now();
        if (at - lastLoopWarning >= 60_000) {
          lastLoopWarning = at;
          oplog.warn(
            "UDP packet marked by egress came back to the queue: dropped (check the steering rules)",
          );
        }
        return drop("loop");
      }
      const status = parseIpv4UdpInto(packet.bytes, info, packet.payloadOffset, packet.payloadLength);
      if (status === "not_udp") return drop("not_udp");
      if (status === "fragment" || (status === "udp" && info.isFragment)) return drop("fragment");
      if (status !== "udp") return drop("malformed");
      const start = info.payloadOffset; // already counted from the start of packet.bytes
      if (info.dstPort === 53 || looksLikeDnsQuery(packet.bytes, start, info.payloadLength)) {
        return onDnsQuery(packet);
      }
      return onFlow(packet);
    } catch (error) {
      oplog.error(`Cannot judge UDP packet: ${error instanceof Error ? error.message : String(error)}`);
      return drop("error");
    }
  };
  Object.defineProperty(onPacket, "counters", { value: counters });
  Object.defineProperty(onPacket, "lastKind", { get: () => lastKind });
  return onPacket as UdpPacketHandler;
}
