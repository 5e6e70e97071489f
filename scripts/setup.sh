#!/usr/bin/env bash
# Installs the Debian packages egress and its tests need, only those that are missing.
# Idempotent; safe to run on every test run. Needs root (apt-get); says what it needs otherwise.
set -euo pipefail

# package:command-or-file that proves it is installed
needs=(
  clang:/usr/bin/clang
  llvm:/usr/bin/llvm-strip
  libbpf-dev:/usr/include/bpf/libbpf.h
  libbpf1:/usr/lib/x86_64-linux-gnu/libbpf.so.1
  bpftool:/usr/sbin/bpftool
  libnetfilter-queue1:/usr/lib/x86_64-linux-gnu/libnetfilter_queue.so.1
  iptables:/usr/sbin/iptables
  nftables:/usr/sbin/nft
  iproute2:/usr/sbin/ip
  dnsutils:/usr/bin/dig
  curl:/usr/bin/curl
  conntrack:/usr/sbin/conntrack
  util-linux:/usr/bin/setpriv
  socat:/usr/bin/socat
  dnsmasq-base:/usr/sbin/dnsmasq
  openssl:/usr/bin/openssl
  procps:/usr/bin/pgrep
  python3:/usr/bin/python3
)

arch_lib=/usr/lib/$(uname -m)-linux-gnu
missing=()
for entry in "${needs[@]}"; do
  pkg=${entry%%:*}
  probe=${entry#*:}
  probe=${probe//\/usr\/lib\/x86_64-linux-gnu/$arch_lib}
  [ -e "$probe" ] || missing+=("$pkg")
done

# The `egress` launcher on PATH (cli.md): runs this checkout's mod.ts with the pinned Deno.
install_launcher() {
  local repo launcher=/usr/local/bin/egress
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  [ "$(id -u)" -eq 0 ] && [ -d /usr/local/bin ] || return 0
  if [ -e "$launcher" ] && ! grep -q "^# egress launcher" "$launcher" 2>/dev/null; then
    echo "setup: $launcher exists and is not an egress launcher; leaving it alone" >&2
    return 0
  fi
  cat >"$launcher.tmp" <<LAUNCHER
#!/bin/sh
# egress launcher (written by scripts/setup.sh of $repo)
export DENO_NO_UPDATE_CHECK=1
exec npx -y deno@2.9.6 run -A --config "$repo/deno.json" "$repo/mod.ts" "\$@"
LAUNCHER
  chmod 0755 "$launcher.tmp" && mv "$launcher.tmp" "$launcher"
}

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all Debian packages present"
  install_launcher
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: missing Debian packages: ${missing[*]}" >&2
  echo "setup: run as root, or install them: sudo apt-get install -y ${missing[*]}" >&2
  echo "setup: continuing; tests that need them will be skipped with a reason" >&2
  exit 0
fi

echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq || echo "setup: apt-get update failed; trying the install anyway" >&2
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/egress-setup-apt.log 2>&1 || {
  echo "setup: apt-get install failed; last lines of /tmp/egress-setup-apt.log:" >&2
  tail -n 20 /tmp/egress-setup-apt.log >&2
  exit 1
}
install_launcher
echo "setup: done"
