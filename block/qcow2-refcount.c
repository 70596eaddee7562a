/*
 * qcow2-refcount.c - refcounts, cluster allocation, and the order in which
 * metadata reaches the disk.
 *
 * Design notes.
 *
 * Crash safety is an ordering rule, after QEMU: a refcount increment is on
 * disk before any L2 entry that uses the cluster, and an L2 entry that
 * stopped using a cluster is on disk before the decrement.  So an image
 * cut off at any point (kill -9: the page cache keeps the order of writes;
 * power loss: the barriers, file flushes, keep it) has at worst clusters
 * with a refcount and no user: leaks, which qemu-img check reports and
 * repairs, never a cluster used twice.  Increments live in the refcount
 * cache, which is always written before the L2 cache (qcow2_flush_metadata);
 * a decrement is applied only after the L2 table that dropped the cluster
 * was written (qcow2_write_l2_now).
 *
 * New refcount blocks describe themselves: a missing block means every
 * cluster it would cover is free, so its own first cluster is free and the
 * block goes there.  A full refcount table moves to the first range the old
 * table cannot describe, preceded by the blocks that describe it; the
 * header switches to it with one write.
 *
 * Every refcount width (1 to 64 bits) is read and written.
 */
#include "qcow2.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* --- entries of a refcount block ----------------------------------------- */

static uint64_t rb_get(const void *block, uint64_t i, int order)
{
    const uint8_t *p = block;

    switch (order) {
    case 3:
        return p[i];
    case 4:
        return GUINT16_FROM_BE(((const uint16_t *)block)[i]);
    case 5:
        return GUINT32_FROM_BE(((const uint32_t *)block)[i]);
    case 6:
        return GUINT64_FROM_BE(((const uint64_t *)block)[i]);
    default: {
        int bits = 1 << order, per_byte = 8 / bits;
        return (p[i / per_byte] >> (bits * (i % per_byte))) &
               ((1u << bits) - 1);
    }
    }
}

static void rb_set(void *block, uint64_t i, int order, uint64_t v)
{
    uint8_t *p = block;

    switch (order) {
    case 3:
        p[i] = v;
        break;
    case 4:
        ((uint16_t *)block)[i] = GUINT16_TO_BE(v);
        break;
    case 5:
        ((uint32_t *)block)[i] = GUINT32_TO_BE(v);
        break;
    case 6:
        ((uint64_t *)block)[i] = GUINT64_TO_BE(v);
        break;
    default: {
        int bits = 1 << order, per_byte = 8 / bits;
        int shift = bits * (i % per_byte);
        uint8_t mask = ((1u << bits) - 1) << shift;
        p[i / per_byte] = (p[i / per_byte] & ~mask) | ((v << shift) & mask);
    }
    }
}

/* --- open ------------------------------------------------------------------
 */

bool qcow2_refcount_open(BlockNode *bs, uint64_t table_offset,
                         uint32_t table_clusters, int order, GError **errp)
{
    Qcow2State *s = bs->opaque;
    uint64_t bytes = (uint64_t)table_clusters << s->cluster_bits;
    uint64_t entries = bytes / 8;
    int ret;

    s->refcount_order = order;
    s->refblock_bits = s->cluster_bits + 3 - order;
    s->refcount_max = order == 6 ? UINT64_MAX : (1ULL << (1 << order)) - 1;
    if ((table_offset & (s->cluster_size - 1)) || !table_clusters ||
        bytes > QCOW2_MAX_REFTABLE_BYTES ||
        table_offset > (uint64_t)s->file_length ||
        bytes > s->file_length - table_offset) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "qcow2 image '%s': refcount table (offset %#" PRIx64
                    ", %" PRIu32 " clusters) is invalid or outside the file",
                    bs->filename, table_offset, table_clusters);
        return false;
    }
    s->refcount_table = g_try_malloc(bytes);
    if (!s->refcount_table) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "qcow2 image '%s': no memory for the refcount table",
                    bs->filename);
        return false;
    }
    ret = bdrv_pread(s->file, table_offset, bytes, s->refcount_table);
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "qcow2 image '%s': could not read the refcount table: %s",
                    bs->filename, g_strerror(-ret));
        return false;
    }
    for (uint64_t i = 0; i < entries; i++) {
        s->refcount_table[i] = GUINT64_FROM_BE(s->refcount_table[i]);
        if (s->refcount_table[i] & QCOW2_L1E_OFFSET_MASK)
            s->refcount_table_used = i + 1;
    }
    s->refcount_table_size = entries;
    s->refcount_table_offset = table_offset;
    s->refcount_cache = qcow2_cache_new(s->file, s->cluster_size,
                                        qcow2_refcount_cache_tables(s),
                                        qcow2_check_refblock_write, bs);
    return true;
}

