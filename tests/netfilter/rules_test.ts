// Pure tests of the generated ruleset text (no kernel needed).
import assert from "node:assert/strict";
import {
  buildSteeringRules,
  DEFAULT_MARKS,
  renderTable,
  type SteeringConfig,
  steeringRestoreText,
  type SteeringTableRules,
  withMarkBits,
} from "../../src/netfilter/rules.ts";

const CONFIG: SteeringConfig = {
  proxyPort: 15080,
  dnsPort: 15053,
  queueNum: 15,
  exemptCgroupPath: "/system.slice/egress.scope",
  resolvedCgroupPath: "/system.slice/systemd-resolved.service",
};

function table(rules: SteeringTableRules[], name: string): SteeringTableRules {
  const found = rules.find((entry) => entry.table === name);
  assert.ok(found, `table ${name} missing`);
  return found;
}

function chain(rules: SteeringTableRules[], tableName: string, chainName: string): string[] {
  const found = table(rules, tableName).chains.find((entry) => entry.name === chainName);
  assert.ok(found, `chain ${tableName} ${chainName} missing`);
  return found.rules;
}

function indexOf(rules: string[], pattern: RegExp): number {
  const index = rules.findIndex((rule) => pattern.test(rule));
  assert.ok(index >= 0, `no rule matches ${pattern}:\n${rules.join("\n")}`);
  return index;
}

Deno.test("rules: own chains only, one jump inserted first per built-in chain", () => {
  const rules = buildSteeringRules(CONFIG);
  assert.deepEqual(rules.map((entry) => entry.table), ["filter", "nat", "mangle"]);
  const jumps = rules.flatMap((entry) =>
    entry.jumps.map((jump) => `${entry.table} ${jump.from} ${jump.matches}`)
  );
  assert.deepEqual(jumps.sort(), [
    "filter FORWARD ! -i lo",
    "filter INPUT ! -i lo",
    "filter OUTPUT ",
    "mangle OUTPUT ",
    "mangle PREROUTING ! -i lo",
    "nat OUTPUT ",
    "nat PREROUTING ! -i lo",
  ]);
  const text = steeringRestoreText(CONFIG);
  for (const line of text.split("\n")) {
    if (line.startsWith("-A ")) assert.match(line, /^-A EGRESS-[A-Z]+ /);
    if (line.startsWith(":")) assert.match(line, /^:EGRESS-[A-Z]+ - \[0:0\]$/);
    if (line.startsWith("-I ")) {
      assert.match(line, /^-I (OUTPUT|PREROUTING|INPUT|FORWARD) 1 (! -i lo )?-j EGRESS-/);
    }
    // Nothing that could flush, delete or change somebody else's chain.
    assert.doesNotMatch(line, /^-[FXPDZNR] /);
  }
  assert.equal(text.split("\n").filter((line) => line === "COMMIT").length, 3);
});

Deno.test("rules: UDP is queued without bypass, in both mangle chains only", () => {
  const text = steeringRestoreText(CONFIG);
  assert.doesNotMatch(text, /queue-bypass|fail-open/);
  const queued = text.split("\n").filter((line) => line.includes("NFQUEUE"));
  assert.deepEqual(queued, [
    "-A EGRESS-OUTPUT -p udp -j NFQUEUE --queue-num 15",
    "-A EGRESS-PREROUTING -p udp -j NFQUEUE --queue-num 15",
  ]);
  for (const entry of buildSteeringRules(CONFIG)) {
    for (const { name, rules } of entry.chains) {
      // The queue is each mangle chain's last word: everything else was decided before.
      if (entry.table === "mangle") assert.match(rules.at(-1)!, /-j NFQUEUE --queue-num 15$/, name);
      else assert.ok(!rules.some((rule) => rule.includes("NFQUEUE")), `${entry.table} ${name}`);
    }
  }
});

Deno.test("rules: cgroup matches appear only in chains reached from OUTPUT", () => {
  for (const entry of buildSteeringRules(CONFIG)) {
    for (const { name, rules } of entry.chains) {
      const withCgroup = rules.filter((rule) => rule.includes("-m cgroup"));
      // xt_cgroup only loads in OUTPUT, POSTROUTING and INPUT; forwarded packets have no local socket.
      if (name === "EGRESS-OUTPUT") assert.equal(withCgroup.length, 3, `${entry.table} ${name}`);
      else assert.deepEqual(withCgroup, [], `${entry.table} ${name}`);
    }
  }
});

const FAST_PATH = "-p udp -m connmark --mark 0x2000000/0x2000000 -j RETURN";

