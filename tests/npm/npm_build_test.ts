// Builds the npm package, then (1) imports it with Node and makes decisions, and (2) runs the whole
// policy test suite under Node's test runner against that build.
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { buildNpmPackage } from "../../scripts/build_npm.ts";
import { ensureNodeTools } from "../../scripts/lib/node_tools.ts";

const repo = fileURLToPath(new URL("../..", import.meta.url));

async function node(args: string[], cwd: string) {
  const out = await new Deno.Command("node", { args, cwd, stdout: "piped", stderr: "piped" }).output();
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

Deno.test("npm build: Node imports the package and decides", async (t) => {
  const work = await Deno.makeTempDir({ prefix: "egress-npm-test-" });
  try {
    const pkg = join(work, "node_modules", "@org", "egress");
    await buildNpmPackage(pkg);
    const manifest = JSON.parse(await Deno.readTextFile(join(pkg, "package.json")));
    assert.equal(manifest.name, "@org/egress");
    assert.equal(manifest.type, "module");
    await Deno.stat(join(pkg, "types", "mod.d.ts"));

    await t.step("decisions under Node", async () => {
      const script = `
        import { parsePolicy, validatePolicy, Enforcer, DnsCache, PolicyError } from "@org/egress";
        const policy = parsePolicy("github.com\\nGET https://api.github.com/repos/*\\n8.8.8.8:53/udp");
        const enforcer = new Enforcer(policy);
        const out = {
          sni: enforcer.decide({ type: "https", dst_ip: "140.82.112.3", dst_port: 443, host: "GitHub.com" }),
          other: enforcer.decide({ type: "https", dst_ip: "1.2.3.4", dst_port: 443, host: "evil.example" }),
          post: enforcer.decide({ type: "https", dst_ip: "140.82.112.6", dst_port: 443, host: "api.github.com",
            url: "https://api.github.com/repos/a/b", method: "POST" }),
          dns: enforcer.decide({ type: "dns", dst_ip: "8.8.8.8", dst_port: 53, name: "github.com" }),
          rules: policy.toJSON().length,
          invalid: validatePolicy("x.com:70000").errors[0],
          cache: new DnsCache().size,
        };
        try { parsePolicy("bad host!"); } catch (e) { out.threw = e instanceof PolicyError; }
        console.log(JSON.stringify(out));`;
      const result = await node(["--input-type=module", "-e", script], work);
      assert.equal(result.code, 0, result.stderr);
      const out = JSON.parse(result.stdout);
      assert.equal(out.sni.allowed, true);
      assert.equal(out.sni.reason, "rule matched");
      assert.equal(out.other.allowed, false);
      assert.equal(out.other.reason, "no matching rule");
      assert.equal(out.post.allowed, false);
      assert.equal(out.dns.allowed, true);
      assert.equal(out.rules, 3);
      assert.equal(out.invalid.line, 1);
      assert.match(out.invalid.message, /70000/);
      assert.equal(out.cache, 0);
      assert.equal(out.threw, true);
    });

    await t.step("generated .d.ts types match policy.md §13 exactly (tsc)", async () => {
      const nodeModules = await ensureNodeTools();
      const check = await Deno.readTextFile(join(repo, "tests", "policy", "api_types_check.ts"));
      const consumer = check.replace(/from "\.\.\/\.\.\/mod\.ts"/, 'from "@org/egress"');
      assert.notEqual(consumer, check, "the check imports mod.ts");
      // Resolved like a bundler or Node ESM consumer would: package.json "exports" → types/mod.d.ts.
      const compilerOptions = {
        noEmit: true,
        strict: true,
        target: "ES2022",
        lib: ["ES2022"],
        types: [],
        module: "ESNext",
        moduleResolution: "bundler",
      };
      await Deno.writeTextFile(
        join(work, "tsconfig.json"),
        JSON.stringify({ compilerOptions, files: ["api_check.ts"] }),
      );
      const tsc = async (text: string) => {
        await Deno.writeTextFile(join(work, "api_check.ts"), text);
        return await node([join(nodeModules, "typescript", "bin", "tsc"), "-p", "tsconfig.json"], work);
      };
      const compiled = await tsc(consumer);
      assert.equal(compiled.code, 0, compiled.stdout + compiled.stderr);
      // The check can fail: a Decision type that differs from the generated one is rejected.
      const wrong = consumer.replace("  reason: string;\n};", "  reason: string | undefined;\n};");
      assert.notEqual(wrong, consumer);
      const broken = await tsc(wrong);
      assert.notEqual(broken.code, 0, "a changed Decision type must fail the check");
      assert.match(broken.stdout, /api_check\.ts/);
    });

    await t.step("policy test suite under Node", async () => {
      const nodeModules = await ensureNodeTools();
      const bundles = join(work, "tests");
      const bundled = await node([
        join(repo, "tests", "npm", "bundle_policy_tests.mjs"),
        join(nodeModules, "esbuild", "lib", "main.js"),
        repo,
        bundles,
      ], work);
      assert.equal(bundled.code, 0, bundled.stderr + bundled.stdout);
      const files = [...Deno.readDirSync(bundles)].map((e) => join(bundles, e.name)).filter((f) =>
        f.endsWith(".test.mjs")
      );
      assert.ok(files.length > 0, "no policy test files were bundled");
      const run = await node(["--test", "--test-reporter=tap", ...files], work);
      const passed = Number(/^# pass (\d+)/m.exec(run.stdout)?.[1] ?? "0");
      const failed = Number(/^# fail (\d+)/m.exec(run.stdout)?.[1] ?? "-1");
      console.log(`node: ${files.length} policy test files, ${passed} passed, ${failed} failed`);
      assert.equal(run.code, 0, run.stdout.slice(-4000) + run.stderr.slice(-2000));
      assert.equal(failed, 0);
      assert.ok(passed > 0);
    });
  } finally {
    await Deno.remove(work, { recursive: true });
  }
});