size_t qcow2_refcount_cache_tables(Qcow2State *s)
{
    /* 1 MiB by default */
    return s->refcount_cache_tables ? s->refcount_cache_tables
                                    : MAX(16, (1 << 20) / s->cluster_size);
}

void qcow2_refcount_close(BlockNode *bs)
{
    Qcow2State *s = bs->opaque;

    qcow2_cache_free(s->refcount_cache);
    s->refcount_cache = NULL;
    g_clear_pointer(&s->refcount_table, g_free);
    g_clear_pointer(&s->born, g_free);
    s->born_words = 0;
    g_clear_pointer(&s->reserved, g_hash_table_destroy);
}

/* --- reading and changing refcounts --------------------------------------- */

static uint64_t refblock_entries(Qcow2State *s)
{
    return 1ULL << s->refblock_bits;
}

bool qcow2_refblock_exists(BlockNode *bs, uint64_t cluster)
{
    Qcow2State *s = bs->opaque;
    uint64_t block = cluster >> s->refblock_bits;

    /* Reserved bits alone do not make a block (QEMU masks them too). */
    return block < s->refcount_table_size &&
           (s->refcount_table[block] & QCOW2_L1E_OFFSET_MASK);
}

/* The refcount block for @block, or NULL with *ret = 0 if there is none. */
static Qcow2Table *get_refblock(BlockNode *bs, uint64_t block, int *ret)
{
    Qcow2State *s = bs->opaque;
    uint64_t off;
    Qcow2Table *t = NULL;

    *ret = 0;
    if (!qcow2_refblock_exists(bs, block << s->refblock_bits))
        return NULL;
    off = s->refcount_table[block] & QCOW2_L1E_OFFSET_MASK;
    /* Untrusted: a block in the header cluster would overwrite it, one
     * past the end of the file is no block at all. */
    if (off & (s->cluster_size - 1)) {
        *ret = qcow2_signal_corruption(bs, "Refblock offset %#" PRIx64
                                       " unaligned (reftable index: %#"
                                       PRIx64 ")", off, block);
        return NULL;
    }
    if (off < s->cluster_size || !qcow2_table_in_file(bs, off,
                                                      s->cluster_size)) {
        *ret = qcow2_signal_corruption(bs, "Refblock at offset %#" PRIx64
                                       " is invalid or beyond the end of "
                                       "the file (reftable index: %#"
                                       PRIx64 ")", off, block);
        return NULL;
    }
    *ret = qcow2_cache_get(s->refcount_cache, off, &t);
    return t;
}

int qcow2_get_refcount(BlockNode *bs, uint64_t cluster, uint64_t *refcount)
{
    Qcow2State *s = bs->opaque;
    int ret;
    Qcow2Table *t = get_refblock(bs, cluster >> s->refblock_bits, &ret);

    *refcount = 0;
    if (t) {
        *refcount = rb_get(t->entries, cluster & (refblock_entries(s) - 1),
                           s->refcount_order);
        qcow2_table_put(t);
    }
    return ret;
}

