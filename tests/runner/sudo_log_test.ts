import assert from "node:assert/strict";
import { joinSudoLogEntries, parseSudoLog, shellSplit, sudoTimestamp } from "../../src/runner/sudo_log.ts";

const LOG = `Dec  1 18:40:02 : runner : TTY=unknown ; PWD=/home/runner/work/app ; USER=root ;
    COMMAND=/usr/bin/apt-get install -y jq
Dec  1 18:41:10 : runner : TTY=unknown ; PWD=/home/runner ; USER=root ; COMMAND=/bin/sh -c 'echo "a b" ; echo c'
Dec  1 18:42:00 : runner : command not allowed ; TTY=unknown ; PWD=/ ; USER=root
Dec 31 23:59:59 : runner : USER=postgres ; COMMAND=/usr/bin/psql "unterminated
Feb 30 10:00:00 : runner : USER=root ; COMMAND=/bin/true
`;

Deno.test("sudo log: continuation lines join the entry before them", () => {
  const entries = joinSudoLogEntries(LOG);
  assert.equal(entries.length, 5);
  assert.equal(
    entries[0],
    "Dec  1 18:40:02 : runner : TTY=unknown ; PWD=/home/runner/work/app ; USER=root ; COMMAND=/usr/bin/apt-get install -y jq",
  );
});

Deno.test("sudo log: timestamps are UTC in the given year", () => {
  assert.equal(sudoTimestamp("Dec  1 18:40:02", 2026), "2026-12-01T18:40:02.000Z");
  assert.equal(sudoTimestamp("Jan 15 00:00:00", 2025), "2025-01-15T00:00:00.000Z");
  assert.equal(sudoTimestamp("Foo 15 00:00:00", 2025), undefined);
  assert.equal(sudoTimestamp("Jan 15 25:00:00", 2025), undefined);
  assert.equal(sudoTimestamp("Feb 30 10:00:00", 2026), undefined);
  assert.equal(sudoTimestamp("Feb 29 10:00:00", 2028), "2028-02-29T10:00:00.000Z");
});

Deno.test("sudo log: shell split with quotes, undefined when a quote stays open", () => {
  assert.deepEqual(shellSplit(`/bin/sh -c 'echo "a b" ; echo c'`), ["/bin/sh", "-c", `echo "a b" ; echo c`]);
  assert.deepEqual(shellSplit(`a "b \\"c\\"" d\\ e ''`), ["a", `b "c"`, "d e", ""]);
  assert.equal(shellSplit(`psql "open`), undefined);
});

Deno.test("sudo log: events with pwd, target_user and the split command; entries without COMMAND dropped", () => {
  const events = parseSudoLog(LOG, 2026);
  assert.deepEqual(events, [
    {
      ts: "2026-12-01T18:40:02.000Z",
      type: "sudo",
      pwd: "/home/runner/work/app",
      target_user: "root",
      cmdline: ["/usr/bin/apt-get", "install", "-y", "jq"],
    },
    {
      ts: "2026-12-01T18:41:10.000Z",
      type: "sudo",
      pwd: "/home/runner",
      target_user: "root",
      cmdline: ["/bin/sh", "-c", `echo "a b" ; echo c`],
    },
    // unterminated quote: whitespace fallback
    {
      ts: "2026-12-31T23:59:59.000Z",
      type: "sudo",
      target_user: "postgres",
      cmdline: ["/usr/bin/psql", `"unterminated`],
    },
    // Feb 30 is not a date: dropped
  ]);
});