Deno.test("rules: an allowed UDP flow returns before the costly matches, never before the direct-port marking of new flows", () => {
  const rules = buildSteeringRules(CONFIG);
  for (const name of ["EGRESS-OUTPUT", "EGRESS-PREROUTING"]) {
    const mangle = chain(rules, "mangle", name);
    const fast = mangle.indexOf(FAST_PATH);
    assert.equal(fast, 1, name);
    assert.ok(fast < indexOf(mangle, /addrtype/), name);
    assert.ok(fast < indexOf(mangle, /NFQUEUE/), name);
    // The mark that saves the connmark is set only by the consumer's verdict.
    assert.ok(indexOf(mangle, /CONNMARK --save-mark/) > indexOf(mangle, /addrtype/), name);
  }
});

Deno.test("rules: the exempt cgroup returns before any mark, redirect, queue or drop of its traffic", () => {
  const rules = buildSteeringRules(CONFIG);
  const exempt = /^-m cgroup --path "\/system\.slice\/egress\.scope" -j RETURN$/;
  assert.match(chain(rules, "nat", "EGRESS-OUTPUT")[0], exempt);
  const mangle = chain(rules, "mangle", "EGRESS-OUTPUT");
  assert.equal(mangle[0], "-m conntrack --ctdir REPLY -j RETURN");
  // Only the allowed-flow fast path (a RETURN, never a mark) may come before the exemption.
  assert.equal(mangle[1], FAST_PATH);
  assert.match(mangle[2], exempt);
  const filter = chain(rules, "filter", "EGRESS-OUTPUT");
  // The direct-port drop may come first: the exempt cgroup's packets never get that mark.
  assert.equal(filter[0], "-m mark --mark 0x4000000/0x4000000 -j DROP");
  assert.equal(filter[1], FAST_PATH);
  assert.match(filter[2], exempt);
  assert.ok(indexOf(filter, exempt) < indexOf(filter, /--ctstate NEW,UNTRACKED/));
});

Deno.test("rules: systemd-resolved is exempt for port 53 only, and only when given", () => {
  const withResolved = buildSteeringRules(CONFIG);
  const nat = chain(withResolved, "nat", "EGRESS-OUTPUT");
  const resolvedTcp =
    /^-p tcp -m tcp --dport 53 -m cgroup --path "\/system\.slice\/systemd-resolved\.service" -j RETURN$/;
  const resolvedUdp =
    /^-p udp -m udp --dport 53 -m cgroup --path "\/system\.slice\/systemd-resolved\.service" -j RETURN$/;
  assert.ok(indexOf(nat, resolvedTcp) < indexOf(nat, /--dport 53 -j REDIRECT/));
  const mangle = chain(withResolved, "mangle", "EGRESS-OUTPUT");
  assert.ok(indexOf(mangle, resolvedUdp) < indexOf(mangle, /NFQUEUE/));
  const filter = chain(withResolved, "filter", "EGRESS-OUTPUT");
  assert.ok(indexOf(filter, resolvedTcp) < indexOf(filter, /--ctstate NEW,UNTRACKED/));

  const without = steeringRestoreText({ ...CONFIG, resolvedCgroupPath: undefined });
  assert.doesNotMatch(without, /resolved/);
  assert.equal(without.split("\n").filter((line) => line.includes("-m cgroup")).length, 3);
});

Deno.test("rules: TCP 53 to the DNS port, other TCP to the proxy port, DNS-marked UDP to the DNS port", () => {
  const rules = buildSteeringRules({ ...CONFIG, proxyPort: 20080, dnsPort: 20053, queueNum: 7 });
  for (const name of ["EGRESS-OUTPUT", "EGRESS-PREROUTING"]) {
    const nat = chain(rules, "nat", name);
    const tcp53 = indexOf(nat, /^-p tcp -m tcp --dport 53 -j REDIRECT --to-ports 20053$/);
    const tcp = indexOf(nat, /^-p tcp -j REDIRECT --to-ports 20080$/);
    assert.ok(tcp53 < tcp, "TCP 53 must be matched before the catch-all TCP redirect");
    indexOf(nat, /^-p udp -m mark --mark 0x1000000\/0x1000000 -j REDIRECT --to-ports 20053$/);
    // Direct connections are never translated (they are dropped in filter).
    assert.ok(indexOf(nat, /^-m mark --mark 0x4000000\/0x4000000 -j RETURN$/) < tcp53);
    // Nothing restricts the TCP redirect by destination: loopback and private ranges are steered too.
    assert.ok(!nat.some((rule) => / -d | --dst-type /.test(rule)), nat.join("\n"));
  }
  const text = steeringRestoreText({ ...CONFIG, proxyPort: 20080, dnsPort: 20053, queueNum: 7 });
  assert.doesNotMatch(text, /15080|15053|--queue-num 15/);
  assert.match(text, /--queue-num 7\n/);
});

