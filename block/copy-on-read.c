/*
 * copy-on-read.c - QEMU's "copy-on-read" filter: reads of data that the
 * top layer (its "file" child) does not hold yet, but a layer of its
 * backing chain does, copy that data up into the top layer, so that the
 * next read finds it there.
 *
 * Design notes.
 *
 * A read asks the allocation depth of each run under the child (1: in the
 * top layer, 2: its backing, ... 0: nowhere).  Runs at depth 1 and 0 are
 * read as they are; a run allocated below, down to "bottom" if given (a
 * node of the chain, inclusive, as QEMU's option), is read and then
 * written back into the child unchanged: as write-zeroes if it is all
 * zeroes, else as data.  A failed copy fails the read, as in QEMU.
 * A prefetch (NBD_CMD_CACHE) copies the same runs without a reader.
 *
 * Writing back is only right if nothing wrote the range between the read
 * and the write-back.  So copies and the writes, write-zeroes and discards
 * that pass through the filter lock their range (busy): each waits for the
 * overlapping ones in progress.  Plain reads do not wait.  The filter
 * takes write-unchanged on its child for the copies, besides what its
 * parents take (QEMU's cor_child_perm); a writer that bypasses the filter
 * is not ordered against copies, as it is not in QEMU's filter either
 * except through serialising requests.
 *
 * Locks: CorState.lock guards the busy list; cond is broadcast when a
 * range leaves it.  Never held across I/O.
 */
#include "block-int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* The largest run a prefetch copies at once. */
#define COPY_CHUNK ((int64_t)1 << 20)

typedef struct BusyRange {
    int64_t offset, bytes;
} BusyRange;

typedef struct CorState {
    BlockNode *file;
    int bottom_depth;   /* allocation depth of "bottom" under file; 0: none */
    GMutex lock;
    GCond cond;
    GList *busy;        /* of BusyRange *, guarded by lock */
} CorState;

static bool overlapping(CorState *s, int64_t offset, int64_t bytes)
{
    for (GList *l = s->busy; l; l = l->next) {
        BusyRange *r = l->data;
        if (r->offset < offset + bytes && offset < r->offset + r->bytes)
            return true;
    }
    return false;
}

static void range_lock(CorState *s, BusyRange *r, int64_t offset,
                       int64_t bytes)
{
    r->offset = offset;
    r->bytes = bytes;
    g_mutex_lock(&s->lock);
    while (overlapping(s, offset, bytes))
        g_cond_wait(&s->cond, &s->lock);
    s->busy = g_list_prepend(s->busy, r);
    g_mutex_unlock(&s->lock);
}

static void range_unlock(CorState *s, BusyRange *r)
{
    g_mutex_lock(&s->lock);
    s->busy = g_list_remove(s->busy, r);
    g_cond_broadcast(&s->cond);
    g_mutex_unlock(&s->lock);
}

static int cor_open(BlockNode *bs, GHashTable *options, GError **errp)
{
    CorState *s = bs->opaque;
    g_autofree char *bottom_name = opt_take(options, "bottom");
    BlockNode *bottom = NULL;

    g_mutex_init(&s->lock);
    g_cond_init(&s->cond);
    if (bottom_name) {
        bottom = bdrv_find_node(bottom_name);
        if (!bottom) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_FOUND,
                        "Bottom node '%s' not found", bottom_name);
            return -EINVAL;
        }
    }
    s->file = bdrv_open_child(bs, options, "file", errp);
    if (!s->file)
        return -EINVAL;
    if (bdrv_is_read_only(s->file)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_READ_ONLY,
                    "Cannot copy on read into the read-only node '%s'",
                    bdrv_node_name(s->file));
        return -EINVAL;
    }
    if (bottom) {
        s->bottom_depth = bdrv_chain_depth(s->file, bottom);
        if (!s->bottom_depth) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                        "Bottom node '%s' is not a member of the backing "
                        "chain of node '%s'", bottom_name,
                        bdrv_node_name(s->file));
            return -EINVAL;
        }
    }
    return 0;
}

static void cor_close(BlockNode *bs)
{
    CorState *s = bs->opaque;

    g_mutex_clear(&s->lock);
    g_cond_clear(&s->cond);
}

static int64_t cor_get_length(BlockNode *bs)
{
    CorState *s = bs->opaque;
    return bdrv_getlength(s->file);
}

static void cor_refresh_limits(BlockNode *bs, BlockLimits *limits)
{
    CorState *s = bs->opaque;
    *limits = *bdrv_limits(s->file);
}

