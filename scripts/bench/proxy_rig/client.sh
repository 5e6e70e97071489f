#!/bin/sh
# Runs one benchmark client: joins the client cgroup, raises the fd limit, gets a private mount
# namespace whose /etc/hosts maps the upstream name (wrk and curl resolve it, and send it as SNI),
# enters the client network namespace and drops to nobody. Nothing outside the child changes.
# Usage: client.sh CGROUP_FS_PATH NETNS_PATH HOSTS_FILE argv...
set -e
echo $$ > "$1/cgroup.procs"
ulimit -n 8192
netns=$2
hosts=$3
shift 3
exec unshare --mount --propagation private sh -c '
  hosts=$0; netns=$1; shift
  mount --bind "$hosts" /etc/hosts
  exec nsenter --net="$netns" setpriv --reuid 65534 --regid 65534 --clear-groups -- "$@"
' "$hosts" "$netns" "$@"
