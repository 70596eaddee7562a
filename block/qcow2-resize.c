/*
 * qcow2-resize.c - block_resize of a qcow2 image (QEMU's qcow2_co_truncate
 * without preallocation).
 *
 * Design notes.
 *
 * resize.c calls this in a drained section: no guest request runs, so the
 * active L1 table may be replaced in memory without the readers' noticing.
 * The metadata lock is held for the refcount and L2 changes as usual.
 *
 * Growing: the virtual size is one header field; the L1 table must have an
 * entry for every L2 table the new size needs.  When the new entries fit
 * in the clusters the table already occupies, they are zeroed in place;
 * otherwise a new table is allocated, written, its refcounts flushed, and
 * only then the header's (l1_size, l1_table_offset) pair, 12 adjacent
 * bytes in one sector, is rewritten in one write; the old table's clusters
 * are freed afterwards.  The size field is written last.  A crash at any
 * point leaves either the old table and size, or the new table with the
 * old size (an L1 table larger than needed is valid), and at worst a
 * leaked cluster.
 *
 * Shrinking (as QEMU allows it): the guest clusters past the new end are
 * discarded, the L2 tables wholly past it are released and their L1
 * entries zeroed (the table keeps its size, as QEMU's does), then the size
 * field is written.  The image file is not shortened.
 */
#include "qcow2.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>

/* Header field offsets (qcow2.txt). */
#define HDR_SIZE 24
#define HDR_L1_SIZE 36 /* followed by l1_table_offset at 40 */

static uint64_t l1_entries_for(Qcow2State *s, uint64_t size)
{
    uint64_t per_l1 = (uint64_t)s->cluster_size << s->l2_bits;

    return size / per_l1 + (size % per_l1 != 0);
}

static int write_size(BlockNode *bs, uint64_t size)
{
    Qcow2State *s = bs->opaque;
    uint64_t be = GUINT64_TO_BE(size);
    int ret = bdrv_pwrite(s->file, HDR_SIZE, 8, &be, 0);

    if (ret == 0)
        ret = qcow2_barrier(bs);
    if (ret == 0)
        __atomic_store_n(&s->size, size, __ATOMIC_RELAXED);
    return ret;
}

/* Zeroes entries [s->l1_size, n) inside the table's own clusters, then
 * says so in the header. */
static int grow_l1_in_place(BlockNode *bs, uint32_t n)
{
    Qcow2State *s = bs->opaque;
    uint64_t *table = g_try_new0(uint64_t, n);
    uint32_t be = GUINT32_TO_BE(n);
    int ret;

    if (!table)
        return -ENOMEM;
    bdrv_debug_event(s->file, BLKDBG_L1_GROW_WRITE_TABLE);
    ret = bdrv_pwrite_zeroes(s->file, s->l1_offset + s->l1_size * 8ULL,
                             (n - s->l1_size) * 8ULL, 0);
    if (ret == 0)
        ret = qcow2_barrier(bs);
    bdrv_debug_event(s->file, BLKDBG_L1_GROW_ACTIVATE_TABLE);
    if (ret == 0)
        ret = bdrv_pwrite(s->file, HDR_L1_SIZE, 4, &be, 0);
    if (ret == 0)
        ret = qcow2_barrier(bs);
    if (ret < 0) {
        g_free(table);
        return ret;
    }
    memcpy(table, s->l1_table, s->l1_size * 8ULL);
    g_free(s->l1_table);
    s->l1_table = table;
    s->l1_size = n;
    return 0;
}

/* A new table of @n entries elsewhere; the header switches to it in one
 * write, then the old one is freed. */
