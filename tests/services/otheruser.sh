#!/usr/bin/env bash
# A second unprivileged user for the tests that another user cannot reach a user's image server
# (tests/faults.rs), run by `sudo ./run-tests` as root:
#   otheruser.sh start SCRATCH TEST_USER RSING_BIN   prints RSING_TEST_OTHER_USER_PROBE=DIR
#   otheruser.sh stop SCRATCH ...                     stops the probe loop
# DIR is /run/rsing-test-otheruser, owned by TEST_USER, open to rsingtest2.
# The user `rsingtest2` is created by run-tests (prepare_machine). The probe is a root loop
# that reads one socket path at a time from DIR/request (a FIFO the test user may write) and
# tries, as rsingtest2, to connect to it; it writes "connected", "refused: ERROR" or
# "error: ..." to DIR/result. It runs only this fixed probe, never a command it is sent.
set -euo pipefail
say() { echo "otheruser.sh: $*" >&2; }
OTHER=rsingtest2
cmd=$1 scratch=$2 test_user=${3:-rsingtest}
# Not under SCRATCH: the test user's home may be closed to other users.
dir=/run/rsing-test-otheruser
pidfile=$dir/probe.pid

probe() {
    python3 - "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
    print("connected")
except OSError as e:
    print(f"refused: {e.strerror}")
PY
}

case $cmd in
start)
    if ! id -u "$OTHER" >/dev/null 2>&1; then
        say "user $OTHER is missing (run-tests creates it); other-user tests will skip"
        exit 0
    fi
    if ! command -v python3 >/dev/null; then
        say "python3 is missing; other-user tests will skip"
        exit 0
    fi
    "$0" stop "$scratch" >/dev/null 2>&1 || true
    rm -rf "$dir"
    install -d -o "$test_user" -m 0755 "$dir"
    mkfifo -m 0600 "$dir/request"
    chown "$test_user" "$dir/request"
    (
        while true; do
            read -r path <"$dir/request" || continue
            # The probe runs as the other user; it only gets a path to try.
            result=$(runuser -u "$OTHER" -- env -i PATH=/usr/local/bin:/usr/bin:/bin bash -c "$(declare -f probe); probe \"\$1\"" _ "$path" 2>&1 |
                tail -n1) || result="error: $result"
            printf '%s\n' "$result" >"$dir/result.tmp"
            chown "$test_user" "$dir/result.tmp"
            mv -f "$dir/result.tmp" "$dir/result"
        done
    ) </dev/null >/dev/null 2>&1 &
    echo $! >"$pidfile"
    echo "RSING_TEST_OTHER_USER_PROBE=$dir"
    ;;
stop)
    if [[ -r $pidfile ]]; then
        kill "$(cat "$pidfile")" 2>/dev/null || true
        rm -f "$pidfile"
    fi
    ;;
esac
