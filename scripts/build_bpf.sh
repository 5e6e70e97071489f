#!/usr/bin/env bash
# Builds egress's BPF objects (CO-RE) into bpf/dist/, which is committed so runners need no compiler.
# Needs clang, llvm-strip, bpftool, libbpf-dev (Debian: clang llvm bpftool libbpf-dev) and a kernel
# with BTF at /sys/kernel/btf/vmlinux (for vmlinux.h, git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in clang llvm-strip bpftool; do
  command -v "$tool" >/dev/null || {
    echo "build_bpf: $tool not found (apt-get install clang llvm bpftool libbpf-dev)" >&2
    exit 1
  }
done
[ -r /sys/kernel/btf/vmlinux ] || {
  echo "build_bpf: /sys/kernel/btf/vmlinux missing: the kernel has no BTF" >&2
  exit 1
}

bpftool btf dump file /sys/kernel/btf/vmlinux format c >bpf/vmlinux.h.tmp
mv bpf/vmlinux.h.tmp bpf/vmlinux.h

arch=$(uname -m)
case "$arch" in
  x86_64) target_arch=x86 ;;
  aarch64) target_arch=arm64 ;;
  *) target_arch=$arch ;;
esac

mkdir -p bpf/dist
for source in bpf/*.bpf.c; do
  name=$(basename "$source" .c)
  out="bpf/dist/$name.o"
  clang -O2 -g -target bpf -D__TARGET_ARCH_"$target_arch" -Wall -Werror \
    -I bpf -c "$source" -o "$out.tmp"
  llvm-strip -g "$out.tmp"
  mv "$out.tmp" "$out"
  echo "build_bpf: $out"
done
