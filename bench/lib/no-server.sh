#!/bin/sh
# usage: no-server.sh IMG
# Waits (at most 20 s) until no `rsing __serve` of IMG runs, so that the next container of
# IMG is the first one of a new image server (bench/run's "first container" rows use it as
# hyperfine's --prepare, with RSING_SHARE_LINGER=0). A server writes its block file before it
# removes its socket, so the next server finds it.
i=0
while pgrep -f -- "__serve .*$1" > /dev/null 2>&1; do
  i=$((i + 1))
  [ $i -lt 1000 ] || { echo "no-server.sh: a server of $1 is still running after 20 s" >&2; exit 1; }
  sleep 0.02
done
