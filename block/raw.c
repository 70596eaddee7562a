/*
 * raw.c - the "raw" format driver: the bytes of its "file" child, optionally
 * a window of them ("offset", "size").  A raw node never has a backing file.
 *
 * A probed image ("x-probed": the format was guessed, qemu-nbd without -f)
 * is protected as QEMU protects it: a guest that writes a qcow2 header
 * (or another format's) into block 0 would turn the file into that format
 * for the next probe, handing the guest whatever the header names (a
 * backing file on the host, say).  So, as QEMU's raw_check_write, such a
 * write fails with EPERM, and requests are aligned to 512 bytes (io.c
 * reads-modifies-writes the rest) so that block 0 is always written whole.
 */
#include "block-int.h"

#include <errno.h>
#include <string.h>

/* QEMU's BLOCK_PROBE_BUF_SIZE: what a probe looks at. */
#define RAW_PROBE_BYTES 512

typedef struct RawState {
    BlockNode *file;  /* the child, referenced through bs->children */
    uint64_t offset;  /* where the window starts in the child */
    uint64_t size;    /* window length */
    bool probed;      /* the format was guessed: protect block 0 */
    bool window;      /* "offset" or "size" given: a part of the child */
    bool fixed_size;  /* "size" given: the length never follows the child */
} RawState;

static uint32_t be32_at(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3];
}

static uint32_t le32_at(const uint8_t *p)
{
    return (uint32_t)p[3] << 24 | p[2] << 16 | p[1] << 8 | p[0];
}

/* QEMU's vmdk_probe of a text descriptor: comments and blank lines, then
 * "version=1" (2 or 3). */
static bool vmdk_descriptor(const char *p, const char *end)
{
    while (p < end) {
        if (*p == '#') {
            while (p < end && *p != '\n')
                p++;
            p++;
            continue;
        }
        if (*p == ' ') {
            while (p < end && *p == ' ')
                p++;
            if (p < end && *p == '\r')
                p++;
            if (p == end || *p != '\n')
                return false;
            p++;
            continue;
        }
        return end - p >= 10 && !strncmp(p, "version=", 8) &&
               p[8] >= '1' && p[8] <= '3' &&
               (p[9] == '\n' || (p[9] == '\r' && end - p >= 11 &&
                                 p[10] == '\n'));
    }
    return false;
}

/* Would QEMU's probe take @buf (the first 512 bytes of an image) for a
 * format other than raw?  The magics of QEMU's probes. */
static bool other_format(const uint8_t *buf)
{
    static const char cloop[] = "#!/bin/sh\n#V2.0 Format\n"
                                "modprobe cloop file=$0 && mount -r -t "
                                "iso9660 /dev/cloop $1\n";

    return (!memcmp(buf, "QFI\xfb", 4) && be32_at(buf + 4) >= 1) || /* qcow */
           !memcmp(buf, "QED\0", 4) ||
           !memcmp(buf, "KDMV", 4) || !memcmp(buf, "COWD", 4) ||
           vmdk_descriptor((const char *)buf,
                           (const char *)buf + RAW_PROBE_BYTES) ||
           le32_at(buf + 64) == 0xbeda107f ||                     /* vdi */
           !memcmp(buf, "vhdxfile", 8) || !memcmp(buf, "conectix", 8) ||
           (!memcmp(buf, "LUKS\xba\xbe", 6) && buf[6] == 0 && buf[7] == 1) ||
           ((!memcmp(buf, "WithoutFreeSpace", 16) ||
             !memcmp(buf, "WithouFreSpacExt", 16)) &&
            le32_at(buf + 16) == 2) ||                      /* parallels */
           (!memcmp(buf, "Bochs Virtual HD Image", 22) &&
            !memcmp(buf + 32, "Redolog", 7) &&
            !memcmp(buf + 48, "Growing", 7)) ||
           !memcmp(buf, cloop, sizeof(cloop) - 1);
}

static int raw_open(BlockNode *bs, GHashTable *options, GError **errp)
{
    RawState *s = bs->opaque;
    int64_t child_len;
    bool has_size;
    GError *err = NULL;

    if (opt_has_prefix(options, "backing")) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Driver 'raw' does not support backing files");
        return -EINVAL;
    }
    if (!opt_take_size(options, "offset", &s->offset, errp))
        return -EINVAL;
    s->probed = opt_take_bool(options, "x-probed", false, &err);
    if (err) {
        g_propagate_error(errp, err);
        return -EINVAL;
    }
    has_size = g_hash_table_contains(options, "size");
    if (!opt_take_size(options, "size", &s->size, errp))
        return -EINVAL;
    s->window = has_size || s->offset > 0;
    s->fixed_size = has_size;
    s->file = bdrv_open_child(bs, options, "file", errp);
    if (!s->file)
        return -EINVAL;
    child_len = bdrv_getlength(s->file);
    if (s->offset > (uint64_t)child_len) {
        /* QEMU's words (block/raw-format.c) */
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Offset (%" G_GUINT64_FORMAT ") cannot be greater than "
                    "size of the containing file (%" G_GINT64_FORMAT ")",
                    s->offset, child_len);
        return -EINVAL;
    }
    if (!has_size) {
        s->size = child_len - s->offset;
    } else if (s->size > child_len - s->offset) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "The sum of offset (%" G_GUINT64_FORMAT ") and size "
                    "(%" G_GUINT64_FORMAT ") has to be smaller or equal to "
                    "the  actual size of the containing file (%"
                    G_GINT64_FORMAT ")", s->offset, s->size, child_len);
        return -EINVAL;
    }
    /* QEMU: else rounding up would leak bytes past the window */
    if (has_size && s->size % 512) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Specified size is not multiple of 512");
        return -EINVAL;
    }
    return 0;
}

