// Test gating: a test that needs root or a kernel feature is registered as ignored and the reason
// is printed, so a run never passes silently what it did not execute.

const printed = new Set<string>();

function note(name: string, reason: string) {
  const key = `${name}\u0000${reason}`;
  if (printed.has(key)) return;
  printed.add(key);
  console.log(`SKIP ${name}: ${reason}`);
}

export function isRoot(): boolean {
  return Deno.uid?.() === 0;
}

export function commandExists(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/**
 * Returns the first unmet requirement as a reason, or undefined when all hold.
 * Each check is [ok, reason-if-not].
 */
export function unmet(checks: Array<[boolean, string]>): string | undefined {
  for (const [ok, reason] of checks) if (!ok) return reason;
  return undefined;
}

/** Deno.test that is ignored, with the reason printed, when `reason` is defined. */
export function testWhen(
  reason: string | undefined,
  name: string,
  fn: (t: Deno.TestContext) => void | Promise<void>,
  options: Omit<Deno.TestDefinition, "name" | "fn" | "ignore"> = {},
): void {
  if (reason) note(name, reason);
  Deno.test({ ...options, name, fn, ignore: reason !== undefined });
}

/** Reason string when not root, else undefined. */
export function needsRoot(): string | undefined {
  return isRoot() ? undefined : "needs root";
}
