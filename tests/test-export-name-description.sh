#!/usr/bin/env bash
# -x NAME -D TEXT: the export is listed (NBD_OPT_LIST) under NAME with the
# description TEXT, NBD_OPT_INFO/GO report TEXT too, clients asking for
# NAME are served and clients asking for any other name (including the
# default "") are refused.  Without -x the export is "", without -D there
# is no description.
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires nbdinfo

img=$tmp/disk.img
truncate -s 3M "$img"
name=vm-disk1
desc="Root disk of test VM, 3 MiB"

start_server "$tmp/sock" "$tmp/pid" -f raw -t -x "$name" -D "$desc" "$img"

nbdinfo --list "$(uri "$tmp/sock")" >"$tmp/list" || fail "nbdinfo --list failed"
grep -qxF "export=\"$name\":" "$tmp/list" ||
    fail "export name not listed: $(cat "$tmp/list")"
grep -qF "description: $desc" "$tmp/list" ||
    fail "description not listed: $(cat "$tmp/list")"

size=$(nbdinfo --size "$(uri "$tmp/sock" "$name")") ||
    fail "nbdinfo of the right name failed"
[ "$size" -eq $((3 * 1024 * 1024)) ] || fail "wrong size $size"

for wrong in wrong "" "$name-2" "VM-DISK1"; do
    if nbdinfo --size "$(uri "$tmp/sock" "$wrong")" >/dev/null 2>"$tmp/err"
    then
        fail "a client asking for export '$wrong' was served"
    fi
done

$PYTHON - "$(uri "$tmp/sock")" "$name" "$desc" <<'EOP' || fail "nbdsh checks"
import sys, nbd
uri, name, desc = sys.argv[1:4]
h = nbd.NBD()
h.set_opt_mode(True)
h.set_full_info(True)
h.connect_uri(uri)
listed = []
h.opt_list(lambda n, d: listed.append((n, d)))
assert listed == [(name, desc)], f"NBD_OPT_LIST gave {listed}"
h.set_export_name("nope")
try:
    h.opt_info()
    raise AssertionError("NBD_OPT_INFO for an unknown name succeeded")
except nbd.Error:
    pass
h.set_export_name(name)
h.opt_info()
assert h.get_export_description() == desc
assert h.get_canonical_export_name() == name
h.opt_go()
assert h.get_export_description() == desc
assert h.get_size() == 3 * 1024 * 1024
h.pwrite(b"ok" * 256, 0)
h.shutdown()
EOP

# Defaults: export "", no description.
start_server "$tmp/sock2" "$tmp/pid2" -f raw -t "$img"
$PYTHON - "$(uri "$tmp/sock2")" <<'EOP' || fail "default name checks"
import sys, nbd
h = nbd.NBD()
h.set_opt_mode(True)
h.set_full_info(True)
h.connect_uri(sys.argv[1])
listed = []
h.opt_list(lambda n, d: listed.append((n, d)))
assert listed == [("", "")], f"NBD_OPT_LIST gave {listed}"
h.opt_go()
try:
    d = h.get_export_description()
    raise AssertionError(f"a description without -D: {d!r}")
except nbd.Error:
    pass
assert h.pread(512, 0) == b"ok" * 256
h.shutdown()
EOP
nbdinfo --size "$(uri "$tmp/sock2" other)" >/dev/null 2>&1 &&
    fail "default export served under another name"
true
