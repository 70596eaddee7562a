#!/usr/bin/env bash
# The architecture's dependency rule, checked on the sources: server ->
# jobs -> block, never upwards; the monitor (server/qmp/) reaches the NBD
# server (server/nbd/) through its public headers only (nbd-server.h,
# export.h, listen.h, tls.h), never its connection or wire internals; the
# NBD server knows nothing of the monitor; the plugin and the backup tool
# sit on the block layer alone.
source "${srcdir:-$(dirname "$0")}/functions.sh"

top=$(cd "${srcdir:-$(dirname "$0")}/.." && pwd)
cd "$top"

includes() { # includes DIR...: "file: header" for every quoted #include
    grep -rHo '#include "[^"]*"' "$@" --include='*.c' --include='*.h' |
        sed 's/#include "\(.*\)"/\1/'
}

bad=$(includes block | grep -E ':(jobs|server|plugins|tools)/')
[ -z "$bad" ] || fail "block/ includes an upper layer: $bad"
bad=$(includes jobs | grep -E ':(server|plugins|tools)/')
[ -z "$bad" ] || fail "jobs/ includes the server: $bad"
bad=$(includes plugins tools | grep -E ':(server|jobs)/')
[ -z "$bad" ] || fail "the plugin or the tool includes server/jobs: $bad"
bad=$(includes server/nbd | grep -E ':(server/qmp/|jobs/|qmp)')
[ -z "$bad" ] || fail "server/nbd includes the monitor or jobs: $bad"
bad=$(includes server/qmp |
      grep -E ':server/nbd/' |
      grep -vE ':server/nbd/(nbd-server|export|listen|tls)\.h$')
[ -z "$bad" ] || fail "server/qmp includes NBD internals: $bad"

# The rule must see something: the monitor does use the NBD server.
includes server/qmp | grep -q ':server/nbd/nbd-server.h$' ||
    fail "no include of server/nbd/nbd-server.h found: the check is blind"
echo "$0: ok"
