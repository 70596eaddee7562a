/*
 * qcow2-check.c - metadata is never overwritten, and corruption stops
 * writes.
 *
 * Design notes.
 *
 * An image is untrusted input, and a damaged one may point an L2 entry at
 * the L1 table, an L1 entry at the header, or have a refcount of 0 for
 * the refcount table, so that the allocator hands out a metadata cluster
 * for guest data.  Writing there would turn a damaged image into a lost
 * one.  So, as QEMU's overlap-check=cached (its default) does, every
 * write of guest data, every allocation and every metadata table written
 * is first checked against the metadata whose place is known in memory:
 * the header cluster, the active L1 table and the L2 tables it names, the
 * refcount table and its blocks, the snapshot table and the snapshots' L1
 * tables, the bitmap directory.
 *
 * A violation, like any other inconsistency found in the metadata (an
 * unaligned table offset, a table past the end of the file, a refcount
 * leaving its range), is signalled once: one log line, and on a writable
 * image the "corrupt" incompatible feature bit in the header, as QEMU
 * sets it ("Marking image as corrupt: ...").  From then on every write of
 * the node fails with EIO and no metadata is written back; reads go on
 * where the metadata is sound.  A writable open of an image marked
 * corrupt is refused (qcow2.c) until qemu-img check -r repairs it.
 */
#include "qcow2.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>

static bool ranges_meet(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    /* Offsets are at most 56 bits and lengths 36: no overflow. */
    return alen && blen && a < b + blen && b < a + alen;
}

static const char *metadata_name(int kind)
{
    switch (kind) {
    case QCOW2_OL_HEADER:
        return "qcow2_header";
    case QCOW2_OL_ACTIVE_L1:
        return "active L1 table";
    case QCOW2_OL_ACTIVE_L2:
        return "active L2 table";
    case QCOW2_OL_REFCOUNT_TABLE:
        return "refcount table";
    case QCOW2_OL_REFCOUNT_BLOCK:
        return "refcount block";
    case QCOW2_OL_SNAPSHOT_TABLE:
        return "snapshot table";
    case QCOW2_OL_INACTIVE_L1:
        return "inactive L1 table";
    case QCOW2_OL_BITMAP_DIRECTORY:
        return "bitmap directory";
    default:
        return "metadata";
    }
}

static bool meets_tables(Qcow2State *s, uint64_t offset, uint64_t bytes,
                         const uint64_t *table, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        uint64_t t = table[i] & QCOW2_L1E_OFFSET_MASK;
        if (t && ranges_meet(offset, bytes, t, s->cluster_size))
            return true;
    }
    return false;
}

static bool meets_snapshot_l1s(Qcow2State *s, uint64_t offset, uint64_t bytes)
{
    for (guint i = 0; s->snapshot_l1s && i < s->snapshot_l1s->len; i++) {
        Qcow2SnapshotL1 *l1 = &g_array_index(s->snapshot_l1s,
                                             Qcow2SnapshotL1, i);
        if (ranges_meet(offset, bytes, l1->offset, (uint64_t)l1->size * 8))
            return true;
    }
    return false;
}

int qcow2_overlaps(BlockNode *bs, int ignore, uint64_t offset, uint64_t bytes)
{
    Qcow2State *s = bs->opaque;

#define MEETS(kind, cond) \
    if (!(ignore & (kind)) && (cond)) \
        return kind
    MEETS(QCOW2_OL_HEADER, ranges_meet(offset, bytes, 0, s->cluster_size));
    MEETS(QCOW2_OL_ACTIVE_L1, ranges_meet(offset, bytes, s->l1_offset,
                                          (uint64_t)s->l1_size * 8));
    MEETS(QCOW2_OL_ACTIVE_L2,
          meets_tables(s, offset, bytes, s->l1_table, s->l1_size));
    MEETS(QCOW2_OL_REFCOUNT_TABLE,
          ranges_meet(offset, bytes, s->refcount_table_offset,
                      s->refcount_table_size * 8));
    MEETS(QCOW2_OL_REFCOUNT_BLOCK,
          s->refcount_table && meets_tables(s, offset, bytes,
                                            s->refcount_table,
                                            s->refcount_table_used));
    MEETS(QCOW2_OL_SNAPSHOT_TABLE, ranges_meet(offset, bytes,
                                               s->snapshots_offset,
                                               s->snapshots_bytes));
    MEETS(QCOW2_OL_INACTIVE_L1, meets_snapshot_l1s(s, offset, bytes));
    MEETS(QCOW2_OL_BITMAP_DIRECTORY,
          s->bitmaps_ext && ranges_meet(offset, bytes, s->bitmap_dir_offset,
                                        s->bitmap_dir_size));
#undef MEETS
    return 0;
}