/* Reads a run held below the top layer and writes it into the top. */
static int copy_up(CorState *s, int64_t offset, int64_t bytes, void *buf)
{
    BusyRange r;
    int ret;

    range_lock(s, &r, offset, bytes);
    ret = bdrv_pread(s->file, offset, bytes, buf);
    if (ret == 0) {
        bdrv_debug_event(s->file, BLKDBG_COR_WRITE);
        if (buffer_is_zero(buf, bytes))
            ret = bdrv_pwrite_zeroes(s->file, offset, bytes, 0);
        else
            ret = bdrv_pwrite(s->file, offset, bytes, buf, 0);
    }
    range_unlock(s, &r);
    return ret;
}

/* Should a run allocated at @depth be copied into the top layer? */
static bool wants_copy(CorState *s, int depth)
{
    return depth > 1 && (!s->bottom_depth || depth <= s->bottom_depth);
}

static int cor_pread(BlockNode *bs, int64_t offset, int64_t bytes, void *buf)
{
    CorState *s = bs->opaque;

    while (bytes > 0) {
        int64_t n;
        int depth = bdrv_allocation_depth(s->file, offset, bytes, &n);
        int ret;

        if (depth < 0)
            return depth;
        if (wants_copy(s, depth))
            ret = copy_up(s, offset, n, buf);
        else
            ret = bdrv_pread(s->file, offset, n, buf);
        if (ret < 0)
            return ret;
        offset += n;
        bytes -= n;
        buf = (char *)buf + n;
    }
    return 0;
}

static int cor_pwrite(BlockNode *bs, int64_t offset, int64_t bytes,
                      const void *buf, int flags)
{
    CorState *s = bs->opaque;
    BusyRange r;
    int ret;

    range_lock(s, &r, offset, bytes);
    ret = bdrv_pwrite(s->file, offset, bytes, buf, flags);
    range_unlock(s, &r);
    return ret;
}

static int cor_pwrite_zeroes(BlockNode *bs, int64_t offset, int64_t bytes,
                             int flags)
{
    CorState *s = bs->opaque;
    BusyRange r;
    int ret;

    range_lock(s, &r, offset, bytes);
    ret = bdrv_pwrite_zeroes(s->file, offset, bytes, flags);
    range_unlock(s, &r);
    return ret;
}

static int cor_pdiscard(BlockNode *bs, int64_t offset, int64_t bytes)
{
    CorState *s = bs->opaque;
    BusyRange r;
    int ret;

    range_lock(s, &r, offset, bytes);
    ret = bdrv_pdiscard(s->file, offset, bytes);
    range_unlock(s, &r);
    return ret;
}

/* NBD_CMD_CACHE: copies what a read would copy, as QEMU's prefetch
 * through the filter does; the rest is only advised to the child. */
static int cor_prefetch(BlockNode *bs, int64_t offset, int64_t bytes)
{
    CorState *s = bs->opaque;
    int64_t chunk = MIN(bytes, COPY_CHUNK);
    void *buf = NULL;
    int ret = 0;

    while (bytes > 0 && ret == 0) {
        int64_t n;
        int depth = bdrv_allocation_depth(s->file, offset,
                                          MIN(bytes, chunk), &n);

        if (depth < 0) {
            ret = depth;
        } else if (wants_copy(s, depth)) {
            if (!buf)
                buf = bdrv_blockalign(s->file, chunk);
            ret = buf ? copy_up(s, offset, n, buf) : -ENOMEM;
        } else {
            ret = bdrv_prefetch(s->file, offset, n);
        }
        offset += n;
        bytes -= n;
    }
    free(buf);
    return ret;
}

/* What the parents take and share passes through, plus write-unchanged
 * for the copies (QEMU's cor_child_perm). */
static void cor_child_perm(BlockNode *bs, const char *name, uint32_t perm,
                           uint32_t shared, uint32_t *nperm,
                           uint32_t *nshared)
{
    bdrv_child_perm_filtered(bs, name, perm, shared, nperm, nshared);
    *nperm |= BDRV_PERM_WRITE_UNCHANGED;
}

const BlockDriver bdrv_copy_on_read = {
    .name = "copy-on-read",
    .state_size = sizeof(CorState),
    .is_filter = true,
    .open = cor_open,
    .close = cor_close,
    .get_length = cor_get_length,
    .refresh_limits = cor_refresh_limits,
    .pread = cor_pread,
    .pwrite = cor_pwrite,
    .pwrite_zeroes = cor_pwrite_zeroes,
    .pdiscard = cor_pdiscard,
    .prefetch = cor_prefetch,
    .child_perm = cor_child_perm,
    .supported_write_flags = BDRV_REQ_FUA,
    .supported_zero_flags = BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK,
    .can_fast_zero = true,
};