static void raw_close(BlockNode *bs) {}

/* Without "size", the child's length past "offset", as the child is now
 * (it may have been resized under the node, as in QEMU). */
static int64_t raw_get_length(BlockNode *bs)
{
    RawState *s = bs->opaque;
    int64_t child_len;

    if (s->fixed_size)
        return s->size;
    child_len = bdrv_getlength(s->file);
    s->size = child_len > (int64_t)s->offset ? child_len - s->offset : 0;
    return s->size;
}

/* QEMU's raw_co_truncate: the child grows or shrinks with the node. */
static int raw_truncate(BlockNode *bs, int64_t size, GError **errp)
{
    RawState *s = bs->opaque;

    if (s->fixed_size) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Cannot resize fixed-size raw disks");
        return -ENOTSUP;
    }
    if (INT64_MAX - size < (int64_t)s->offset) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Disk size too large for the chosen offset");
        return -EINVAL;
    }
    return bdrv_truncate(s->file, size + s->offset, errp);
}

/* The child's limits, so io.c aligns once, at the top. */
static void raw_refresh_limits(BlockNode *bs, BlockLimits *limits)
{
    RawState *s = bs->opaque;

    *limits = *bdrv_limits(s->file);
    if (s->offset % limits->request_alignment)
        limits->request_alignment = 1; /* the child realigns */
    /* Block 0 of a probed image is only ever written whole. */
    if (s->probed) {
        limits->request_alignment = MAX(limits->request_alignment,
                                        RAW_PROBE_BYTES);
        limits->min_request = RAW_PROBE_BYTES;
    }
}

static int raw_pread(BlockNode *bs, int64_t offset, int64_t bytes, void *buf)
{
    RawState *s = bs->opaque;
    bdrv_debug_event(s->file, BLKDBG_READ_AIO);
    return bdrv_pread(s->file, s->offset + offset, bytes, buf);
}

static int raw_pread_pipe(BlockNode *bs, int64_t offset, int64_t bytes,
                          int pipe_fd)
{
    RawState *s = bs->opaque;
    bdrv_debug_event(s->file, BLKDBG_READ_AIO);
    return bdrv_pread_pipe(s->file, s->offset + offset, bytes, pipe_fd);
}

static int raw_pwrite(BlockNode *bs, int64_t offset, int64_t bytes,
                      const void *buf, int flags)
{
    RawState *s = bs->opaque;

    /* io.c aligns: a write touching block 0 holds all of it, or all the
     * image has when that is shorter. */
    if (s->probed && offset == 0) {
        uint8_t head[RAW_PROBE_BYTES] = { 0 };
        memcpy(head, buf, MIN(bytes, RAW_PROBE_BYTES));
        if (other_format(head))
            return -EPERM;
    }
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
 * (no metadata of its own to protect).  A window of the file is QEMU's
 * data child: nobody may resize the file under it, and writing it may
 * grow the file. */
static void raw_child_perm(BlockNode *bs, const char *name, uint32_t perm,
                           uint32_t shared, uint32_t *nperm,
                           uint32_t *nshared)
{
    RawState *s = bs->opaque;

    bdrv_child_perm_filtered(bs, name, perm, shared, nperm, nshared);
    if (!s->window)
        return;
    *nshared &= ~BDRV_PERM_RESIZE;
    if (*nperm & BDRV_PERM_WRITE_UNCHANGED)
        *nperm |= BDRV_PERM_WRITE;
    if (*nperm & BDRV_PERM_WRITE)
        *nperm |= BDRV_PERM_RESIZE;
}

const BlockDriver bdrv_raw = {
    .name = "raw",
    .state_size = sizeof(RawState),
    .open = raw_open,
    .close = raw_close,
    .get_length = raw_get_length,
    .truncate = raw_truncate,
    .refresh_limits = raw_refresh_limits,
    .pread = raw_pread,
    .pread_pipe = raw_pread_pipe,
    .pwrite = raw_pwrite,
    .pwrite_zeroes = raw_pwrite_zeroes,
    .pdiscard = raw_pdiscard,
    .prefetch = raw_prefetch,
    .block_status = raw_block_status,
    .supported_write_flags = BDRV_REQ_FUA,
    .supported_zero_flags = BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK,
    .can_fast_zero = true,
    .child_perm = raw_child_perm,
};