int qcow2_check_write(BlockNode *bs, int ignore, uint64_t offset,
                      uint64_t bytes)
{
    Qcow2State *s = bs->opaque;
    int hit;

    if (qcow2_is_corrupt(s))
        return -EIO;
    hit = qcow2_overlaps(bs, ignore, offset, bytes);
    if (!hit)
        return 0;
    return qcow2_signal_corruption(bs, "Preventing invalid write on metadata "
                                   "(overlaps with %s) at offset %#" PRIx64,
                                   metadata_name(hit), offset);
}

int qcow2_check_l2_write(void *opaque, uint64_t offset)
{
    BlockNode *bs = opaque;
    Qcow2State *s = bs->opaque;

    return qcow2_check_write(bs, QCOW2_OL_ACTIVE_L2, offset, s->cluster_size);
}

int qcow2_check_refblock_write(void *opaque, uint64_t offset)
{
    BlockNode *bs = opaque;
    Qcow2State *s = bs->opaque;

    return qcow2_check_write(bs, QCOW2_OL_REFCOUNT_BLOCK, offset,
                             s->cluster_size);
}

bool qcow2_table_in_file(BlockNode *bs, uint64_t offset, uint64_t bytes)
{
    Qcow2State *s = bs->opaque;
    uint64_t len = bdrv_getlength(s->file);

    return !(offset & (s->cluster_size - 1)) && offset <= len &&
           bytes <= len - offset;
}

const char *qcow2_open_corruption(Qcow2State *s)
{
    return s->open_corruption;
}

bool qcow2_is_corrupt(Qcow2State *s)
{
    return g_atomic_int_get(&s->corrupt) != 0;
}

/* Sets the corrupt bit in the header (version 3; version 2 has no feature
 * bits, and QEMU marks it only in memory too). */
static void mark_corrupt(BlockNode *bs)
{
    Qcow2State *s = bs->opaque;
    uint64_t be;

    if (s->version < 3)
        return;
    s->incompatible |= QCOW2_INCOMPAT_CORRUPT;
    be = GUINT64_TO_BE(s->incompatible);
    if (bdrv_pwrite(s->file, QCOW2_HDR_INCOMPATIBLE, 8, &be, 0) < 0 ||
        bdrv_flush(s->file) < 0)
        fprintf(stderr, "snapnbd: qcow2 image '%s': could not set the "
                "corrupt bit in the header\n", bs->filename);
}

int qcow2_signal_corruption(BlockNode *bs, const char *fmt, ...)
{
    Qcow2State *s = bs->opaque;
    g_autofree char *msg = NULL;
    va_list ap;

    if (!g_atomic_int_compare_and_exchange(&s->corrupt, 0, 1))
        return -EIO; /* said once already */
    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    if (s->opening) {
        /* The open fails with it; nothing is written (corrupt is set). */
        s->open_corruption = g_steal_pointer(&msg);
    } else if (s->writable) {
        fprintf(stderr, "snapnbd: qcow2 image '%s': Marking image as "
                "corrupt: %s; further corruption events will be "
                "suppressed\n", bs->filename, msg);
        mark_corrupt(bs);
    } else {
        fprintf(stderr, "snapnbd: qcow2 image '%s': Image is corrupt: %s; "
                "further corruption events will be suppressed\n",
                bs->filename, msg);
    }
    return -EIO;
}
