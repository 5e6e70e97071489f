// Importing mod.ts as a library must not load CLI code, and each command loads only its own code.
import assert from "node:assert/strict";
import denoConfig from "../../deno.json" with { type: "json" };
import { MOD } from "./run_cli.ts";

const ROOT = new URL("../../", import.meta.url);
const CLI_DIR = new URL("src/cli/", ROOT).href;

async function deno(args: string[], cwd: string) {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd,
    env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

Deno.test("library: mod.ts works with src/cli/ made unimportable; the same map does break CLI imports", async () => {
  const dir = await Deno.makeTempDir({ prefix: "egress-cli-lib-" });
  try {
    // Every import of src/cli/… resolves into an empty directory, so any CLI load fails.
    const map = { imports: { ...denoConfig.imports, [CLI_DIR]: new URL("poison/", `file://${dir}/`).href } };
    await Deno.writeTextFile(`${dir}/map.json`, JSON.stringify(map));
    const modUrl = new URL(`file://${MOD}`).href;
    await Deno.writeTextFile(
      `${dir}/lib.ts`,
      `import { Enforcer, parsePolicy } from ${JSON.stringify(modUrl)};\n` +
        `const d = new Enforcer(parsePolicy("github.com")).decide({ type: "https", dst_ip: "140.82.112.3", dst_port: 443, host: "github.com" });\n` +
        `console.log(d.allowed ? "library ok" : "denied");\n`,
    );
    await Deno.writeTextFile(
      `${dir}/control.ts`,
      `await import(${JSON.stringify(new URL("main.ts", CLI_DIR).href)});\n`,
    );
    const flags = ["run", "-A", "--no-config", "--no-lock", "--import-map=map.json"];
    const lib = await deno([...flags, "lib.ts"], dir);
    assert.equal(lib.code, 0, lib.stderr);
    assert.equal(lib.stdout, "library ok\n");
    const control = await deno([...flags, "control.ts"], dir);
    assert.notEqual(control.code, 0, "the poisoned map must make CLI imports fail");
    assert.match(control.stderr, /Module not found/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

type InfoModule = {
  specifier: string;
  dependencies?: Array<{ code?: { specifier: string }; isDynamic?: boolean }>;
};

/** Modules loaded when `root` is imported: static code dependencies only (types are erased). */
async function staticClosure(root: string): Promise<Set<string>> {
  const info = await deno(["info", "--json", root], new URL(".", ROOT).pathname);
  assert.equal(info.code, 0, info.stderr);
  const modules = new Map<string, InfoModule>();
  for (const m of JSON.parse(info.stdout).modules as InfoModule[]) modules.set(m.specifier, m);
  const seen = new Set<string>();
  const stack = [new URL(root, ROOT).href];
  while (stack.length > 0) {
    const s = stack.pop()!;
    if (seen.has(s)) continue;
    seen.add(s);
    for (const d of modules.get(s)?.dependencies ?? []) {
      if (!d.isDynamic && d.code !== undefined) stack.push(d.code.specifier);
    }
  }
  return seen;
}

Deno.test("library: static import graphs: library without CLI, each command without the others", async () => {
  const cli = (set: Set<string>) =>
    [...set].filter((s) => s.startsWith(CLI_DIR)).map((s) => s.slice(CLI_DIR.length)).sort();
  assert.deepEqual(cli(await staticClosure("mod.ts")), []);
  assert.deepEqual(cli(await staticClosure("src/policy/mod.ts")), []);
  const main = cli(await staticClosure("src/cli/main.ts"));
  assert.deepEqual(main, ["args.ts", "main.ts"]);
  const validate = cli(await staticClosure("src/cli/validate.ts"));
  assert.ok(validate.includes("workflow.ts"), "the check sees the closure");
  for (const other of ["analyze.ts", "demo.ts", "main.ts", "doctor.ts"]) {
    assert.ok(!validate.includes(other), other);
  }
  const analyze = cli(await staticClosure("src/cli/analyze.ts"));
  for (const other of ["validate.ts", "demo.ts", "main.ts"]) assert.ok(!analyze.includes(other), other);
});
