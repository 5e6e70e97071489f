// PATH lookup for the demo's requirement check.

export function commandExists(name: string): boolean {
  const path = (() => {
    try {
      return Deno.env.get("PATH") ?? "";
    } catch {
      return "";
    }
  })();
  for (const dir of [...path.split(":"), "/usr/sbin", "/sbin", "/usr/bin", "/bin"]) {
    if (!dir) continue;
    try {
      if (Deno.statSync(`${dir}/${name}`).isFile) return true;
    } catch {
      // not here
    }
  }
  return false;
}