int qcow2_get_refcounts(BlockNode *bs, uint64_t first, uint64_t n,
                        uint64_t *refcounts)
{
    Qcow2State *s = bs->opaque;
    int ret;
    Qcow2Table *t = get_refblock(bs, first >> s->refblock_bits, &ret);
    uint64_t index = first & (refblock_entries(s) - 1);

    g_assert(index + n <= refblock_entries(s));
    for (uint64_t i = 0; i < n; i++)
        refcounts[i] = t ? rb_get(t->entries, index + i, s->refcount_order)
                         : 0;
    if (t)
        qcow2_table_put(t);
    return ret;
}

int qcow2_barrier(BlockNode *bs)
{
    Qcow2State *s = bs->opaque;

    return bdrv_flush(s->file);
}

static int write_table_entry(BlockNode *bs, uint64_t block)
{
    Qcow2State *s = bs->opaque;
    uint64_t be = GUINT64_TO_BE(s->refcount_table[block]);

    bdrv_debug_event(s->file, BLKDBG_REFTABLE_UPDATE);
    return bdrv_pwrite(s->file, s->refcount_table_offset + block * 8, 8, &be,
                       0);
}

static int grow_refcount_table(BlockNode *bs, uint64_t min_entries);

static uint64_t unreserved_run(Qcow2State *s, uint64_t from, uint64_t n);

uint64_t qcow2_refblock_place(Qcow2State *s, uint64_t block)
{
    return unreserved_run(s, block << s->refblock_bits, 1);
}

/* Makes refcount block @block exist, placing a new one at the first
 * cluster it covers that is not reserved (free, as all its clusters are
 * while it is missing). */
static int ensure_refblock(BlockNode *bs, uint64_t block)
{
    Qcow2State *s = bs->opaque;
    uint64_t place = qcow2_refblock_place(s, block);
    uint64_t off = place << s->cluster_bits;
    Qcow2Table *t;
    int ret;

    if (block >= s->refcount_table_size) {
        ret = grow_refcount_table(bs, block + 1);
        if (ret < 0)
            return ret;
    }
    if (qcow2_refblock_exists(bs, block << s->refblock_bits))
        return 0;
    if (place >> s->refblock_bits != block)
        return -ENOSPC; /* every cluster of the range is reserved */
    /* Missing blocks make their clusters look free: if metadata is there
     * after all, the refcounts are damaged. */
    ret = qcow2_check_write(bs, 0, off, s->cluster_size);
    if (ret < 0)
        return ret;
    bdrv_debug_event(s->file, BLKDBG_REFBLOCK_ALLOC);
    ret = qcow2_cache_get_empty(s->refcount_cache, off, &t);
    if (ret < 0)
        return ret;
    rb_set(t->entries, place & (refblock_entries(s) - 1), s->refcount_order,
           1);
    qcow2_cache_mark_dirty(s->refcount_cache, t);
    ret = qcow2_cache_write_table(s->refcount_cache, t);
    qcow2_table_put(t);
    if (ret == 0)
        ret = qcow2_barrier(bs);
    if (ret < 0)
        return ret;
    bdrv_debug_event(s->file, BLKDBG_REFBLOCK_ALLOC_HOOKUP);
    s->refcount_table[block] = off;
    s->refcount_table_used = MAX(s->refcount_table_used, block + 1);
    ret = write_table_entry(bs, block);
    if (ret < 0) /* the block is not in the table on disk */
        s->refcount_table[block] = 0;
    return ret;
}

static void cluster_freed(BlockNode *bs, uint64_t cluster)
{
    Qcow2State *s = bs->opaque;
    uint64_t off = cluster << s->cluster_bits;

    if (cluster < s->free_cluster_index)
        s->free_cluster_index = cluster;
    /* It may have held an L2 table; a stale cached copy must not be used
     * (nor written back) when the cluster is reused. */
    qcow2_cache_forget(s->l2_cache, off);
    bdrv_pdiscard(s->file, off, s->cluster_size);
}

