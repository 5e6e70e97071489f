import assert from "node:assert/strict";
import { normalizePypiName, packageFromUrl, purlFromUrl } from "../../src/packages/purl.ts";

const CASES: Array<[string, string | undefined]> = [
  // npm, unscoped, both hosts
  ["https://registry.npmjs.org/express/-/express-4.18.2.tgz", "pkg:npm/express@4.18.2"],
  ["https://registry.yarnpkg.com/lodash/-/lodash-4.17.21.tgz", "pkg:npm/lodash@4.17.21"],
  ["http://registry.npmjs.org/left-pad/-/left-pad-1.3.0.tgz", "pkg:npm/left-pad@1.3.0"],
  [
    "https://registry.npmjs.org/typescript/-/typescript-5.4.0-dev.20240101.tgz",
    "pkg:npm/typescript@5.4.0-dev.20240101",
  ],
  // npm scoped; the scope's @ is not escaped; %2f / %2F count as /
  ["https://registry.npmjs.org/@types/node/-/node-20.11.5.tgz", "pkg:npm/@types/node@20.11.5"],
  ["https://registry.npmjs.org/@babel%2fcore/-/core-7.23.0.tgz", "pkg:npm/@babel/core@7.23.0"],
  ["https://registry.npmjs.org/@babel%2Fcore/-/core-7.23.0.tgz", "pkg:npm/@babel/core@7.23.0"],
  ["https://registry.npmjs.org/%40babel%2Fcore/-/core-7.23.0.tgz", "pkg:npm/@babel/core@7.23.0"],
  // query and fragment never defeat the check
  ["https://registry.npmjs.org/express/-/express-4.18.2.tgz?x", "pkg:npm/express@4.18.2"],
  ["https://registry.npmjs.org/express/-/express-4.18.2.tgz?cache=bust#frag", "pkg:npm/express@4.18.2"],
  ["https://REGISTRY.NPMJS.ORG./express/-/express-4.18.2.tgz", "pkg:npm/express@4.18.2"],
  ["https://registry.npmjs.org:443/express/-/express-4.18.2.tgz", "pkg:npm/express@4.18.2"],
  // other spellings of the same path a registry serves alike are still checked
  ["https://registry.npmjs.org/%65vil/-/%65vil-1.0.0.tgz", "pkg:npm/evil@1.0.0"],
  ["https://registry.npmjs.org//evil/-/evil-1.0.0.tgz", "pkg:npm/evil@1.0.0"],
  ["https://registry.npmjs.org/./evil/./-/evil-1.0.0.tgz/", "pkg:npm/evil@1.0.0"],
  ["https://registry.npmjs.org/x/../evil/-/evil-1.0.0.tgz", "pkg:npm/evil@1.0.0"],
  ["https://registry.npmjs.org/evil/%2e%2e/evil/-/evil-1.0.0.tgz", "pkg:npm/evil@1.0.0"],
  ["https://registry.npmjs.org/evil/-/evil-1%2E0.0%2etgz", "pkg:npm/evil@1.0.0"],
  ["https://files.pythonhosted.org/packages//aa/evil-1.0.tar.gz", "pkg:pypi/evil@1.0"],
  ["https://static.crates.io/crates/evil/evil-1.0.0%2Ecrate", "pkg:cargo/evil@1.0.0"],
  // decoded once only; escapes of other characters stay (and fail the name/version charset)
  ["https://registry.npmjs.org/%2565vil/-/%2565vil-1.0.0.tgz", undefined],
  // npm: not downloads, or names not repeated
  ["https://registry.npmjs.org/express", undefined],
  ["https://registry.npmjs.org/express/-/lodash-4.17.21.tgz", undefined],
  ["https://registry.npmjs.org/@types/node/-/types-node-20.11.5.tgz", undefined],
  ["https://registry.npmjs.org/express/-/express-.tgz", undefined],
  ["https://registry.npmjs.org/express/-/express-4.18.2;rm.tgz", undefined],
  ["https://registry.npmjs.org/express/-/express-4%2018.tgz", undefined],
  ["https://example.com/express/-/express-4.18.2.tgz", undefined],
  ["ftp://registry.npmjs.org/express/-/express-4.18.2.tgz", undefined],
  // PyPI sdist: version after the first "-" followed by a digit; names PEP 503-normalised
  [
    "https://files.pythonhosted.org/packages/source/p/python-dateutil/python-dateutil-2.8.2.tar.gz",
    "pkg:pypi/python-dateutil@2.8.2",
  ],
  ["https://files.pythonhosted.org/packages/aa/bb/pkg-1.0-beta.tar.gz", "pkg:pypi/pkg@1.0-beta"],
  ["https://files.pythonhosted.org/packages/aa/bb/Zope.Interface-6.1.zip", "pkg:pypi/zope-interface@6.1"],
  ["https://files.pythonhosted.org/packages/aa/bb/My__Odd..Name-0.1.tar.gz?x=1", "pkg:pypi/my-odd-name@0.1"],
  ["https://files.pythonhosted.org/packages/aa/bb/noversion.tar.gz", undefined],
  ["https://files.pythonhosted.org/packages/aa/bb/pkg-1.0!x.tar.gz", undefined],
  // PyPI wheel: ≥ 5 parts, name part 1, version part 2
  [
    "https://files.pythonhosted.org/packages/70/8e/0e2d/requests-2.31.0-py3-none-any.whl",
    "pkg:pypi/requests@2.31.0",
  ],
  [
    "https://files.pythonhosted.org/packages/aa/bb/Typing_Extensions-4.9.0-py3-none-any.whl",
    "pkg:pypi/typing-extensions@4.9.0",
  ],
  [
    "https://files.pythonhosted.org/packages/aa/numpy-1.26.3-1-cp312-cp312-manylinux_2_17_x86_64.whl",
    "pkg:pypi/numpy@1.26.3",
  ],
  ["https://files.pythonhosted.org/packages/aa/bb/bad-1.0-py3-none.whl", undefined],
  ["https://files.pythonhosted.org/simple/requests-2.31.0-py3-none-any.whl", undefined],
  ["https://pypi.org/packages/aa/requests-2.31.0-py3-none-any.whl", undefined],
  // Cargo: the API download on both hosts, the static file on static.crates.io
  ["https://crates.io/api/v1/crates/serde/1.0.195/download", "pkg:cargo/serde@1.0.195"],
  ["https://static.crates.io/api/v1/crates/serde_json/1.0.111/download", "pkg:cargo/serde_json@1.0.111"],
  ["https://static.crates.io/crates/rand/rand-0.8.5.crate", "pkg:cargo/rand@0.8.5"],
  ["https://static.crates.io/crates/Inflector/Inflector-0.11.4.crate?x", "pkg:cargo/Inflector@0.11.4"],
  ["https://crates.io/crates/rand/rand-0.8.5.crate", undefined],
  ["https://static.crates.io/crates/rand/serde-0.8.5.crate", undefined],
  ["https://crates.io/api/v1/crates/serde/1.0.195", undefined],
  ["https://crates.io/api/v1/crates/serde/1.0.195%2Fx/download", undefined],
  ["https://crates.io/api/v1/crates/serde/1.0.195;x/download", undefined],
  ["not a url", undefined],
];

