/*
 * qcow2-repair.c - counting every reference of an image opened for
 * writing, and rebuilding the refcounts when they are wrong.
 *
 * Design notes.
 *
 * With lazy refcounts QEMU lets refcounts lag behind the L2 tables and
 * sets the dirty bit while the image is open; after a crash the refcounts
 * cannot be trusted, and QEMU recounts them when it next opens the image
 * for writing.  So does snapnbd: every reference is counted from the
 * metadata (header, refcount table and blocks, the active and every
 * snapshot's L1 and L2 tables and data, compressed data, the snapshot
 * table, the bitmaps), and each refcount that differs is set to the count.
 * Only then is the dirty bit cleared, so a crash during the repair leaves
 * an image that is repaired again next time.
 *
 * The metadata is untrusted: a reference to a region past the end of the
 * file (by a cluster or more) is reported and not counted, as QEMU does,
 * and a table there or unaligned is not read.  The counts are one array
 * sized by the file, indexed with 64-bit cluster numbers.
 *
 * An image that is not marked dirty is counted too, and repaired the
 * same way when a cluster has more references than its refcount says, or
 * an active COPIED flag names a cluster with other users.  QEMU trusts
 * such refcounts, and its allocator may hand the cluster out again while
 * an L2 entry still maps it: two guest clusters then share one host
 * cluster, and acknowledged writes read back wrong (fuzz-qcow2 found one;
 * QEMU loses data on it too, for another write order).  Clusters that the
 * metadata references past the end of the file cannot be counted there;
 * the allocator is told to never hand them out (qcow2_reserve_cluster).
 * Healthy images pay one read of their metadata per writable open.
 *
 * The repair never moves metadata: a refcount that needs a missing
 * refcount block gets one where such blocks always go (the first cluster
 * it describes) unless that cluster is in use, and the refcount table is
 * never grown; images needing more are refused with a pointer to
 * qemu-img check -r all.
 */
#include "qcow2.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

typedef struct Counts {
    BlockNode *bs;
    uint32_t *n;        /* references per cluster of the file */
    uint64_t len;       /* clusters in n: those the file holds */
    /* References past the end of the file, not counted: how many, and
     * the first (said once, after a repair that succeeds; a refused
     * image gets the one line of its refusal). */
    uint64_t past_eof, first_offset, first_bytes;
    /* Clusters that COPIED flags of the active tables name, one bit each:
     * they may have no other user. */
    uint64_t *owned;
    bool counting_active;
    bool too_many_past; /* more past the end than the allocator keeps */
} Counts;

/* Clusters past the end of the file kept from the allocator, at most:
 * more is a damaged table of garbage, refused. */
#define MAX_RESERVED_CLUSTERS 65536

/* A reference past the end of the file: the allocator must not hand its
 * clusters out when the file grows over them. */
static void reserve_past_eof(Counts *c, uint64_t offset, uint64_t bytes)
{
    Qcow2State *s = c->bs->opaque;
    uint64_t first = offset >> s->cluster_bits;
    uint64_t last = bytes > UINT64_MAX - offset
                        ? UINT64_MAX >> s->cluster_bits
                        : (offset + MAX(bytes, 1) - 1) >> s->cluster_bits;

    for (uint64_t i = first; i <= last && !c->too_many_past; i++) {
        if (i < c->len)
            continue;
        c->too_many_past = !qcow2_reserve_cluster(s, i,
                                                  MAX_RESERVED_CLUSTERS);
        if (i == UINT64_MAX)
            break;
    }
}

static void count_range(void *opaque, uint64_t offset, uint64_t bytes)
{
    Counts *c = opaque;
    Qcow2State *s = c->bs->opaque;
    uint64_t first = offset >> s->cluster_bits;
    uint64_t last = bytes > UINT64_MAX - offset
                        ? UINT64_MAX >> s->cluster_bits
                        : (offset + MAX(bytes, 1) - 1) >> s->cluster_bits;

    if (last >= c->len) {
        if (!c->past_eof++) {
            c->first_offset = offset;
            c->first_bytes = bytes;
        }
        reserve_past_eof(c, offset, bytes);
    }
    /* The part inside the file counts (QEMU counts none of a region that
     * reaches past the end): freeing the entry later frees it all. */
    for (uint64_t i = first; i <= last && i < c->len; i++)
        if (c->n[i] < UINT32_MAX)
            c->n[i]++;
}

