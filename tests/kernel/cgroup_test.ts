import assert from "node:assert/strict";
import {
  cgroup2MountFrom,
  cgroupV2PathFrom,
  parseMountInfo,
  resolveCgroupPath,
} from "../../src/kernel/cgroup.ts";

const HYBRID = `22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 22 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
33 30 0:29 / /sys/fs/cgroup/cpu rw,relatime shared:12 - cgroup cgroup rw,cpu
`;
const PURE_V2 =
  `35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`;

Deno.test("cgroup: the cgroup2 mount is found in hybrid and pure v2 mountinfo", () => {
  assert.equal(cgroup2MountFrom(HYBRID), "/sys/fs/cgroup/unified");
  assert.equal(cgroup2MountFrom(PURE_V2), "/sys/fs/cgroup");
  assert.equal(cgroup2MountFrom("garbage\n\n"), undefined);
  // A bind mount of a sub-tree (root field not "/") is not the hierarchy's mount.
  assert.equal(cgroup2MountFrom("40 30 0:27 /sub /mnt/x rw - cgroup2 cgroup2 rw\n"), undefined);
  // Optional fields of any count, and escaped spaces.
  const entries = parseMountInfo("41 30 0:27 / /mnt/with\\040space rw shared:1 master:2 - cgroup2 none rw\n");
  assert.deepEqual(entries, [{
    mountPoint: "/mnt/with space",
    root: "/",
    fsType: "cgroup2",
    source: "none",
  }]);
});

Deno.test("cgroup: --cgroup as a hierarchy path or a full path resolves to both forms", () => {
  const mount = "/sys/fs/cgroup/unified";
  const expected = {
    hierarchyPath: "/system.slice/egress.scope",
    fsPath: "/sys/fs/cgroup/unified/system.slice/egress.scope",
  };
  assert.deepEqual(resolveCgroupPath("/system.slice/egress.scope", mount), expected);
  assert.deepEqual(resolveCgroupPath("system.slice/egress.scope/", mount), expected);
  assert.deepEqual(resolveCgroupPath("/sys/fs/cgroup/unified/system.slice/egress.scope", mount), expected);
  assert.deepEqual(resolveCgroupPath("/", mount), { hierarchyPath: "/", fsPath: mount });
  assert.deepEqual(resolveCgroupPath(mount, mount), { hierarchyPath: "/", fsPath: mount });
  // Not under the mount: taken as a path inside the hierarchy, never outside it.
  assert.deepEqual(resolveCgroupPath("/sys/fs/cgroup/cpu", mount), {
    hierarchyPath: "/sys/fs/cgroup/cpu",
    fsPath: "/sys/fs/cgroup/unified/sys/fs/cgroup/cpu",
  });
  assert.throws(() => resolveCgroupPath("/a/../../etc", mount), /Cannot use cgroup .*"\.\." are not allowed/);
  assert.throws(() => resolveCgroupPath("/a/./b", mount), /not allowed/);
});

Deno.test("cgroup: the v2 line of /proc/<pid>/cgroup", () => {
  assert.equal(cgroupV2PathFrom("12:cpu:/x\n0::/system.slice/egress.scope\n"), "/system.slice/egress.scope");
  assert.equal(cgroupV2PathFrom("0::/\n"), "/");
  assert.equal(cgroupV2PathFrom("1:name=systemd:/x\n"), undefined);
});