/* A refcount block about to change must not lie on other metadata: its
 * change is acknowledged before it is written (and checked again). */
static int checked_refblock(BlockNode *bs, Qcow2Table *t)
{
    Qcow2State *s = bs->opaque;

    return qcow2_check_write(bs, QCOW2_OL_REFCOUNT_BLOCK, t->offset,
                             s->cluster_size);
}

/* Remembers that @cluster went from refcount 0 to in use. */
static void mark_born(Qcow2State *s, uint64_t cluster)
{
    uint64_t word = cluster / 64;

    if (word >= s->born_words) {
        uint64_t n = MAX(word + 1, s->born_words * 2);
        s->born = g_renew(uint64_t, s->born, n);
        memset(s->born + s->born_words, 0,
               (n - s->born_words) * sizeof(uint64_t));
        s->born_words = n;
    }
    s->born[word] |= 1ULL << (cluster % 64);
}

bool qcow2_cluster_born(Qcow2State *s, uint64_t cluster)
{
    return cluster / 64 < s->born_words &&
           (s->born[cluster / 64] >> (cluster % 64)) & 1;
}

static int update_one(BlockNode *bs, uint64_t cluster, int64_t addend)
{
    Qcow2State *s = bs->opaque;
    uint64_t block = cluster >> s->refblock_bits;
    uint64_t i = cluster & (refblock_entries(s) - 1);
    uint64_t old, new;
    Qcow2Table *t;
    int ret;

    if (addend > 0) {
        ret = ensure_refblock(bs, block);
        if (ret < 0)
            return ret;
    }
    t = get_refblock(bs, block, &ret);
    if (!t && ret == 0)
        return qcow2_signal_corruption(bs, "freeing cluster %#" PRIx64
                                       " that no refcount block counts",
                                       cluster << s->cluster_bits);
    if (!t)
        return ret;
    old = rb_get(t->entries, i, s->refcount_order);
    new = old + addend;
    if ((addend < 0 && old < (uint64_t)-addend) ||
        (addend > 0 && (new < old || new > s->refcount_max))) {
        qcow2_table_put(t);
        return qcow2_signal_corruption(bs, "refcount of cluster %#" PRIx64
                                       " would leave its range (%" PRIu64
                                       " %+" PRId64 ")",
                                       cluster << s->cluster_bits, old,
                                       addend);
    }
    ret = checked_refblock(bs, t);
    if (ret == 0 && new == 0 &&
        qcow2_overlaps(bs, 0, cluster << s->cluster_bits, s->cluster_size))
        /* Data said to lie in metadata (a compressed entry, say): freeing
         * it would hand the metadata out for new data. */
        ret = qcow2_signal_corruption(bs, "Preventing freeing cluster %#"
                                      PRIx64 ", which holds metadata",
                                      cluster << s->cluster_bits);
    if (ret < 0) {
        qcow2_table_put(t);
        return ret;
    }
    rb_set(t->entries, i, s->refcount_order, new);
    qcow2_cache_mark_dirty(s->refcount_cache, t);
    qcow2_table_put(t);
    if (old == 0 && new)
        mark_born(s, cluster);
    if (new == 0)
        cluster_freed(bs, cluster);
    return 0;
}

int qcow2_set_refcount(BlockNode *bs, uint64_t cluster, uint64_t value)
{
    Qcow2State *s = bs->opaque;
    uint64_t block = cluster >> s->refblock_bits;
    Qcow2Table *t;
    int ret;

    if (value > s->refcount_max)
        return -ERANGE;
    if (!qcow2_refblock_exists(bs, cluster)) {
        if (!value)
            return 0;
        ret = ensure_refblock(bs, block);
        if (ret < 0)
            return ret;
    }
    t = get_refblock(bs, block, &ret);
    if (!t)
        return ret < 0 ? ret : -EIO;
    ret = checked_refblock(bs, t);
    if (ret < 0) {
        qcow2_table_put(t);
        return ret;
    }
    rb_set(t->entries, cluster & (refblock_entries(s) - 1), s->refcount_order,
           value);
    qcow2_cache_mark_dirty(s->refcount_cache, t);
    qcow2_table_put(t);
    return 0;
}