/* A reference of the active tables that carries the COPIED flag. */
static void count_owned(Counts *c, uint64_t entry, uint64_t offset)
{
    Qcow2State *s = c->bs->opaque;
    uint64_t i = offset >> s->cluster_bits;

    if (c->counting_active && (entry & QCOW2_OFLAG_COPIED) && i < c->len)
        c->owned[i / 64] |= 1ULL << (i % 64);
}

/* Can a table of @bytes at @offset be read?  (Else it counts nothing.) */
static bool readable(Counts *c, uint64_t offset, uint64_t bytes)
{
    Qcow2State *s = c->bs->opaque;

    return !(offset & (s->cluster_size - 1)) &&
           offset < c->len << s->cluster_bits &&
           bytes <= (c->len << s->cluster_bits) - offset;
}

static int read_table(Qcow2State *s, uint64_t offset, uint64_t entries,
                      uint64_t **out)
{
    uint64_t *t = g_try_new(uint64_t, MAX(entries, 1));
    int ret = t ? bdrv_pread(s->file, offset, entries * 8, t) : -ENOMEM;

    if (ret < 0) {
        g_free(t);
        return ret;
    }
    for (uint64_t i = 0; i < entries; i++)
        t[i] = GUINT64_FROM_BE(t[i]);
    *out = t;
    return 0;
}

static void count_l2_entry(Counts *c, uint64_t e)
{
    Qcow2State *s = c->bs->opaque;
    uint64_t off, bytes;

    if (!qcow2_entry_extent(s, e, &off, &bytes))
        return;
    count_range(c, off, bytes);
    if (!(e & QCOW2_OFLAG_COMPRESSED))
        count_owned(c, e, off);
}

/* One L1 table and everything below it. */
static int count_l1(Counts *c, uint64_t offset, uint32_t size)
{
    Qcow2State *s = c->bs->opaque;
    g_autofree uint64_t *l1 = NULL;
    int ret;

    count_range(c, offset, (uint64_t)size * 8);
    if (!readable(c, offset, (uint64_t)size * 8) ||
        size > QCOW2_MAX_L1_BYTES / 8)
        return 0;
    ret = read_table(s, offset, size, &l1);
    if (ret < 0)
        return ret;
    for (uint32_t i = 0; i < size; i++) {
        uint64_t l2_off = l1[i] & QCOW2_L1E_OFFSET_MASK;
        g_autofree uint64_t *l2 = NULL;
        if (!l2_off)
            continue;
        count_range(c, l2_off, s->cluster_size);
        count_owned(c, l1[i], l2_off);
        if (!readable(c, l2_off, s->cluster_size))
            continue;
        ret = read_table(s, l2_off, s->l2_entries, &l2);
        if (ret < 0)
            return ret;
        for (uint32_t j = 0; j < s->l2_entries; j++)
            count_l2_entry(c, l2[j]);
    }
    return 0;
}

static bool count_all(Counts *c, GError **errp)
{
    BlockNode *bs = c->bs;
    Qcow2State *s = bs->opaque;
    g_autoptr(GArray) snaps = NULL;
    uint64_t table_offset, table_bytes;
    int ret;

    count_range(c, 0, s->cluster_size); /* the header cluster */
    if (s->crypto_header_length)
        count_range(c, s->crypto_header_offset, s->crypto_header_length);
    count_range(c, s->refcount_table_offset, s->refcount_table_size * 8);
    for (uint64_t b = 0; b < s->refcount_table_size; b++)
        if (qcow2_refblock_exists(bs, b << s->refblock_bits))
            count_range(c, s->refcount_table[b] & QCOW2_L1E_OFFSET_MASK,
                        s->cluster_size);
    snaps = qcow2_snapshot_l1_tables(bs, &table_offset, &table_bytes, errp);
    if (!snaps)
        return false;
    if (snaps->len)
        count_range(c, table_offset, table_bytes);
    c->counting_active = true;
    ret = count_l1(c, s->l1_offset, s->l1_size);
    c->counting_active = false;
    for (guint i = 0; i < snaps->len && ret == 0; i++) {
        Qcow2SnapshotL1 *l1 = &g_array_index(snaps, Qcow2SnapshotL1, i);
        ret = count_l1(c, l1->offset, l1->size);
    }
    if (ret < 0) {
        qcow2_bad_image(errp, bs->filename, "could not read the metadata to "
                        "repair the image: %s",
                        qcow2_open_corruption(s) ?: g_strerror(-ret));
        return false;
    }
    return qcow2_bitmaps_references(bs, count_range, c, errp);
}

