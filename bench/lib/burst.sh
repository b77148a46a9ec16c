#!/bin/sh
# usage: burst.sh N CMD [ARGS...]
# Starts N copies of CMD at once (a job's ranks starting on one node) and waits for all of
# them; fails when any copy failed. Their output is discarded.
n=$1
shift
pids=
i=0
while [ $i -lt "$n" ]; do
  "$@" > /dev/null &
  pids="$pids $!"
  i=$((i + 1))
done
rc=0
for p in $pids; do wait "$p" || rc=1; done
exit $rc