for (const [url, expected] of CASES) {
  Deno.test(`purlFromUrl ${url}`, () => {
    assert.equal(purlFromUrl(url), expected);
  });
}

Deno.test("packageFromUrl gives ecosystem, name and version", () => {
  assert.deepEqual(packageFromUrl("https://registry.npmjs.org/@types/node/-/node-20.11.5.tgz"), {
    ecosystem: "npm",
    name: "@types/node",
    version: "20.11.5",
    purl: "pkg:npm/@types/node@20.11.5",
  });
  assert.deepEqual(packageFromUrl("https://files.pythonhosted.org/packages/x/python-dateutil-2.8.2.tar.gz"), {
    ecosystem: "pypi",
    name: "python-dateutil",
    version: "2.8.2",
    purl: "pkg:pypi/python-dateutil@2.8.2",
  });
});

Deno.test("normalizePypiName follows PEP 503", () => {
  assert.equal(normalizePypiName("Friendly-Bard"), "friendly-bard");
  assert.equal(normalizePypiName("FRIENDLY-BARD"), "friendly-bard");
  assert.equal(normalizePypiName("friendly.bard"), "friendly-bard");
  assert.equal(normalizePypiName("friendly_bard"), "friendly-bard");
  assert.equal(normalizePypiName("friendly--bard"), "friendly-bard");
  assert.equal(normalizePypiName("FrIeNdLy-._.-bArD"), "friendly-bard");
});
