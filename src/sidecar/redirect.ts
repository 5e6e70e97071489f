// DNS redirect through iptables `nat OUTPUT REDIRECT` (sidecar.md §1.4), used only when nftables
// is unavailable. Rules carry a comment so removal deletes exactly what was added.

export const REDIRECT_COMMENT = "egress-sidecar-dns";

export function redirectRuleArgs(protocol: "udp" | "tcp", mark: number, dnsPort: number): string[] {
  return [
    "-t",
    "nat",
    "OUTPUT",
    "-p",
    protocol,
    "--dport",
    "53",
    "-m",
    "mark",
    "!",
    "--mark",
    `0x${mark.toString(16)}`,
    "-m",
    "comment",
    "--comment",
    REDIRECT_COMMENT,
    "-j",
    "REDIRECT",
    "--to-ports",
    String(dnsPort),
  ];
}

async function run(binary: string, args: string[]): Promise<{ ok: boolean; message: string }> {
  try {
    const out = await new Deno.Command(binary, { args, stdout: "null", stderr: "piped" }).output();
    return { ok: out.success, message: new TextDecoder().decode(out.stderr).trim() };
  } catch (error) {
    return { ok: false, message: (error as Error).message };
  }
}

/** Installs the redirect rules; returns the binaries that took them (iptables required). */
export class IptablesRedirect {
  #installed: string[] = [];
  constructor(readonly mark: number, readonly dnsPort: number) {}

  /** @throws Error when iptables cannot install the IPv4 rules. */
  async install(warn: (message: string) => void): Promise<void> {
    for (const binary of ["iptables", "ip6tables"]) {
      for (const protocol of ["udp", "tcp"] as const) {
        const [table, nat, chain, ...rest] = redirectRuleArgs(protocol, this.mark, this.dnsPort);
        // A rule left by a run that exited on an error (enforcement is kept then) is reused.
        const present = await run(binary, [table, nat, "-C", chain, ...rest]);
        const result = present.ok ? present : await run(binary, [table, nat, "-A", chain, ...rest]);
        if (!result.ok) {
          if (binary === "iptables") {
            await this.remove();
            throw new Error(`Cannot install the DNS redirect with iptables: ${result.message}`);
          }
          warn(`DNS redirect: ${binary} failed (IPv6 DNS not redirected): ${result.message}`);
          break;
        }
        if (!this.#installed.includes(binary)) this.#installed.push(binary);
      }
    }
  }

  /** Deletes the rules this instance installed (and copies of them). Idempotent. */
  async remove(): Promise<void> {
    for (const binary of this.#installed) {
      for (const protocol of ["udp", "tcp"] as const) {
        const [table, nat, chain, ...rest] = redirectRuleArgs(protocol, this.mark, this.dnsPort);
        // bounded: at most a few copies can exist
        for (let i = 0; i < 8 && (await run(binary, [table, nat, "-D", chain, ...rest])).ok; i++);
      }
    }
    this.#installed = [];
  }
}
