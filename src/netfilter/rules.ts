// The packet-steering ruleset (runner.md §8) as `iptables-restore --noflush` text. Pure: no Deno
// API, no node: module. Every rule lives in a chain of our own (EGRESS-*), reached by one jump that
// is inserted first in a built-in chain, so removal never touches anybody else's rules.
//
// Rules are written in the exact form `iptables-save` prints them (`-p tcp -m tcp --dport`, quoted
// cgroup paths, `--nfmask/--ctmask`), so verification can compare the saved rules token by token.
// docs/steering.md explains every rule.

/** Prefix of every chain egress owns; anything else in a table belongs to somebody else. */
export const CHAIN_PREFIX = "EGRESS-";

/**
 * Mark bits. Each is a single bit matched and set with itself as the mask, so every other bit of the
 * packet mark and the conntrack mark survives. Bits 24–26 are used by neither Docker, kube-proxy
 * (0x4000, 0x8000), Cilium (0x0f00 and lower), Tailscale (0xff0000), Weave, WireGuard's wg-quick
 * (0xca6c) nor Istio (0x539); Calico claims 0xffff0000 by default, so pass other bits there.
 */
export interface SteeringMarks {
  /** Packet mark set by the NFQUEUE consumer on a UDP packet that is DNS (verdict NF_REPEAT). */
  dns: number;
  /**
   * Set by the consumer as a packet mark on the first packet of an allowed UDP flow (NF_REPEAT); the
   * rules copy it into the conntrack mark, and later packets with that connmark skip the queue.
   */
  allowedFlow: number;
  /** Packet mark for a direct connection to egress's own ports: set in mangle, dropped in filter. */
  direct: number;
}

export const DEFAULT_MARKS: Readonly<SteeringMarks> = Object.freeze({
  dns: 0x0100_0000,
  allowedFlow: 0x0200_0000,
  direct: 0x0400_0000,
});

export interface SteeringConfig {
  /** Transparent TCP proxy port (cli.md `--proxy-port`, default 15080). */
  proxyPort: number;
  /** DNS proxy port, UDP and TCP (`--dns-port`, default 15053). */
  dnsPort: number;
  /** NFQUEUE number for UDP (`--queue-num`, default 15). */
  queueNum: number;
  /** cgroup v2 path (inside the hierarchy) of egress itself: its traffic is never steered. */
  exemptCgroupPath: string;
  /** cgroup v2 path of systemd-resolved, whose port-53 traffic is exempt. Must exist when given. */
  resolvedCgroupPath?: string;
  marks?: SteeringMarks;
}

export type ValidSteeringConfig = Omit<Required<SteeringConfig>, "resolvedCgroupPath"> & {
  resolvedCgroupPath: string | undefined;
};

export type SteeringTable = "filter" | "nat" | "mangle";

/** Install order: the drops exist before anything is marked or redirected. Removal is the reverse. */
export const STEERING_TABLES: readonly SteeringTable[] = ["filter", "nat", "mangle"];

/** A jump from a built-in chain into one of our chains; `matches` restrict which packets take it. */
export interface SteeringJump {
  from: string;
  matches: string;
  to: string;
}

export interface SteeringTableRules {
  table: SteeringTable;
  /** Our chains, each with its rules in order (the text after `-A <chain> `). */
  chains: Array<{ name: string; rules: string[] }>;
  jumps: SteeringJump[];
}

/** Packets that came in over any interface but loopback: bridges, veths, the uplink. */
const NOT_LOOPBACK = "! -i lo";

function fail(message: string): never {
  throw new Error(`Cannot build the packet-steering rules: ${message}`);
}

function checkPort(name: string, value: unknown): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1 || value > 65535) {
    fail(`${name} must be an integer from 1 to 65535 (got ${JSON.stringify(value)})`);
  }
  return value;
}

// Characters of systemd unit and slice names; quotes, spaces, backslashes and newlines could break
// out of the iptables-restore line, so they are refused rather than escaped.
const CGROUP_PATH = /^\/[A-Za-z0-9._@:+=,-]+(\/[A-Za-z0-9._@:+=,-]+)*$/;

function checkCgroupPath(name: string, value: unknown): string {
  if (typeof value !== "string" || !CGROUP_PATH.test(value)) {
    fail(
      `${name} must be a cgroup v2 path such as /system.slice/egress.scope, made of letters, digits and ` +
        `._@:+=,- (got ${JSON.stringify(value)})`,
    );
  }
  if (value.split("/").some((part) => part === "." || part === "..")) {
    fail(`${name} must not contain "." or ".." (got ${JSON.stringify(value)})`);
  }
  return value;
}