int qcow2_update_refcount(BlockNode *bs, uint64_t offset, uint64_t bytes,
                          int64_t addend)
{
    Qcow2State *s = bs->opaque;
    uint64_t first = offset >> s->cluster_bits;
    uint64_t last = (offset + bytes - 1) >> s->cluster_bits;
    int ret = 0;

    for (uint64_t c = first; bytes && c <= last && ret == 0; c++)
        ret = update_one(bs, c, addend);
    return ret;
}

/* --- allocation ------------------------------------------------------------
 */

bool qcow2_reserve_cluster(Qcow2State *s, uint64_t cluster, guint max)
{
    if (!s->reserved)
        s->reserved = g_hash_table_new_full(g_int64_hash, g_int64_equal,
                                            g_free, NULL);
    if (g_hash_table_size(s->reserved) >= max)
        return false;
    g_hash_table_add(s->reserved, g_memdup2(&cluster, sizeof(cluster)));
    return true;
}

bool qcow2_cluster_reserved(Qcow2State *s, uint64_t cluster)
{
    return s->reserved && g_hash_table_contains(s->reserved, &cluster);
}

/* May @cluster be allocated?  Its refcount is 0, and no reference past
 * the end of the file at the open names it. */
static int cluster_is_free(BlockNode *bs, uint64_t cluster, bool *is_free)
{
    Qcow2State *s = bs->opaque;
    uint64_t rc;
    int ret = qcow2_get_refcount(bs, cluster, &rc);

    *is_free = ret == 0 && rc == 0 && !qcow2_cluster_reserved(s, cluster);
    return ret;
}

/* The first run of @n free clusters, from free_cluster_index,
 * which moves past the used clusters before the first free one so that
 * the next search does not walk them again. */
static int64_t find_free(BlockNode *bs, uint64_t n)
{
    Qcow2State *s = bs->opaque;
    uint64_t start = s->free_cluster_index, run = 0;
    bool free_seen = false;

    for (uint64_t c = start; run < n; c++) {
        bool is_free;
        int ret = cluster_is_free(bs, c, &is_free);
        if (ret < 0)
            return ret;
        if (!is_free) {
            free_seen |= run > 0;
            run = 0;
            start = c + 1;
        } else {
            run++;
        }
    }
    if (!free_seen)
        s->free_cluster_index = start;
    return start;
}

static int64_t file_end(Qcow2State *s)
{
    return bdrv_getlength(s->file);
}

int64_t qcow2_alloc_clusters(BlockNode *bs, uint64_t n, bool *fresh)
{
    Qcow2State *s = bs->opaque;
    int64_t start;
    bool all_free;
    int ret;

    if (n > qcow2_max_alloc_clusters(s))
        return -EFBIG;
    /* Making refcount blocks may take clusters of the run found: retry
     * (the run then starts after the new block, and fits beside it). */
    do {
        start = find_free(bs, n);
        if (start < 0)
            return start;
        for (uint64_t b = start >> s->refblock_bits;
             b <= (start + n - 1) >> s->refblock_bits; b++) {
            ret = ensure_refblock(bs, b);
            if (ret < 0)
                return ret;
        }
        all_free = true;
        for (uint64_t c = start; c < start + n && all_free; c++) {
            ret = cluster_is_free(bs, c, &all_free);
            if (ret < 0)
                return ret;
        }
    } while (!all_free);
    /* Clusters with refcount 0 that hold metadata: the refcounts lie. */
    ret = qcow2_overlaps(bs, 0, start << s->cluster_bits,
                         n << s->cluster_bits);
    if (ret)
        return qcow2_signal_corruption(bs, "Preventing invalid allocation "
                                       "of %" PRIu64 " clusters at offset %#"
                                       PRIx64 " (in use as metadata)", n,
                                       (uint64_t)start << s->cluster_bits);
    if (start == (int64_t)s->free_cluster_index)
        s->free_cluster_index = start + n;
    *fresh = (start << s->cluster_bits) >= file_end(s);
    for (uint64_t c = start; c < start + n; c++) {
        ret = update_one(bs, c, 1);
        if (ret < 0)
            return ret;
    }
    return start << s->cluster_bits;
}

