#!/usr/bin/env bash
# The two module systems the integration tests (tests/modules.rs) load modulefiles with, run by
# `sudo ./run-tests` as root:
#   modules.sh start SCRATCH TEST_USER RSING_BIN   prints KEY=VALUE lines:
#     RSING_TEST_LMOD_INIT         Lmod's bash init script (Debian's lmod, from ./install-deps)
#     RSING_TEST_ENVMODULES_INIT   environment-modules' bash init script, in a prefix under
#                                  SCRATCH (the Debian packages conflict, so this one is not
#                                  installed: `apt-get download` + `dpkg -x`, paths rewritten)
#   modules.sh stop ...            nothing to stop (the prefix is kept for the next run)
# A module system that is missing is reported on stderr and its variable is not printed; its
# tests then skip (or fail under CI=true).
set -euo pipefail
say() { echo "modules.sh: $*" >&2; }

LMOD_INIT=/usr/share/lmod/lmod/init/bash

lmod() {
    if [[ -r $LMOD_INIT ]]; then
        echo "RSING_TEST_LMOD_INIT=$LMOD_INIT"
    else
        say "Lmod is not installed ($LMOD_INIT missing; run ./install-deps)"
    fi
}

# The environment-modules .deb: apt's cache, else downloaded (needs the package lists).
find_deb() {
    local work=$1 deb
    deb=$(ls /var/cache/apt/archives/environment-modules_*.deb 2>/dev/null | tail -n1 || true)
    if [[ -z $deb ]]; then
        # apt drops privileges to _apt for the download: give it a directory it may write.
        chown _apt "$work" 2>/dev/null || true
        (cd "$work" && apt-get download -q environment-modules >/dev/null 2>&1) || true
        deb=$(ls "$work"/environment-modules_*.deb 2>/dev/null | tail -n1 || true)
    fi
    echo "$deb"
}

# Unpacks environment-modules into $1 and points its hard-coded /usr and /etc paths there.
# tclsh8.6 stays the system's (lmod depends on tcl, so it is installed).
unpack_envmodules() {
    local prefix=$1 work deb multiarch
    work=$(mktemp -d)
    deb=$(find_deb "$work")
    if [[ -z $deb ]]; then
        say "cannot get the environment-modules package (apt-get download failed)"
        rm -rf "$work"
        return 1
    fi
    dpkg -x "$deb" "$work/root"
    multiarch=$(cd "$work/root/usr/lib" && ls -d ./*/modulecmd.tcl | cut -d/ -f2)
    # One sed pass, so a rewritten path is never rewritten again; \ & # quoted for sed.
    local rep=${prefix//\\/\\\\}
    rep=${rep//&/\\&}
    rep=${rep//#/\\#}
    grep -rlI -e /usr/share/modules -e /etc/environment-modules -e "/usr/lib/$multiarch" \
        "$work/root" | while IFS= read -r file; do
        sed -i "s#\(/usr/share/modules\|/etc/environment-modules\|/usr/lib/$multiarch\)#$rep\1#g" \
            "$file"
    done
    ln -sfn "$prefix/etc/environment-modules/modulespath" \
        "$work/root/usr/share/modules/init/.modulespath"
    basename "$deb" >"$work/root/.deb"
    rm -rf "$prefix"
    mv "$work/root" "$prefix"
    chmod -R a+rX "$prefix"
    rm -rf "$work"
}

envmodules() {
    local scratch=$1 prefix init
    prefix=$scratch/environment-modules
    init=$prefix/usr/share/modules/init/bash
    if ! command -v tclsh8.6 >/dev/null; then
        say "tclsh8.6 is missing (package tcl8.6; run ./install-deps): environment-modules skipped"
        return 0
    fi
    if [[ ! -r $init ]] && ! unpack_envmodules "$prefix"; then
        return 0
    fi
    echo "RSING_TEST_ENVMODULES_INIT=$init"
}

ACTION=${1:?usage: modules.sh start|stop SCRATCH TEST_USER RSING_BIN}
SCRATCH=${2:?usage: modules.sh start|stop SCRATCH TEST_USER RSING_BIN}
case $ACTION in
start)
    lmod
    envmodules "$SCRATCH"
    ;;
stop) ;;
*) say "unknown action $ACTION"; exit 2 ;;
esac
