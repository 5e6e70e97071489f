/**
 * egress: an egress firewall for CI runners and sandboxes.
 *
 * Imported as a library, this module exports the policy engine only (pure: no I/O, runs under
 * Deno, Node and browsers). Run as the main module (`deno run -A mod.ts <command>`), it dispatches
 * the `egress` command line; the CLI and daemon code is loaded lazily so library users never load it.
 *
 * @example
 * ```ts
 * import { Enforcer, parsePolicy } from "@org/egress";
 * const enforcer = new Enforcer(parsePolicy("github.com\n*.example.org"));
 * enforcer.decide({ type: "https", dst_ip: "140.82.112.3", dst_port: 443, host: "github.com" }).allowed; // true
 * ```
 * @module
 */
export * from "./src/policy/mod.ts";

if (import.meta.main) {
  const { main } = await import("./src/cli/main.ts");
  Deno.exit(await main(Deno.args));
}
