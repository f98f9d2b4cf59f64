#!/bin/sh
# dotcos-join NAME COMMAND...: join the Ray cluster at $DOTCOS_RAY_HEAD (default ray-head:6379) as a
# node named NAME without CPUs, run COMMAND (signals passed on), then leave the cluster with its
# exit status. A Ray driver (dotcos-serve in Ray mode, `dotcos-build --ray auto`) must run on a
# node of its cluster; this makes its container one.
set -u
name=$1
shift
head="${DOTCOS_RAY_HEAD:-ray-head:6379}"
if ! ray start --address="$head" --num-cpus=0 --node-name="$name" --disable-usage-stats >/tmp/ray-join.log 2>&1; then
  echo "dotcos-join: could not join the Ray cluster at $head:" >&2
  tail -n 5 /tmp/ray-join.log >&2
  exit 1
fi
"$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM INT
wait "$child"
status=$?
# A trapped signal ends the first wait early: wait again for the command's own exit status.
if kill -0 "$child" 2>/dev/null; then
  wait "$child"
  status=$?
fi
ray stop --force >/dev/null 2>&1
exit "$status"