function isSingleBit(value: number): boolean {
  return Number.isInteger(value) && value > 0 && value <= 0x8000_0000 && (value & (value - 1)) === 0;
}

function checkMarks(value: unknown): SteeringMarks {
  if (value === undefined) return DEFAULT_MARKS;
  if (typeof value !== "object" || value === null) fail("marks must be an object {dns, allowedFlow, direct}");
  const marks = value as Record<string, unknown>;
  const names = ["dns", "allowedFlow", "direct"] as const;
  for (const name of names) {
    const bit = marks[name];
    if (typeof bit !== "number" || !isSingleBit(bit)) {
      fail(`marks.${name} must be a single bit such as 0x1000000 (got ${JSON.stringify(bit)})`);
    }
  }
  const bits = names.map((name) => marks[name] as number);
  if (new Set(bits).size !== bits.length) fail("marks.dns, marks.allowedFlow and marks.direct must differ");
  return { dns: bits[0], allowedFlow: bits[1], direct: bits[2] };
}

/** Checks a configuration and fills in the default marks; throws "Cannot build …" on bad input. */
export function validateSteeringConfig(config: SteeringConfig): ValidSteeringConfig {
  if (typeof config !== "object" || config === null) fail("the configuration must be an object");
  const proxyPort = checkPort("proxyPort", config.proxyPort);
  const dnsPort = checkPort("dnsPort", config.dnsPort);
  if (proxyPort === dnsPort) fail(`proxyPort and dnsPort must differ (both ${proxyPort})`);
  const queueNum = config.queueNum;
  if (typeof queueNum !== "number" || !Number.isInteger(queueNum) || queueNum < 0 || queueNum > 65535) {
    fail(`queueNum must be an integer from 0 to 65535 (got ${JSON.stringify(queueNum)})`);
  }
  const exemptCgroupPath = checkCgroupPath("exemptCgroupPath", config.exemptCgroupPath);
  const resolvedCgroupPath = config.resolvedCgroupPath === undefined
    ? undefined
    : checkCgroupPath("resolvedCgroupPath", config.resolvedCgroupPath);
  return {
    proxyPort,
    dnsPort,
    queueNum,
    exemptCgroupPath,
    resolvedCgroupPath,
    marks: checkMarks(config.marks),
  };
}

/** `0x1000000` as iptables-save prints mark values. */
export function hex(value: number): string {
  return "0x" + (value >>> 0).toString(16);
}

/** `value/mask` with the bit as its own mask: only that bit is tested or changed. */
function bit(value: number): string {
  return `${hex(value)}/${hex(value)}`;
}

/**
 * The mark a consumer passes to its verdict: NFQA_MARK replaces the whole packet mark, so the
 * packet's current mark is kept and only `bits` are added.
 */
export function withMarkBits(currentMark: number, bits: number): number {
  return (currentMark | bits) >>> 0;
}