/* Can a new refcount block describing @cluster be made: within the
 * table, on a cluster that nothing counted uses? */
static bool room_for_refblock(Counts *c, uint64_t cluster)
{
    Qcow2State *s = c->bs->opaque;
    uint64_t block = cluster >> s->refblock_bits, place;

    if (block >= s->refcount_table_size)
        return false;
    place = qcow2_refblock_place(s, block);
    return place >= c->len || !c->n[place];
}

/* Sets every refcount to its count, or with @raise_only only those below
 * it (a clean image's leaks stay: freeing is for qemu-img check -r to
 * decide).  @why (the image ...) says what was wrong, in the error when a
 * count has no place to go. */
static bool apply_counts(Counts *c, bool raise_only, const char *why,
                         GError **errp)
{
    BlockNode *bs = c->bs;
    Qcow2State *s = bs->opaque;
    uint64_t clusters = MAX(c->len, (uint64_t)bdrv_getlength(s->file) >>
                                        s->cluster_bits);

    for (uint64_t i = 0; i < clusters; i++) {
        uint64_t want = i < c->len ? c->n[i] : 0;
        uint64_t have;
        int ret = qcow2_get_refcount(bs, i, &have);
        if (ret == 0 && (have == want || (raise_only && have > want)))
            continue;
        if (ret == 0 && want && !qcow2_refblock_exists(bs, i) &&
            !room_for_refblock(c, i))
            ret = -ENOSPC;
        if (ret == 0)
            ret = qcow2_set_refcount(bs, i, want);
        if (ret < 0) {
            qcow2_bad_image(errp, bs->filename, "%s, and the refcounts cannot "
                            "be repaired here (%s); repair it with 'qemu-img "
                            "check -r all'", why,
                            qcow2_open_corruption(s) ?:
                            ret == -ENOSPC ? "no place for a refcount block"
                                           : g_strerror(-ret));
            return false;
        }
    }
    return true;
}

static int clear_dirty_bit(BlockNode *bs)
{
    Qcow2State *s = bs->opaque;
    uint64_t be;

    s->incompatible &= ~QCOW2_INCOMPAT_DIRTY;
    be = GUINT64_TO_BE(s->incompatible);
    return bdrv_pwrite(s->file, QCOW2_HDR_INCOMPATIBLE, 8, &be, 0);
}

/* Refcounts and COPIED flags from the counts, on disk; then the dirty bit
 * cleared, so that a crash during the repair leaves it to do again. */
static bool rewrite_refcounts(Counts *c, bool dirty, const char *why,
                              GError **errp)
{
    BlockNode *bs = c->bs;
    Qcow2State *s = bs->opaque;
    int ret;

    if (!apply_counts(c, !dirty, why, errp))
        return false;
    /* COPIED flags that the counts contradict: a crash in an internal
     * snapshot's update leaves them (qcow2-snapshot.c), or damage. */
    ret = qcow2_fix_copied_flags(bs);
    if (ret == 0)
        ret = qcow2_flush_metadata(bs);
    if (ret == 0)
        ret = qcow2_barrier(bs);
    if (ret == 0 && dirty)
        ret = clear_dirty_bit(bs);
    if (ret == 0 && dirty)
        ret = qcow2_barrier(bs);
    if (ret < 0)
        qcow2_bad_image(errp, bs->filename, "could not write the repaired "
                        "refcounts: %s",
                        qcow2_open_corruption(s) ?: g_strerror(-ret));
    return ret == 0;
}

/* The first cluster whose refcount is below its count of references, or
 * whose active COPIED flag has other users beside it: *found, or none.
 * One refcount block at a time (a lookup per cluster was most of the
 * cost of an open). */