Deno.test("rules: direct connections to our ports are marked in mangle before the queue and dropped in filter", () => {
  const rules = buildSteeringRules(CONFIG);
  for (const name of ["EGRESS-OUTPUT", "EGRESS-PREROUTING"]) {
    const mangle = chain(rules, "mangle", name);
    const markTcp = indexOf(
      mangle,
      /^-p tcp -m addrtype --dst-type LOCAL -m multiport --dports 15080,15053 -j MARK --set-xmark 0x4000000\/0x4000000$/,
    );
    const markUdp = indexOf(
      mangle,
      /^-p udp -m addrtype --dst-type LOCAL -m multiport --dports 15080,15053 -j MARK --set-xmark 0x4000000\/0x4000000$/,
    );
    const leave = indexOf(mangle, /^-m mark --mark 0x4000000\/0x4000000 -j RETURN$/);
    assert.ok(markTcp < leave && markUdp < leave && leave < indexOf(mangle, /NFQUEUE/));
  }
  assert.ok(chain(rules, "filter", "EGRESS-OUTPUT").includes("-m mark --mark 0x4000000/0x4000000 -j DROP"));
  assert.ok(chain(rules, "filter", "EGRESS-INPUT").includes("-m mark --mark 0x4000000/0x4000000 -j DROP"));
});

Deno.test("rules: the consumer's verdict marks end the chain before the queue; the fast path uses the connmark", () => {
  const rules = buildSteeringRules(CONFIG);
  for (const name of ["EGRESS-OUTPUT", "EGRESS-PREROUTING"]) {
    const mangle = chain(rules, "mangle", name);
    const queue = indexOf(mangle, /NFQUEUE/);
    assert.ok(indexOf(mangle, /^-p udp -m mark --mark 0x1000000\/0x1000000 -j RETURN$/) < queue);
    const save = indexOf(
      mangle,
      /^-p udp -m mark --mark 0x2000000\/0x2000000 -j CONNMARK --save-mark --nfmask 0x2000000 --ctmask 0x2000000$/,
    );
    const leave = indexOf(mangle, /^-p udp -m mark --mark 0x2000000\/0x2000000 -j RETURN$/);
    const fast = indexOf(mangle, /^-p udp -m connmark --mark 0x2000000\/0x2000000 -j RETURN$/);
    assert.ok(save < leave && leave < queue && fast < queue);
    assert.equal(mangle[0], "-m conntrack --ctdir REPLY -j RETURN");
  }
});

