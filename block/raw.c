/*
 * raw.c - the "raw" format driver: the bytes of its "file" child, optionally
 * a window of them ("offset", "size").  A raw node never has a backing file.
 */
#include "block-int.h"

#include <errno.h>

typedef struct RawState {
    BlockNode *file;  /* the child, referenced through bs->children */
    uint64_t offset;  /* where the window starts in the child */
    uint64_t size;    /* window length */
} RawState;

static int raw_open(BlockNode *bs, GHashTable *options, GError **errp)
{
    RawState *s = bs->opaque;
    int64_t child_len;
    bool has_size;

    if (opt_has_prefix(options, "backing")) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Driver 'raw' does not support backing files");
        return -EINVAL;
    }
    if (!opt_take_size(options, "offset", &s->offset, errp))
        return -EINVAL;
    has_size = g_hash_table_contains(options, "size");
    if (!opt_take_size(options, "size", &s->size, errp))
        return -EINVAL;
    s->file = bdrv_open_child(bs, options, "file", errp);
    if (!s->file)
        return -EINVAL;
    child_len = bdrv_getlength(s->file);
    if (s->offset > (uint64_t)child_len) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "The offset %" G_GUINT64_FORMAT " is beyond the end of "
                    "'%s' (%" G_GINT64_FORMAT " bytes)",
                    s->offset, bdrv_filename(s->file), child_len);
        return -EINVAL;
    }
    if (!has_size) {
        s->size = child_len - s->offset;
    } else if (s->size > child_len - s->offset) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "The sum of offset (%" G_GUINT64_FORMAT ") and size (%"
                    G_GUINT64_FORMAT ") is larger than the size of '%s'",
                    s->offset, s->size, bdrv_filename(s->file));
        return -EINVAL;
    }
    return 0;
}

static void raw_close(BlockNode *bs) {}

static int64_t raw_get_length(BlockNode *bs)
{
    RawState *s = bs->opaque;
    return s->size;
}

/* The child's limits, so io.c aligns once, at the top. */
static void raw_refresh_limits(BlockNode *bs, BlockLimits *limits)
{
    RawState *s = bs->opaque;

    *limits = *bdrv_limits(s->file);
    if (s->offset % limits->request_alignment)
        limits->request_alignment = 1; /* the child realigns */
}

static int raw_pread(BlockNode *bs, int64_t offset, int64_t bytes, void *buf)
{
    RawState *s = bs->opaque;
    bdrv_debug_event(s->file, BLKDBG_READ_AIO);
    return bdrv_pread(s->file, s->offset + offset, bytes, buf);
}

static int raw_pwrite(BlockNode *bs, int64_t offset, int64_t bytes,
                      const void *buf, int flags)
{
    RawState *s = bs->opaque;
    bdrv_debug_event(s->file, BLKDBG_WRITE_AIO);
    return bdrv_pwrite(s->file, s->offset + offset, bytes, buf, flags);
}

static int raw_pwrite_zeroes(BlockNode *bs, int64_t offset, int64_t bytes,
                             int flags)
{
    RawState *s = bs->opaque;
    return bdrv_pwrite_zeroes(s->file, s->offset + offset, bytes, flags);
}

static int raw_pdiscard(BlockNode *bs, int64_t offset, int64_t bytes)
{
    RawState *s = bs->opaque;
    return bdrv_pdiscard(s->file, s->offset + offset, bytes);
}

static int raw_prefetch(BlockNode *bs, int64_t offset, int64_t bytes)
{
    RawState *s = bs->opaque;
    return bdrv_prefetch(s->file, s->offset + offset, bytes);
}

static int raw_block_status(BlockNode *bs, int64_t offset, int64_t bytes,
                            int64_t *pnum)
{
    RawState *s = bs->opaque;
    int ret = bdrv_block_status(s->file, s->offset + offset, bytes, pnum);

    /* Every byte of a raw image is allocated in it, holes included. */
    return ret < 0 ? ret : ret | BDRV_BLOCK_ALLOCATED;
}

/* raw passes its parents' needs through to its file, as QEMU's raw does
 * (no metadata of its own to protect). */
const BlockDriver bdrv_raw = {
    .name = "raw",
    .state_size = sizeof(RawState),
    .open = raw_open,
    .close = raw_close,
    .get_length = raw_get_length,
    .refresh_limits = raw_refresh_limits,
    .pread = raw_pread,
    .pwrite = raw_pwrite,
    .pwrite_zeroes = raw_pwrite_zeroes,
    .pdiscard = raw_pdiscard,
    .prefetch = raw_prefetch,
    .block_status = raw_block_status,
    .supported_write_flags = BDRV_REQ_FUA,
    .supported_zero_flags = BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK,
    .can_fast_zero = true,
    .child_perm = bdrv_child_perm_filtered,
};