static int find_undercount(Counts *c, bool *found, uint64_t *cluster,
                           uint64_t *refcount)
{
    Qcow2State *s = c->bs->opaque;
    uint64_t per = 1ULL << s->refblock_bits;
    g_autofree uint64_t *rc = g_new(uint64_t, per);

    *found = false;
    for (uint64_t first = 0; first < c->len && !*found; first += per) {
        uint64_t n = MIN(per, c->len - first);
        int ret = qcow2_get_refcounts(c->bs, first, n, rc);
        if (ret < 0)
            return ret;
        for (uint64_t i = first; i < first + n && !*found; i++) {
            bool owned = (c->owned[i / 64] >> (i % 64)) & 1;
            *found = c->n[i] > rc[i - first] || (owned && c->n[i] > 1);
            *cluster = i;
            *refcount = rc[i - first];
        }
    }
    return 0;
}

/* A clean image: repaired only when a refcount misses a reference. */
static bool check_counts(Counts *c, GError **errp)
{
    BlockNode *bs = c->bs;
    Qcow2State *s = bs->opaque;
    uint64_t cluster = 0, refcount = 0;
    g_autofree char *what = NULL;
    bool found, ok;
    int ret = find_undercount(c, &found, &cluster, &refcount);

    if (ret < 0) {
        qcow2_bad_image(errp, bs->filename, "could not read the refcounts: "
                        "%s", qcow2_open_corruption(s) ?: g_strerror(-ret));
        return false;
    }
    if (!found)
        return true;
    what = g_strdup_printf("cluster %#" PRIx64 " has %" PRIu32 " reference%s "
                           "but refcount %" PRIu64 "%s",
                           cluster << s->cluster_bits, c->n[cluster],
                           c->n[cluster] == 1 ? "" : "s", refcount,
                           c->n[cluster] <= refcount ? " and a COPIED flag"
                                                     : "");
    ok = rewrite_refcounts(c, false, what, errp);
    if (ok)
        fprintf(stderr, "snapnbd: qcow2 image '%s': %s; repaired the "
                "refcounts (as 'qemu-img check -r all' would)\n",
                bs->filename, what);
    return ok;
}

bool qcow2_count_references(BlockNode *bs, bool dirty, GError **errp)
{
    Qcow2State *s = bs->opaque;
    Counts c = { .bs = bs };
    bool ok;

    /* Whatever lies in the last, partial cluster counts too. */
    c.len = ((uint64_t)bdrv_getlength(s->file) + s->cluster_size - 1) >>
            s->cluster_bits;
    c.n = g_try_new0(uint32_t, MAX(c.len, 1));
    c.owned = g_try_new0(uint64_t, c.len / 64 + 1);
    if (!c.n || !c.owned) {
        g_free(c.n);
        g_free(c.owned);
        if (!dirty)
            return true; /* trusted, as QEMU does */
        qcow2_bad_image(errp, bs->filename, "the image is marked dirty and "
                        "too large to repair here; repair it with 'qemu-img "
                        "check -r all'");
        return false;
    }
    if (dirty && bdrv_verbose)
        fprintf(stderr, "snapnbd: qcow2 image '%s' was not closed cleanly "
                "(dirty bit set): repairing its refcounts\n", bs->filename);
    g_mutex_lock(&s->lock);
    ok = count_all(&c, errp);
    if (ok && c.too_many_past) {
        qcow2_bad_image(errp, bs->filename, "the metadata references more "
                        "than %d clusters past the end of the file; check "
                        "it with 'qemu-img check'", MAX_RESERVED_CLUSTERS);
        ok = false;
    }
    if (ok)
        ok = dirty ? rewrite_refcounts(&c, true, "the image is marked dirty",
                                       errp)
                   : check_counts(&c, errp);
    g_mutex_unlock(&s->lock);
    g_free(c.n);
    g_free(c.owned);
    if (ok && c.past_eof)
        fprintf(stderr, "snapnbd: qcow2 image '%s': ERROR: counting "
                "reference for region exceeding the end of the file by one "
                "cluster or more: offset %#" PRIx64 " size %#" PRIx64
                "%s\n", bs->filename, c.first_offset, c.first_bytes,
                c.past_eof > 1 ? " (and more)" : "");
    return ok;
}