int qcow2_free_entry(BlockNode *bs, uint64_t l2_entry)
{
    Qcow2State *s = bs->opaque;
    uint64_t off, bytes;

    bdrv_debug_event(s->file, BLKDBG_CLUSTER_FREE);
    if (!qcow2_entry_extent(s, l2_entry, &off, &bytes))
        return 0;
    return qcow2_update_refcount(bs, off, bytes, -1);
}

/* --- growing the refcount table --------------------------------------------
 */

/* Size of the new table and of the blocks that describe it, placed
 * @skip clusters into the first range the old table cannot describe. */
static void plan_growth(Qcow2State *s, uint64_t min_entries, uint64_t skip,
                        uint64_t *entries, uint64_t *table_clusters,
                        uint64_t *blocks)
{
    uint64_t per_cluster = s->cluster_size / 8, k = 1, prev;

    do {
        prev = k;
        *entries = MAX(MAX(min_entries, s->refcount_table_size * 2),
                       s->refcount_table_size + k);
        *entries = ROUND_UP(*entries, per_cluster);
        *table_clusters = *entries / per_cluster;
        k = (skip + k + *table_clusters + refblock_entries(s) - 1) /
            refblock_entries(s);
    } while (k != prev);
    *blocks = k;
}

/* The first cluster from @from that starts @n clusters none of which is
 * reserved. */
static uint64_t unreserved_run(Qcow2State *s, uint64_t from, uint64_t n)
{
    uint64_t run = 0;

    while (s->reserved && run < n) {
        if (qcow2_cluster_reserved(s, from + run)) {
            from += run + 1;
            run = 0;
        } else {
            run++;
        }
    }
    return from;
}

/* Writes the @blocks refcount blocks of a range nobody used before, that
 * starts at cluster @area; they lie at [area + skip, area + skip + used),
 * with the new table, and count those clusters. */
static int write_area_refblocks(BlockNode *bs, uint64_t area, uint64_t skip,
                                uint64_t used, uint64_t blocks)
{
    Qcow2State *s = bs->opaque;
    int ret = 0;

    for (uint64_t k = 0; k < blocks && ret == 0; k++) {
        uint64_t first = k << s->refblock_bits;
        Qcow2Table *t;
        ret = qcow2_cache_get_empty(s->refcount_cache,
                                    (area + skip + k) << s->cluster_bits, &t);
        if (ret < 0)
            break;
        for (uint64_t i = MAX(first, skip);
             i < skip + used && i < first + refblock_entries(s); i++)
            rb_set(t->entries, i - first, s->refcount_order, 1);
        qcow2_cache_mark_dirty(s->refcount_cache, t);
        ret = qcow2_cache_write_table(s->refcount_cache, t);
        qcow2_table_put(t);
    }
    return ret;
}

static int write_header_table_fields(BlockNode *bs, uint64_t offset,
                                     uint32_t clusters)
{
    Qcow2State *s = bs->opaque;
    struct __attribute__((packed)) {
        uint64_t offset;
        uint32_t clusters;
    } f = { GUINT64_TO_BE(offset), GUINT32_TO_BE(clusters) };

    return bdrv_pwrite(s->file, QCOW2_HDR_REFCOUNT_TABLE_OFFSET, sizeof(f), &f,
                       0);
}

