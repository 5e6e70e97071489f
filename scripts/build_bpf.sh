#!/usr/bin/env bash
# Builds egress's BPF objects (CO-RE) into bpf/dist/, which is committed so runners need no compiler.
# Needs clang, llvm-strip, bpftool, libbpf-dev (Debian: clang llvm bpftool libbpf-dev) and a kernel
# with BTF at /sys/kernel/btf/vmlinux (for vmlinux.h, git-ignored).
# EGRESS_BPF_OUT=<dir> builds into <dir> instead (vmlinux.h too), leaving bpf/ untouched: the
# reproducibility test compares such a build with the committed objects.
set -euo pipefail
cd "$(dirname "$0")/.."
out_dir=${EGRESS_BPF_OUT:-bpf/dist}
header_dir=${EGRESS_BPF_OUT:-bpf}

for tool in clang llvm-strip bpftool sha256sum; do
  command -v "$tool" >/dev/null || {
    echo "build_bpf: $tool not found (apt-get install clang llvm bpftool libbpf-dev coreutils)" >&2
    exit 1
  }
done
[ -r /sys/kernel/btf/vmlinux ] || {
  echo "build_bpf: /sys/kernel/btf/vmlinux missing: the kernel has no BTF" >&2
  exit 1
}

mkdir -p "$out_dir" "$header_dir"
bpftool btf dump file /sys/kernel/btf/vmlinux format c >"$header_dir/vmlinux.h.tmp"
mv "$header_dir/vmlinux.h.tmp" "$header_dir/vmlinux.h"

arch=$(uname -m)
case "$arch" in
  x86_64) target_arch=x86 ;;
  aarch64) target_arch=arm64 ;;
  *) target_arch=$arch ;;
esac

for source in bpf/*.bpf.c; do
  name=$(basename "$source" .c)
  out="$out_dir/$name.o"
  # Relative source paths, the checkout's own path mapped away (BTF line info records source file
  # names) and no build-time data in the flags: the output is byte-identical for the same sources,
  # compiler and kernel BTF, wherever the checkout and the output directory are.
  clang -O2 -g -target bpf -D__TARGET_ARCH_"$target_arch" -Wall -Werror \
    -fdebug-prefix-map="$PWD"=. -fdebug-prefix-map="$(cd "$header_dir" && pwd)"=bpf \
    -I "$header_dir" -I bpf -c "$source" -o "$out.tmp"
  llvm-strip -g "$out.tmp"
  mv "$out.tmp" "$out"
  echo "build_bpf: $out"
done
# Which kernel BTF the objects were generated against: a rebuild elsewhere differs in vmlinux.h,
# so the reproducibility test only compares on a kernel with the same BTF.
sha256sum </sys/kernel/btf/vmlinux | cut -d' ' -f1 >"$out_dir/kernel_btf.sha256"
