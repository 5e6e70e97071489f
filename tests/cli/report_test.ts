import assert from "node:assert/strict";
import { caretLine, formatIssue } from "../../src/cli/report.ts";

Deno.test("report: location, severity, echoed line and caret under the column", () => {
  const out = formatIssue({
    file: "p.txt",
    severity: "error",
    message: "port 70000 is outside 1..65535",
    line: 3,
    column: 12,
    source: "github.com:70000",
  });
  assert.equal(out, "p.txt:3:12: error: port 70000 is outside 1..65535\ngithub.com:70000\n           ^");
});

Deno.test("report: a TAB in the source stays a TAB in the caret line", () => {
  const source = "\t x.com:0";
  assert.equal(caretLine(source, 9), "\t       ^");
  const lines = formatIssue({ file: "f", severity: "warning", message: "m", line: 1, column: 3, source })
    .split("\n");
  assert.equal(lines[0], "f:1:3: warning: m");
  assert.equal(lines[2], "\t ^");
});

Deno.test("report: columns count code points, not UTF-16 units", () => {
  // "😀" is two UTF-16 units but one column.
  assert.equal(caretLine("😀é:x", 3), "  ^");
});

Deno.test("report: suffix, and no caret or column when the issue has none", () => {
  assert.equal(
    formatIssue({
      file: "w.yml",
      severity: "error",
      message: "bad",
      line: 7,
      column: 17,
      suffix: "(policy line 2)",
    }),
    "w.yml:7:17: error: bad (policy line 2)",
  );
  assert.equal(
    formatIssue({
      file: "p",
      severity: "warning",
      message: "overlap",
      line: 0,
      column: 0,
      source: "a.com passthrough",
    }),
    "p: warning: overlap\na.com passthrough",
  );
});

Deno.test("report: the caret may point into the echoed line at another column than the location", () => {
  assert.equal(
    formatIssue({
      file: "w.yml",
      severity: "error",
      message: "m",
      line: 9,
      column: 19,
      source: "b.com:0",
      caretColumn: 7,
    }),
    "w.yml:9:19: error: m\nb.com:0\n      ^",
  );
});