static int relocate_l1(BlockNode *bs, uint32_t n)
{
    Qcow2State *s = bs->opaque;
    uint64_t clusters = ((uint64_t)n * 8 + s->cluster_size - 1) >>
                        s->cluster_bits;
    uint64_t old_offset = s->l1_offset;
    uint64_t old_bytes = ROUND_UP((uint64_t)s->l1_size * 8, s->cluster_size);
    g_autofree uint64_t *disk = NULL;
    uint64_t *table;
    uint8_t fields[12];
    uint32_t be32 = GUINT32_TO_BE(n);
    uint64_t be64;
    bool fresh;
    int64_t off;
    int ret;

    if (clusters > qcow2_max_alloc_clusters(s))
        return -EFBIG;
    disk = g_try_malloc0(clusters << s->cluster_bits);
    table = g_try_new0(uint64_t, n);
    if (!disk || !table) {
        g_free(table);
        return -ENOMEM;
    }
    bdrv_debug_event(s->file, BLKDBG_L1_GROW_ALLOC_TABLE);
    off = qcow2_alloc_clusters(bs, clusters, &fresh);
    if (off < 0) {
        g_free(table);
        return off;
    }
    for (uint32_t i = 0; i < s->l1_size; i++)
        disk[i] = GUINT64_TO_BE(s->l1_table[i]);
    bdrv_debug_event(s->file, BLKDBG_L1_GROW_WRITE_TABLE);
    ret = qcow2_flush_metadata(bs); /* the new clusters' refcounts */
    if (ret == 0)
        ret = bdrv_pwrite(s->file, off, clusters << s->cluster_bits, disk, 0);
    if (ret == 0)
        ret = qcow2_barrier(bs);
    bdrv_debug_event(s->file, BLKDBG_L1_GROW_ACTIVATE_TABLE);
    be64 = GUINT64_TO_BE((uint64_t)off);
    memcpy(fields, &be32, 4);
    memcpy(fields + 4, &be64, 8);
    if (ret == 0)
        ret = bdrv_pwrite(s->file, HDR_L1_SIZE, sizeof(fields), fields, 0);
    if (ret == 0)
        ret = qcow2_barrier(bs);
    if (ret < 0) {
        /* The header still names the old table: give the new one back. */
        qcow2_update_refcount(bs, off, clusters << s->cluster_bits, -1);
        g_free(table);
        return ret;
    }
    memcpy(table, s->l1_table, s->l1_size * 8ULL);
    g_free(s->l1_table);
    s->l1_table = table;
    s->l1_size = n;
    s->l1_offset = off;
    if (old_offset && old_bytes)
        ret = qcow2_update_refcount(bs, old_offset, old_bytes, -1);
    return ret;
}

static int grow(BlockNode *bs, uint64_t size)
{
    Qcow2State *s = bs->opaque;
    uint64_t n = l1_entries_for(s, size);
    uint64_t room = ROUND_UP((uint64_t)s->l1_size * 8, s->cluster_size) / 8;
    int ret = 0;

    if (n > QCOW2_MAX_L1_BYTES / 8)
        return -EFBIG;
    if (n > s->l1_size) {
        g_mutex_lock(&s->lock);
        ret = s->l1_size && n <= room ? grow_l1_in_place(bs, n)
                                      : relocate_l1(bs, n);
        if (ret == 0)
            ret = qcow2_flush_metadata(bs);
        g_mutex_unlock(&s->lock);
    }
    return ret < 0 ? ret : write_size(bs, size);
}

/* Releases the L2 tables of L1 entries [first, s->l1_size). */
static int drop_l2_tables(BlockNode *bs, uint64_t first)
{
    Qcow2State *s = bs->opaque;
    int ret = 0;

    g_mutex_lock(&s->lock);
    for (uint64_t i = first; i < s->l1_size && ret == 0; i++) {
        uint64_t l2 = s->l1_table[i] & QCOW2_L1E_OFFSET_MASK;
        uint64_t zero = 0;

        if (!s->l1_table[i])
            continue;
        bdrv_debug_event(s->file, BLKDBG_L1_SHRINK_WRITE_TABLE);
        ret = bdrv_pwrite(s->file, s->l1_offset + i * 8, 8, &zero, 0);
        if (ret == 0)
            ret = qcow2_barrier(bs);
        if (ret < 0)
            break;
        s->l1_table[i] = 0;
        if (l2) {
            bdrv_debug_event(s->file, BLKDBG_L1_SHRINK_FREE_L2_CLUSTERS);
            qcow2_cache_forget(s->l2_cache, l2);
            ret = qcow2_update_refcount(bs, l2, s->cluster_size, -1);
        }
    }
    if (ret == 0)
        ret = qcow2_flush_metadata(bs);
    g_mutex_unlock(&s->lock);
    return ret;
}

static int shrink(BlockNode *bs, uint64_t size)
{
    Qcow2State *s = bs->opaque;
    uint64_t tail = ROUND_UP(size, s->cluster_size);
    int ret = 0;

    if (tail < s->size)
        ret = qcow2_pdiscard(bs, tail, s->size - tail);
    if (ret == 0)
        ret = drop_l2_tables(bs, l1_entries_for(s, size));
    return ret < 0 ? ret : write_size(bs, size);
}

int qcow2_truncate(BlockNode *bs, int64_t size, GError **errp)
{
    Qcow2State *s = bs->opaque;
    int ret;

    if (size % 512) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "The new size must be a multiple of 512");
        return -EINVAL;
    }
    if (!s->writable || qcow2_is_corrupt(s)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_READ_ONLY,
                    "Image is read-only");
        return -EACCES;
    }
    if ((uint64_t)size == s->size)
        return 0;
    ret = (uint64_t)size > s->size ? grow(bs, size) : shrink(bs, size);
    if (ret == -EFBIG) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Failed to grow the L1 table: File too large");
    } else if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "Failed to %s the image: %s",
                    (uint64_t)size > s->size ? "grow" : "shrink",
                    g_strerror(-ret));
    }
    return ret;
}