Deno.test("rules: every mark is matched and changed under its own bit as mask", () => {
  const marks = { dns: 0x10_0000, allowedFlow: 0x8000_0000, direct: 0x1 };
  const text = steeringRestoreText({ ...CONFIG, marks });
  const bits = new Set(Object.values(marks).map((value) => "0x" + value.toString(16)));
  let seen = 0;
  for (const match of text.matchAll(/--(?:mark|set-xmark) (0x[0-9a-f]+)\/(0x[0-9a-f]+)/g)) {
    seen++;
    assert.equal(match[1], match[2], match[0]);
    assert.ok(bits.has(match[2]), match[0]);
  }
  assert.ok(seen >= 20, `only ${seen} mark expressions`);
  for (const match of text.matchAll(/--nfmask (\S+) --ctmask (\S+)/g)) {
    assert.equal(match[1], "0x80000000");
    assert.equal(match[2], "0x80000000");
  }
  assert.doesNotMatch(text, /--set-mark|--restore-mark|--or-mark|--and-mark|0xffffffff/);
  assert.doesNotMatch(steeringRestoreText(CONFIG), /0x10\b|0x1\//, "defaults differ from the custom bits");
});

Deno.test("rules: backstops drop new TCP and DNS-marked UDP that escaped NAT", () => {
  const rules = buildSteeringRules(CONFIG);
  const notRedirected = "-p tcp -m conntrack --ctstate NEW,UNTRACKED -m conntrack ! --ctstate DNAT -j DROP";
  assert.ok(chain(rules, "filter", "EGRESS-OUTPUT").includes(notRedirected));
  assert.ok(chain(rules, "filter", "EGRESS-INPUT").includes(notRedirected));
  assert.deepEqual(chain(rules, "filter", "EGRESS-FORWARD"), [
    "-p tcp -m conntrack --ctstate NEW,UNTRACKED -j DROP",
    "-p udp -m mark --mark 0x1000000/0x1000000 -j DROP",
  ]);
});

Deno.test("rules: rendered table declares, fills, then inserts the jumps", () => {
  const nat = buildSteeringRules(CONFIG)[1];
  const lines = renderTable(nat).trimEnd().split("\n");
  assert.equal(lines[0], "*nat");
  assert.equal(lines.at(-1), "COMMIT");
  const lastDeclaration = lines.findLastIndex((line) => line.startsWith(":"));
  const firstRule = lines.findIndex((line) => line.startsWith("-A "));
  const firstJump = lines.findIndex((line) => line.startsWith("-I "));
  assert.ok(lastDeclaration < firstRule && firstRule < firstJump);
  assert.equal(
    lines.filter((line) => line.startsWith("-A ")).length,
    nat.chains.flatMap((c) => c.rules).length,
  );
});

Deno.test("rules: bad configuration is refused with a message naming the field", () => {
  const cases: Array<[Partial<SteeringConfig> & Record<string, unknown>, RegExp]> = [
    [{ proxyPort: 0 }, /proxyPort must be an integer from 1 to 65535 \(got 0\)/],
    [{ dnsPort: 65536 }, /dnsPort must be an integer/],
    [{ proxyPort: 1.5 }, /proxyPort/],
    [{ dnsPort: 15080 }, /proxyPort and dnsPort must differ/],
    [{ queueNum: -1 }, /queueNum must be an integer from 0 to 65535/],
    [{ queueNum: 70000 }, /queueNum/],
    [{ exemptCgroupPath: 'x" -j ACCEPT' }, /exemptCgroupPath must be a cgroup v2 path/],
    [{ exemptCgroupPath: "/a b" }, /exemptCgroupPath/],
    [{ exemptCgroupPath: "/a\n-A OUTPUT -j ACCEPT" }, /exemptCgroupPath/],
    [{ exemptCgroupPath: "relative/path" }, /exemptCgroupPath/],
    [{ exemptCgroupPath: "/a/../b" }, /must not contain "\." or "\.\."/],
    [{ exemptCgroupPath: "/" }, /exemptCgroupPath/],
    [{ resolvedCgroupPath: "/x\\y" }, /resolvedCgroupPath/],
    [{ marks: { dns: 3, allowedFlow: 4, direct: 8 } }, /marks\.dns must be a single bit/],
    [{ marks: { dns: 0, allowedFlow: 4, direct: 8 } }, /marks\.dns/],
    [{ marks: { dns: 4, allowedFlow: 4, direct: 8 } }, /must differ/],
    [{ marks: { dns: 2, allowedFlow: 4 } as unknown as SteeringConfig["marks"] }, /marks\.direct/],
    [{ marks: { dns: 2 ** 32, allowedFlow: 4, direct: 8 } }, /marks\.dns/],
  ];
  for (const [change, message] of cases) {
    assert.throws(
      () => buildSteeringRules({ ...CONFIG, ...change } as SteeringConfig),
      (error: Error) =>
        error.message.startsWith("Cannot build the packet-steering rules: ") && message.test(error.message),
      JSON.stringify(change),
    );
  }
  // Names systemd really uses are accepted.
  buildSteeringRules({
    ...CONFIG,
    exemptCgroupPath: "/egress-1234.scope",
    resolvedCgroupPath: "/user.slice/user-1000.slice/user@1000.service",
  });
});

Deno.test("rules: withMarkBits keeps the packet's other bits and stays unsigned", () => {
  assert.equal(withMarkBits(0, DEFAULT_MARKS.dns), 0x0100_0000);
  assert.equal(withMarkBits(0x8000_0010, DEFAULT_MARKS.dns), 0x8100_0010);
  assert.equal(withMarkBits(0x0100_0000, DEFAULT_MARKS.dns), 0x0100_0000);
  assert.equal(withMarkBits(0xffff_ffff, DEFAULT_MARKS.allowedFlow), 0xffff_ffff);
  const bits = [DEFAULT_MARKS.dns, DEFAULT_MARKS.allowedFlow, DEFAULT_MARKS.direct];
  assert.equal(new Set(bits).size, 3);
  for (const value of bits) assert.equal(value & (value - 1), 0, "each mark is one bit");
});