/** The ruleset for one configuration, table by table in install order. */
export function buildSteeringRules(input: SteeringConfig): SteeringTableRules[] {
  const config = validateSteeringConfig(input);
  const { proxyPort, dnsPort, queueNum, marks } = config;
  const direct = bit(marks.direct);
  const dns = bit(marks.dns);
  const allowed = bit(marks.allowedFlow);
  const ownPorts = `${proxyPort},${dnsPort}`;

  // Only usable where a local socket is known (OUTPUT): xt_cgroup refuses PREROUTING and FORWARD.
  const exempt = [`-m cgroup --path "${config.exemptCgroupPath}" -j RETURN`];
  if (config.resolvedCgroupPath) {
    for (const protocol of ["udp", "tcp"]) {
      exempt.push(
        `-p ${protocol} -m ${protocol} --dport 53 -m cgroup --path "${config.resolvedCgroupPath}" -j RETURN`,
      );
    }
  }

  // mangle runs before nat: a direct connection to our ports is recognised while its destination
  // is still the one the client chose, and UDP is judged before NAT binds the flow.
  const mangleSteer = [
    `-p tcp -m addrtype --dst-type LOCAL -m multiport --dports ${ownPorts} -j MARK --set-xmark ${direct}`,
    `-p udp -m addrtype --dst-type LOCAL -m multiport --dports ${ownPorts} -j MARK --set-xmark ${direct}`,
    `-m mark --mark ${direct} -j RETURN`,
    // The consumer's verdict came back (NF_REPEAT re-runs this chain): never queue twice.
    `-p udp -m mark --mark ${dns} -j RETURN`,
    `-p udp -m mark --mark ${allowed} -j CONNMARK --save-mark --nfmask ${hex(marks.allowedFlow)} --ctmask ${
      hex(marks.allowedFlow)
    }`,
    `-p udp -m mark --mark ${allowed} -j RETURN`,
    // No --queue-bypass: while no consumer is bound the kernel drops the packet (fail closed).
    `-p udp -j NFQUEUE --queue-num ${queueNum}`,
  ];
  const replies = "-m conntrack --ctdir REPLY -j RETURN";
  // Fast path, first after replies: a UDP flow judged allowed once skips the cgroup match and the
  // two addrtype route lookups. Safe because a flow towards our own ports is marked direct on its
  // first packet and never reaches the consumer, so it can never carry this connmark.
  const fastPath = `-p udp -m connmark --mark ${allowed} -j RETURN`;

  const natSteer = [
    `-m mark --mark ${direct} -j RETURN`,
    `-p tcp -m tcp --dport 53 -j REDIRECT --to-ports ${dnsPort}`,
    `-p tcp -j REDIRECT --to-ports ${proxyPort}`,
    `-p udp -m mark --mark ${dns} -j REDIRECT --to-ports ${dnsPort}`,
  ];

  // Backstops: a new TCP connection or a DNS-marked datagram that escaped NAT (conntrack entry from
  // before the install, NOTRACK, a foreign nat rule ahead of ours) is dropped, not let through.
  const tcpNotRedirected =
    "-p tcp -m conntrack --ctstate NEW,UNTRACKED -m conntrack ! --ctstate DNAT -j DROP";
  const dnsNotRedirected = `-p udp -m mark --mark ${dns} -m conntrack ! --ctstate DNAT -j DROP`;
  const dropDirect = `-m mark --mark ${direct} -j DROP`;

  return [
    {
      table: "filter",
      chains: [
        {
          name: "EGRESS-OUTPUT",
          rules: [dropDirect, fastPath, ...exempt, tcpNotRedirected, dnsNotRedirected],
        },
        { name: "EGRESS-INPUT", rules: [dropDirect, tcpNotRedirected, dnsNotRedirected] },
        // A redirected packet is delivered locally (INPUT): whatever new TCP or DNS is forwarded escaped.
        {
          name: "EGRESS-FORWARD",
          rules: [
            "-p tcp -m conntrack --ctstate NEW,UNTRACKED -j DROP",
            `-p udp -m mark --mark ${dns} -j DROP`,
          ],
        },
      ],
      jumps: [
        { from: "INPUT", matches: NOT_LOOPBACK, to: "EGRESS-INPUT" },
        { from: "FORWARD", matches: NOT_LOOPBACK, to: "EGRESS-FORWARD" },
        { from: "OUTPUT", matches: "", to: "EGRESS-OUTPUT" },
      ],
    },
    {
      table: "nat",
      chains: [
        { name: "EGRESS-OUTPUT", rules: [...exempt, ...natSteer] },
        { name: "EGRESS-PREROUTING", rules: natSteer },
      ],
      jumps: [
        { from: "PREROUTING", matches: NOT_LOOPBACK, to: "EGRESS-PREROUTING" },
        { from: "OUTPUT", matches: "", to: "EGRESS-OUTPUT" },
      ],
    },
    {
      table: "mangle",
      chains: [
        { name: "EGRESS-OUTPUT", rules: [replies, fastPath, ...exempt, ...mangleSteer] },
        { name: "EGRESS-PREROUTING", rules: [replies, fastPath, ...mangleSteer] },
      ],
      jumps: [
        { from: "PREROUTING", matches: NOT_LOOPBACK, to: "EGRESS-PREROUTING" },
        { from: "OUTPUT", matches: "", to: "EGRESS-OUTPUT" },
      ],
    },
  ];
}

/** The rule text of a jump as iptables-save prints it after `-A <from> `. */
export function jumpRule(jump: SteeringJump): string {
  return jump.matches ? `${jump.matches} -j ${jump.to}` : `-j ${jump.to}`;
}

/** One table's `iptables-restore --noflush` input: declare our chains, fill them, insert the jumps. */
export function renderTable(rules: SteeringTableRules): string {
  const lines = [`*${rules.table}`];
  for (const chain of rules.chains) lines.push(`:${chain.name} - [0:0]`);
  for (const chain of rules.chains) {
    for (const rule of chain.rules) lines.push(`-A ${chain.name} ${rule}`);
  }
  for (const jump of rules.jumps) lines.push(`-I ${jump.from} 1 ${jumpRule(jump)}`);
  lines.push("COMMIT");
  return lines.join("\n") + "\n";
}

/** The whole ruleset as one `iptables-restore --noflush` input (all three tables). */
export function steeringRestoreText(config: SteeringConfig): string {
  return buildSteeringRules(config).map(renderTable).join("");
}
