#!/usr/bin/env bash
# snapnbd-backup's errors: each is one line on stderr naming the problem,
# with the documented exit status, and leaves no partial backup behind:
#   2  a bad command line (unknown command, inc without --bitmap, ...)
#   5  the export lacks qemu:dirty-bitmap:NAME
#   4  inc into a directory with no full backup; a chain whose qcow2
#      file is missing or backed by a foreign file; a manifest whose
#      parent is gone; an export whose size changed
#   1  a server that is not there
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/backup-tool-functions.sh"

size=$((16 << 20))
disk=$tmp/disk.qcow2
dir=$tmp/backups
sock=$tmp/src.sock
src=$(uri "$sock")

qemu-img create -q -f qcow2 "$disk" $size
qemu-io -f qcow2 -c 'write -P 1 0 1M' "$disk" >/dev/null
qemu-img bitmap --add "$disk" b0

one_line_error "unknown command 'fool'" 2 "$backup" fool "$src" "$dir"
one_line_error "'inc' needs --bitmap NAME" 2 "$backup" inc "$src" "$dir"
one_line_error "--bitmap is for 'inc'" 2 "$backup" full "$src" "$dir" -B b0
one_line_error "usage: snapnbd-backup verify DIR\\[/BACKUP\\]" 2 "$backup" verify
one_line_error "no command given" 2 "$backup"
one_line_error "--requests must be" 2 "$backup" full -r 0 "$src" "$dir"
one_line_error "--chunk-size must be" 2 "$backup" full -c 100M "$src" "$dir"
one_line_error "cannot connect" 1 "$backup" full "$src" "$dir"

serve "$sock" "$disk" -r -B b0
one_line_error "$tmp/nowhere is not a backup directory" 4 \
    "$backup" inc "$src" "$tmp/nowhere" -B b0
mkdir "$tmp/empty"
one_line_error "has no full backup: take one with 'snapnbd-backup full'" 4 \
    "$backup" inc "$src" "$tmp/empty" -B b0
"$backup" full "$src" "$dir" >/dev/null || fail "full backup failed"
one_line_error "export does not offer qemu:dirty-bitmap:b9" 5 \
    "$backup" inc "$src" "$dir" -B b9
"$backup" inc "$src" "$dir" -B b0 >/dev/null || fail "inc failed"
stop_serving "$sock"

# A foreign backing file under the incremental.
cp "$dir/0001-full.qcow2" "$tmp/other.qcow2"
qemu-img rebase -q -u -f qcow2 -b "$tmp/other.qcow2" -F qcow2 \
    "$dir/0002-inc.qcow2"
one_line_error "chain broken: 0002-inc.qcow2 is backed by $tmp/other.qcow2, not by 0001-full.qcow2" 4 \
    "$backup" restore "$dir/0002-inc" "$tmp/r.raw"
qemu-img rebase -q -u -f qcow2 -b 0001-full.qcow2 -F qcow2 "$dir/0002-inc.qcow2"
"$backup" restore "$dir/0002-inc" "$tmp/r.raw" >/dev/null ||
    fail "the chain mended, restore still fails"

# The full backup's file gone: every command that needs the chain says so.
mv "$dir/0001-full.qcow2" "$tmp/full.qcow2"
serve "$sock" "$disk" -r -B b0
one_line_error "chain broken: $dir/0001-full.qcow2 is missing" 4 \
    "$backup" inc "$src" "$dir" -B b0
stop_serving "$sock"
one_line_error "chain broken: $dir/0001-full.qcow2 is missing" 4 \
    "$backup" restore "$dir" "$tmp/r.raw"
one_line_error "chain broken: $dir/0001-full.qcow2 is missing" 4 \
    "$backup" verify "$dir/0002-inc.manifest"
mv "$tmp/full.qcow2" "$dir/0001-full.qcow2"

# Its manifest gone: the incremental has nothing to stand on.
mv "$dir/0001-full.manifest" "$tmp/full.manifest"
one_line_error "chain broken: 0002-inc is layered on 0001-full, which is unusable" 4 \
    "$backup" verify "$dir/0002-inc"
mv "$tmp/full.manifest" "$dir/0001-full.manifest"

# The export grew: an incremental cannot describe it.
qemu-img resize -q "$disk" $((2 * size))
serve "$sock" "$disk" -r -B b0
one_line_error "the export's size changed since 0002-inc" 4 \
    "$backup" inc "$src" "$dir" -B b0
stop_serving "$sock"

# No failure left a partial backup; the two good ones are all there is.
ls "$dir" | grep -v '^000[12]-\(full\|inc\)\.\(qcow2\|sums\|manifest\)$' >"$tmp/out" || :
[ ! -s "$tmp/out" ] || fail "left behind: $(cat "$tmp/out")"
"$backup" verify "$dir" >/dev/null || fail "the chain does not verify at the end"
