/*
 * snapshot-access.c - the "snapshot-access" filter: the point in time that
 * a copy-before-write node keeps, read-only (QEMU's
 * block/snapshot-access.c).  Its "file" child must be a copy-before-write
 * node.
 *
 * Reads give the chunks already copied from the copy-before-write target
 * and the others from the live source, which cannot change under the read
 * (block-copy freezes them: a guest write to them waits).  Block status
 * says the same.  A discard tells copy-before-write that the range is not
 * needed any more (a backup tool has read it): it is never copied from
 * then on and is dropped from the target, so the fleecing store shrinks
 * as the tool reads; reading it afterwards fails with EACCES, as does
 * everything once the copy-before-write node has lost its point in time.
 */
#include "block/copy-before-write.h"
#include "block-int.h"

#include <errno.h>

typedef struct SnapshotAccessState {
    BlockNode *cbw;
    BlockCopyState *bcs;
} SnapshotAccessState;

static int snapshot_access_open(BlockNode *bs, GHashTable *options,
                                GError **errp)
{
    SnapshotAccessState *s = bs->opaque;

    s->cbw = bdrv_open_child(bs, options, "file", errp);
    if (!s->cbw)
        return -EINVAL;
    s->bcs = bdrv_cbw_copy_state(s->cbw);
    if (!s->bcs) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "snapshot-access: node '%s' is no copy-before-write "
                    "node", bdrv_node_name(s->cbw));
        return -EINVAL;
    }
    block_copy_reader(s->bcs, true);
    return 0;
}

/* Its discards are what frees a bounded store: copy-before-writes waiting
 * for room stop waiting once no reader is left. */
static void snapshot_access_close(BlockNode *bs)
{
    SnapshotAccessState *s = bs->opaque;

    if (s->bcs)
        block_copy_reader(s->bcs, false);
}

static int64_t snapshot_access_get_length(BlockNode *bs)
{
    SnapshotAccessState *s = bs->opaque;

    return s->cbw ? bdrv_getlength(s->cbw) : -EINVAL;
}

static int check_snapshot(SnapshotAccessState *s)
{
    int error;

    return bdrv_cbw_broken(s->cbw, &error) ? -EACCES : 0;
}

static int snapshot_access_pread(BlockNode *bs, int64_t offset,
                                 int64_t bytes, void *buf)
{
    SnapshotAccessState *s = bs->opaque;
    int ret = check_snapshot(s);

    if (ret == 0)
        ret = block_copy_snapshot_read(s->bcs, offset, bytes, buf);
    /* A read that overlapped the break may hold new data: say so. */
    return ret == 0 ? check_snapshot(s) : ret;
}

static int snapshot_access_pwrite(BlockNode *bs, int64_t offset,
                                  int64_t bytes, const void *buf, int flags)
{
    return -EPERM;
}

static int snapshot_access_pwrite_zeroes(BlockNode *bs, int64_t offset,
                                         int64_t bytes, int flags)
{
    return -EPERM;
}

static int snapshot_access_pdiscard(BlockNode *bs, int64_t offset,
                                    int64_t bytes)
{
    SnapshotAccessState *s = bs->opaque;
    BlockNode *target = bdrv_child(s->cbw, "target");
    int64_t start, n = block_copy_forget(s->bcs, offset, bytes, &start);

    return n > 0 ? bdrv_pdiscard(target, start, n) : 0;
}

static int snapshot_access_block_status(BlockNode *bs, int64_t offset,
                                        int64_t bytes, int64_t *pnum)
{
    SnapshotAccessState *s = bs->opaque;
    int ret = check_snapshot(s);

    return ret < 0 ? ret
                   : block_copy_snapshot_status(s->bcs, offset, bytes, pnum);
}

/* Only reads the copy-before-write node: a fleecing reader lets the guest
 * go on writing the source below it. */
static void snapshot_access_child_perm(BlockNode *bs, const char *name,
                                       uint32_t perm, uint32_t shared,
                                       uint32_t *nperm, uint32_t *nshared)
{
    *nperm = perm & BDRV_PERM_CONSISTENT_READ;
    *nshared = BDRV_PERM_ALL;
}

const BlockDriver bdrv_snapshot_access = {
    .name = "snapshot-access",
    .state_size = sizeof(SnapshotAccessState),
    .is_filter = true,
    .open = snapshot_access_open,
    .close = snapshot_access_close,
    .get_length = snapshot_access_get_length,
    .pread = snapshot_access_pread,
    .pwrite = snapshot_access_pwrite,
    .pwrite_zeroes = snapshot_access_pwrite_zeroes,
    .pdiscard = snapshot_access_pdiscard,
    .block_status = snapshot_access_block_status,
    .child_perm = snapshot_access_child_perm,
};
