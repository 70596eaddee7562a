#!/usr/bin/env bash
# The layers a commit drops change their view as the base takes the data
# above them: as in QEMU, the job holds them against other readers (an
# export of a point in time lower in the chain would silently change) and
# against resizes.  Transcripts over QMP on stdio, the same as
# qemu-storage-daemon 7.2's where it is installed, for the intermediate
# commit (top-node above the base) and the active commit:
#  - a commit under an export of a layer it drops is refused, with QEMU's
#    permission conflict ("intermediate node");
#  - once that export is gone the commit runs, and an export of that layer
#    added while it runs is refused too;
#  - an export of the base stays allowed, and of the active layer in an
#    intermediate commit (in an active commit QEMU refuses that one: the
#    new reader of the active layer reaches the dropped layers through its
#    backing link, above which QEMU's filter is not; snapnbd lets it be,
#    as the active layer's view does not change, so it is left out here);
# and the images check after the cancelled commits.
source "${srcdir:-$(dirname "$0")}/functions.sh"
source "$srcdir/qmp-functions.sh"
requires qemu-img qemu-io

cd "$tmp" || fail "no $tmp"
qemu-img create -q -f qcow2 base.qcow2 16M
qemu-img create -q -f qcow2 -F qcow2 -b base.qcow2 mid2.qcow2
qemu-img create -q -f qcow2 -F qcow2 -b mid2.qcow2 mid1.qcow2
qemu-img create -q -f qcow2 -F qcow2 -b mid1.qcow2 top.qcow2
qemu-io -c "write -P 0x11 0 1M" mid1.qcow2 >/dev/null
qemu-io -c "write -P 0x22 2M 1M" top.qcow2 >/dev/null

chain=()
for n in base mid2 mid1 top; do
    chain+=(--blockdev "driver=qcow2,node-name=$n,file.driver=file,file.filename=$tmp/$n.qcow2${backing:+,backing=$backing}")
    backing=$n
done
server=(--nbd-server "addr.type=unix,addr.path=$tmp/nbd.sock")

# speed 1: the job stays running while the later commands come
qmp_drop='JOB_STATUS_CHANGE|BLOCK_JOB_'
for kind in intermediate active; do
    if [ $kind = intermediate ]; then
        commit='{"execute": "block-commit", "arguments": {"job-id": "j", "device": "top", "top-node": "mid1", "base-node": "base", "speed": 1}}'
        top='{"execute": "block-export-add", "arguments": {"type": "nbd", "id": "et", "node-name": "top"}}'
        listed='{"node-name": "top", "shutting-down": false, "type": "nbd", "id": "et"}, '
    else
        commit='{"execute": "block-commit", "arguments": {"job-id": "j", "device": "top", "base-node": "base", "speed": 1}}'
        top='{"execute": "block-export-del", "arguments": {"id": "none"}}'
        listed=
    fi
    qmp_stdio_both "commit-$kind" "${chain[@]}" "${server[@]}" <<EOF
{"execute": "qmp_capabilities"}
{"execute": "block-export-add", "arguments": {"type": "nbd", "id": "e2", "node-name": "mid2"}}
$commit
{"execute": "block-export-del", "arguments": {"id": "e2"}}
$commit
{"execute": "block-export-add", "arguments": {"type": "nbd", "id": "e3", "node-name": "mid2"}}
{"execute": "block-export-add", "arguments": {"type": "nbd", "id": "eb", "node-name": "base"}}
$top
{"execute": "query-block-exports"}
{"execute": "quit"}
EOF
    conflict="{\"error\": {\"class\": \"GenericError\", \"desc\": \"Permission conflict on node 'mid2': permissions 'consistent read' are both required by an unnamed block device (uses node 'mid2' as 'root' child) and unshared by commit job 'j' (uses node 'mid2' as 'intermediate node' child).\"}}"
    [ "$(grep -cxF "$conflict" "commit-$kind.snapnbd")" = 2 ] ||
        fail "$kind commit: the export of mid2 not refused twice: $(cat "commit-$kind.snapnbd")"
    grep -qF "\"return\": [$listed{\"node-name\": \"base\", \"shutting-down\": false, \"type\": \"nbd\", \"id\": \"eb\"}]" \
        "commit-$kind.snapnbd" ||
        fail "$kind commit: the exports: $(cat "commit-$kind.snapnbd")"
done

for n in base mid2 mid1 top; do
    qemu-img check -q $n.qcow2 || fail "$n.qcow2 does not check"
done
echo "chain layers: ok${qmp_stdio_qsd:+, the same transcripts as qemu-storage-daemon}"