static int grow_refcount_table(BlockNode *bs, uint64_t min_entries)
{
    Qcow2State *s = bs->opaque;
    uint64_t entries, table_clusters, blocks;
    uint64_t first_block = s->refcount_table_size;
    uint64_t area = first_block << s->refblock_bits;
    uint64_t old_offset = s->refcount_table_offset;
    uint64_t old_bytes = s->refcount_table_size * 8;
    g_autofree uint64_t *table = NULL;
    uint64_t table_offset, skip = 0, start;
    int ret;

    /* Past clusters that references past the end of the file name. */
    for (;;) {
        plan_growth(s, min_entries, skip, &entries, &table_clusters, &blocks);
        start = unreserved_run(s, area + skip, blocks + table_clusters);
        if (start == area + skip)
            break;
        skip = start - area;
    }
    if (entries * 8 > QCOW2_MAX_REFTABLE_BYTES)
        return -EFBIG;
    table_offset = (start + blocks) << s->cluster_bits;
    /* Nothing the old table cannot describe may be in use. */
    ret = qcow2_check_write(bs, 0, start << s->cluster_bits,
                            (blocks + table_clusters) << s->cluster_bits);
    if (ret < 0)
        return ret;
    table = g_try_new0(uint64_t, entries);
    if (!table)
        return -ENOMEM;
    bdrv_debug_event(s->file, BLKDBG_REFTABLE_GROW);
    ret = write_area_refblocks(bs, area, skip, blocks + table_clusters,
                               blocks);
    if (ret < 0)
        return ret;
    for (uint64_t i = 0; i < s->refcount_table_size; i++)
        table[i] = GUINT64_TO_BE(s->refcount_table[i]);
    for (uint64_t k = 0; k < blocks; k++)
        table[first_block + k] = GUINT64_TO_BE((start + k) << s->cluster_bits);
    ret = bdrv_pwrite(s->file, table_offset, entries * 8, table, 0);
    if (ret == 0)
        ret = qcow2_barrier(bs);
    if (ret == 0)
        ret = write_header_table_fields(bs, table_offset, table_clusters);
    if (ret == 0)
        ret = qcow2_barrier(bs);
    if (ret < 0)
        return ret;
    for (uint64_t i = 0; i < entries; i++)
        table[i] = GUINT64_FROM_BE(table[i]);
    g_free(s->refcount_table);
    s->refcount_table = g_steal_pointer(&table);
    s->refcount_table_size = entries;
    s->refcount_table_offset = table_offset;
    s->refcount_table_used = first_block + blocks;
    return qcow2_update_refcount(bs, old_offset, old_bytes, -1);
}

/* --- write-back order --------------------------------------------------------
 */

static int flush_refcounts(BlockNode *bs)
{
    Qcow2State *s = bs->opaque;
    bool wrote = false;
    int ret = qcow2_cache_flush(s->refcount_cache, &wrote);

    if (ret == 0 && wrote)
        ret = qcow2_barrier(bs);
    return ret;
}

int qcow2_flush_metadata(BlockNode *bs)
{
    Qcow2State *s = bs->opaque;
    int ret;

    if (!s->writable)
        return 0;
    if (qcow2_is_corrupt(s))
        return -EIO;
    bdrv_debug_event(s->file, BLKDBG_REFBLOCK_UPDATE);
    ret = flush_refcounts(bs);
    if (ret == 0)
        ret = qcow2_cache_flush(s->l2_cache, NULL);
    return ret;
}

int qcow2_write_l2_now(BlockNode *bs, Qcow2Table *t)
{
    Qcow2State *s = bs->opaque;
    int ret = flush_refcounts(bs);

    if (ret == 0)
        ret = qcow2_cache_write_table(s->l2_cache, t);
    if (ret == 0)
        ret = qcow2_barrier(bs);
    return ret;
}
