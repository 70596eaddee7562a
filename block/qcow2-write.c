/*
 * qcow2-write.c - writes, write-zeroes and discards of a qcow2 image.
 *
 * Design notes.
 *
 * A write walks its range one run at a time.  A run either lies in
 * clusters this image owns alone (L2 entry with the COPIED flag): the data
 * is written in place, with no metadata change.  Or it lies in clusters
 * that need a new host cluster (unallocated, zero, compressed, or shared
 * with an internal snapshot): new clusters are allocated, the parts of the
 * first and last cluster that the write does not cover are filled with the
 * old guest content (copy-on-write: from the backing file, the old cluster,
 * or zeroes), and only after the data is written do the L2 entries point
 * to it.  So a reader, who takes no lock, sees either the old mapping or
 * the new one with its data in place.
 *
 * The metadata lock is held for lookups and L2/refcount changes only, never
 * for guest data I/O.  What keeps two requests from allocating the same
 * guest cluster twice is the in-flight list: every run registers the guest
 * clusters it works on, exclusively when it changes their mapping
 * (allocation, zero, discard), shared when it writes in place.  A request
 * waits until no conflicting run overlaps, then looks the mapping up again,
 * since the one it waited for may have changed it.  Requests on different
 * clusters never wait for each other.
 */
#include "qcow2.h"
#include "luks.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void qcow2_write_init(Qcow2State *s)
{
    g_mutex_init(&s->lock);
    g_cond_init(&s->inflight_cond);
}

/* --- in-flight runs --------------------------------------------------------
 */

static bool conflicts(Qcow2State *s, uint64_t first, uint64_t last,
                      bool exclusive)
{
    for (GList *l = s->inflight; l; l = l->next) {
        Qcow2InFlight *f = l->data;
        if (f->first <= last && first <= f->last &&
            (exclusive || f->exclusive))
            return true;
    }
    return false;
}

static void inflight_add(Qcow2State *s, Qcow2InFlight *f, uint64_t first,
                         uint64_t last, bool exclusive)
{
    *f = (Qcow2InFlight){ .first = first, .last = last,
                          .exclusive = exclusive };
    f->link.data = f;
    s->inflight = g_list_concat(&f->link, s->inflight);
}

static void inflight_end(Qcow2State *s, Qcow2InFlight *f)
{
    s->inflight = g_list_remove_link(s->inflight, &f->link);
    g_cond_broadcast(&s->inflight_cond);
}

/* After metadata changed: write it back when the caches fill with dirty
 * tables (they cannot evict those). */
static int maybe_flush_metadata(BlockNode *bs)
{
    Qcow2State *s = bs->opaque;

    if (qcow2_cache_needs_flush(s->l2_cache) ||
        qcow2_cache_needs_flush(s->refcount_cache))
        return qcow2_flush_metadata(bs);
    return 0;
}

/* --- L2 tables for writing -------------------------------------------------
 */

static int write_l1_entry(BlockNode *bs, uint64_t l1_index)
{
    Qcow2State *s = bs->opaque;
    uint64_t be = GUINT64_TO_BE(s->l1_table[l1_index]);

    bdrv_debug_event(s->file, BLKDBG_L1_UPDATE);
    return bdrv_pwrite(s->file, s->l1_offset + l1_index * 8, 8, &be, 0);
}

/* A new L2 table for @l1_index: empty, or a copy of the shared one it
 * replaces.  On disk before the L1 entry points to it. */
static int allocate_l2(BlockNode *bs, uint64_t l1_index, Qcow2Table **out)
{
    Qcow2State *s = bs->opaque;
    uint64_t old_entry = s->l1_table[l1_index];
    uint64_t old = old_entry & QCOW2_L1E_OFFSET_MASK;
    Qcow2Table *t, *old_t = NULL;
    bool fresh;
    int64_t off = qcow2_alloc_clusters(bs, 1, &fresh);
    int ret;

    if (off < 0)
        return off;
    if (old) {
        ret = qcow2_cache_get(s->l2_cache, old, &old_t);
        if (ret < 0)
            return ret;
    }
    ret = qcow2_cache_get_empty(s->l2_cache, off, &t);
    if (ret < 0) {
        qcow2_table_put(old_t);
        return ret;
    }
    if (old_t)
        memcpy(t->entries, old_t->entries, s->cluster_size);
    bdrv_debug_event(s->file, BLKDBG_L2_ALLOC_WRITE);
    qcow2_table_put(old_t);
    qcow2_cache_mark_dirty(s->l2_cache, t);
    ret = qcow2_write_l2_now(bs, t);
    if (ret == 0) {
        __atomic_store_n(&s->l1_table[l1_index], off | QCOW2_OFLAG_COPIED,
                         __ATOMIC_RELAXED);
        ret = write_l1_entry(bs, l1_index);
        if (ret < 0) /* the old table stays in use, as on disk */
            __atomic_store_n(&s->l1_table[l1_index], old_entry,
                             __ATOMIC_RELAXED);
    }
    /* The L1 entry no longer naming the old table must be on disk before
     * its refcount drops (it may be shared with a snapshot, or freed). */
    if (ret == 0 && old)
        ret = qcow2_barrier(bs);
    if (ret == 0 && old)
        ret = qcow2_update_refcount(bs, old, s->cluster_size, -1);
    if (ret < 0) {
        qcow2_table_put(t);
        return ret;
    }
    *out = t;
    return 0;
}

/* An L2 table that is to be copied, freed or changed must be one: in
 * the file, aligned, and on no other metadata (an L1 entry naming the
 * header or the refcount table would have it overwritten). */
static int check_l2_offset(BlockNode *bs, uint64_t l1_index, uint64_t off)
{
    Qcow2State *s = bs->opaque;

    if (off & (s->cluster_size - 1))
        return qcow2_signal_corruption(bs, "L2 table offset %#" PRIx64
                                       " unaligned (L1 index: %#" PRIx64 ")",
                                       off, l1_index);
    if (!qcow2_table_in_file(bs, off, s->cluster_size))
        return qcow2_signal_corruption(bs, "L2 table offset %#" PRIx64
                                       " beyond the end of the file (L1 "
                                       "index: %#" PRIx64 ")", off, l1_index);
    if (qcow2_overlaps(bs, QCOW2_OL_ACTIVE_L2, off, s->cluster_size))
        return qcow2_signal_corruption(bs, "L2 table at offset %#" PRIx64
                                       " lies on other metadata (L1 index: "
                                       "%#" PRIx64 ")", off, l1_index);
    return 0;
}

/* The L2 table covering guest @offset, owned by this image (allocated or
 * copied if needed), referenced.  Under the metadata lock. */
static int l2_for_write(BlockNode *bs, int64_t offset, Qcow2Table **out)
{
    Qcow2State *s = bs->opaque;
    uint64_t l1_index = (uint64_t)offset >> (s->cluster_bits + s->l2_bits);
    uint64_t e = s->l1_table[l1_index];
    uint64_t off = e & QCOW2_L1E_OFFSET_MASK;
    int ret = off ? check_l2_offset(bs, l1_index, off) : 0;

    if (ret < 0)
        return ret;
    if ((e & QCOW2_OFLAG_COPIED) && off)
        return qcow2_cache_get(s->l2_cache, off, out);
    return allocate_l2(bs, l1_index, out);
}

static uint32_t l2_index(Qcow2State *s, int64_t offset)
{
    return ((uint64_t)offset >> s->cluster_bits) & (s->l2_entries - 1);
}

/* --- copy-on-write
 * ------------------------------------------------------------ */

/* Does guest cluster @entry (at @offset) read as zeroes as it is? */
static bool reads_zero(Qcow2State *s, uint64_t entry, int64_t offset)
{
    switch (qcow2_classify(entry)) {
    case QCOW2_CLUSTER_ZERO:
        return true;
    case QCOW2_CLUSTER_UNALLOCATED:
        return !s->backing || offset >= s->backing_length;
    default:
        return false;
    }
}

/* One allocating run: guest [start, end) is the cluster-aligned envelope
 * of the write [offset, offset + bytes), going to new clusters at @host. */
typedef struct AllocRun {
    int64_t start, end;
    int64_t offset, bytes;
    uint64_t host;
    bool fresh;          /* the new clusters read as zeroes already */
    bool head_zero, tail_zero;
} AllocRun;

/* Fills the edges of the run the write leaves out: with old content in a
 * bounce buffer that carries the data too (one write), or with zeroes. */
static int write_run(BlockNode *bs, const AllocRun *r, const void *buf)
{
    Qcow2State *s = bs->opaque;
    int64_t head = r->offset - r->start;
    int64_t tail = r->end - (r->offset + r->bytes);
    bool copy_head = head && !r->head_zero, copy_tail = tail && !r->tail_zero;
    char *bounce;
    int ret = 0;

    bdrv_debug_event(s->file, BLKDBG_WRITE_AIO);
    /* Encrypted: even zeroes go through the cipher, in the bounce buffer. */
    if (!copy_head && !copy_tail && !s->crypto) {
        if (head && !r->fresh)
            ret = bdrv_pwrite_zeroes(s->file, r->host, head, 0);
        if (ret == 0 && tail && !r->fresh)
            ret = bdrv_pwrite_zeroes(s->file, r->host + head + r->bytes, tail,
                                     0);
        if (ret == 0)
            ret = bdrv_pwrite(s->file, r->host + head, r->bytes, buf, 0);
        return ret;
    }
    bounce = bdrv_blockalign(s->file, r->end - r->start);
    if (!bounce)
        return -ENOMEM;
    if (head)
        ret = copy_head ? qcow2_read_guest(bs, r->start, head, bounce)
                        : (memset(bounce, 0, head), 0);
    if (ret == 0 && tail)
        ret = copy_tail ? qcow2_read_guest(bs, r->offset + r->bytes, tail,
                                           bounce + head + r->bytes)
                        : (memset(bounce + head + r->bytes, 0, tail), 0);
    if (ret == 0) {
        memcpy(bounce + head, buf, r->bytes);
        if (s->crypto)
            ret = luks_key_crypt(s->crypto, r->host / LUKS_SECTOR_SIZE,
                                 bounce, r->end - r->start, true);
    }
    if (ret == 0)
        ret = bdrv_pwrite(s->file, r->host, r->end - r->start, bounce, 0);
    free(bounce);
    return ret;
}

/* An entry without the COPIED flag whose cluster has refcount 1: QEMU's
 * rule is that the flag is merely missing (a crash in the middle of an
 * internal snapshot leaves that; qemu-img check calls it a repairable
 * OFLAG_COPIED error): the cluster is copied on write and the old one
 * left allocated (a leak, which qemu-img check -r leaks reclaims): with
 * the flag wrong, the refcount may be wrong too, and another entry may
 * still name the cluster (the fuzzer found one with COPIED, whose data a
 * free and reuse lost).  Unless the cluster holds something else: metadata,
 * or a cluster this node handed out since the open (its refcount was 0,
 * so the entry was never counted, and the cluster now holds other data).
 * 0, or -EIO after marking the image corrupt. */
static int check_uncopied(BlockNode *bs, uint64_t off)
{
    Qcow2State *s = bs->opaque;
    int hit = qcow2_overlaps(bs, 0, off, s->cluster_size);

    if (hit)
        return qcow2_signal_corruption(bs, "cluster %#" PRIx64 " is mapped "
                                       "as data (no COPIED flag) but holds "
                                       "metadata", off);
    if (qcow2_cluster_born(s, off >> s->cluster_bits))
        return qcow2_signal_corruption(bs, "cluster %#" PRIx64 " is mapped "
                                       "as shared (no COPIED flag) but had "
                                       "refcount 0 and was reused", off);
    if (!s->said_uncopied && bdrv_verbose)
        fprintf(stderr, "snapnbd: qcow2 image '%s': cluster %#" PRIx64
                " has refcount 1 but no COPIED flag; copying it on write "
                "(qemu-img check -r all sets the flags)\n", bs->filename,
                off);
    s->said_uncopied = true;
    return 0;
}

/* The clusters a compressed entry's bytes touch are counted for it, so
 * each has a refcount, and none was handed out since the open (this node
 * never writes compressed data: one it took had refcount 0 then, which
 * the entry belies).  Otherwise freeing the entry, as an overwrite or a
 * discard does, would free a cluster that holds someone else's data.
 * 0, or -EIO after marking the image corrupt. */
static int check_compressed(BlockNode *bs, uint64_t e, bool *leak)
{
    Qcow2State *s = bs->opaque;
    uint64_t off, bytes, rc;

    qcow2_entry_extent(s, e, &off, &bytes);
    for (uint64_t c = off >> s->cluster_bits;
         c <= (off + bytes - 1) >> s->cluster_bits; c++) {
        int ret = qcow2_get_refcount(bs, c, &rc);
        if (ret < 0)
            return ret;
        if (qcow2_cluster_reserved(s, c)) {
            *leak = true; /* never counted: nothing to free */
            continue;
        }
        if (rc == 0 || qcow2_cluster_born(s, c))
            return qcow2_signal_corruption(bs, "compressed data at %#" PRIx64
                                           " lies in cluster %#" PRIx64
                                           ", which %s", off,
                                           c << s->cluster_bits,
                                           rc ? "was free when this node "
                                                "allocated it"
                                              : "has refcount 0");
    }
    return 0;
}

/* A cluster an entry without the COPIED flag names is shared (refcount 2
 * or more), or its flag is missing (refcount 1, check_uncopied).  With
 * refcount 0 the entry lies: the cluster may be handed out, or already
 * was, to someone else.  Unless it lay past the end of the file at the
 * open: never counted (qcow2-repair.c; whatever its refcount block says)
 * and never handed out, it is not freed (*leak), whatever the flags.
 * 0, or -EIO after marking the image corrupt. */
static int check_shared(BlockNode *bs, const uint64_t *entries, uint32_t n,
                        bool *leak)
{
    Qcow2State *s = bs->opaque;

    for (uint32_t i = 0; i < n; i++) {
        leak[i] = false;
        uint64_t e = entries[i], off = e & QCOW2_L2E_OFFSET_MASK, rc;
        int ret;
        if (e & QCOW2_OFLAG_COMPRESSED) {
            ret = check_compressed(bs, e, &leak[i]);
            if (ret < 0)
                return ret;
            continue;
        }
        if (!off)
            continue;
        if (qcow2_cluster_reserved(s, off >> s->cluster_bits)) {
            leak[i] = true;
            continue;
        }
        if (e & QCOW2_OFLAG_COPIED)
            continue;
        ret = qcow2_get_refcount(bs, off >> s->cluster_bits, &rc);
        if (ret == 0 && rc == 0)
            ret = qcow2_signal_corruption(bs, "cluster %#" PRIx64 " is "
                                          "mapped as shared (no COPIED "
                                          "flag) but its refcount is 0",
                                          off);
        if (ret == 0 && rc == 1) {
            ret = check_uncopied(bs, off);
            leak[i] = true;
        }
        if (ret < 0)
            return ret;
    }
    return 0;
}

/* A write into clusters the image has already: encrypted first when the
 * image is (the tweak is the host offset). */
static int write_in_place(Qcow2State *s, uint64_t host, int64_t bytes,
                          const void *buf)
{
    g_autofree char *enc = NULL;
    int ret;

    if (!s->crypto)
        return bdrv_pwrite(s->file, host, bytes, buf, 0);
    enc = g_memdup2(buf, bytes);
    ret = luks_key_crypt(s->crypto, host / LUKS_SECTOR_SIZE, enc, bytes,
                         true);
    return ret < 0 ? ret : bdrv_pwrite(s->file, host, bytes, enc, 0);
}

/* Points the run's L2 entries at the new clusters; frees what the old
 * entries held once the table no longer refers to it on disk. */
static int commit_run(BlockNode *bs, Qcow2Table *t, const AllocRun *r,
                      const uint64_t *old)
{
    Qcow2State *s = bs->opaque;
    uint32_t first = l2_index(s, r->start);
    uint32_t n = (r->end - r->start) >> s->cluster_bits;
    bool frees = false;
    g_autofree bool *leak = g_new(bool, n);
    int ret = check_shared(bs, old, n, leak);

    if (ret < 0)
        return ret;
    for (uint32_t i = 0; i < n; i++) {
        qcow2_table_set(t, first + i, (r->host + ((uint64_t)i <<
                                                  s->cluster_bits)) |
                                          QCOW2_OFLAG_COPIED);
        frees |= (old[i] & (QCOW2_L2E_OFFSET_MASK | QCOW2_OFLAG_COMPRESSED))
                 != 0;
    }
    bdrv_debug_event(s->file, BLKDBG_L2_UPDATE);
    qcow2_cache_mark_dirty(s->l2_cache, t);
    if (frees)
        ret = qcow2_write_l2_now(bs, t);
    for (uint32_t i = 0; i < n && ret == 0; i++) {
        if (!leak[i])
            ret = qcow2_free_entry(bs, old[i]);
    }
    return ret;
}

/* --- writes -------------------------------------------------------------- */

/* Waits until the run at @offset can go, under the lock; sets *host (in
 * place) or 0 (allocate) and *pnum as qcow2_map_for_write does. */
static int wait_for_run(BlockNode *bs, int64_t offset, int64_t bytes,
                        Qcow2InFlight *f, uint64_t *host, int64_t *pnum)
{
    Qcow2State *s = bs->opaque;
    uint64_t first = (uint64_t)offset >> s->cluster_bits;

    for (;;) {
        int ret = qcow2_map_for_write(bs, offset, bytes, host, pnum);
        uint64_t last = (uint64_t)(offset + *pnum - 1) >> s->cluster_bits;
        if (ret < 0)
            return ret;
        if (!conflicts(s, first, last, *host == 0)) {
            inflight_add(s, f, first, last, *host == 0);
            return 0;
        }
        g_cond_wait(&s->inflight_cond, &s->lock);
    }
}

/* New clusters had refcount 0: none may be in use by the L2 table they
 * go into (a damaged refcount; the other user's data would be lost, and
 * freeing its old mapping later would free ours).  Users in other tables
 * are caught when that mapping is dropped (check_shared).  @host, or -EIO.
 *
 * A scan of the table remembers the highest offset it saw: clusters above
 * it (new ones at the end of the file, the common case) need no scan, as
 * every entry set since names a cluster allocated, so referenced, here.
 * (The scan was 4 % of the server's CPU while a fleecing job copied.) */
static int64_t check_unreferenced(BlockNode *bs, Qcow2Table *t, int64_t host,
                                  uint32_t n)
{
    Qcow2State *s = bs->opaque;
    uint64_t end = host + ((uint64_t)n << s->cluster_bits), max = 0;

    if (t->scanned_max_host != UINT64_MAX &&
        (uint64_t)host > t->scanned_max_host)
        return host;
    for (uint32_t i = 0; i < s->l2_entries; i++) {
        uint64_t e = qcow2_table_entry(t, i);
        uint64_t off = e & QCOW2_L2E_OFFSET_MASK;
        if (e & QCOW2_OFLAG_COMPRESSED)
            off = e & s->coffset_mask & ~(uint64_t)(s->cluster_size - 1);
        max = MAX(max, off);
        if (off >= (uint64_t)host && off < end) {
            qcow2_update_refcount(bs, host, end - host, -1);
            return qcow2_signal_corruption(bs, "cluster %#" PRIx64 " had "
                                           "refcount 0 but is in use (L2 "
                                           "table %#" PRIx64 ", index %u)",
                                           off, t->offset, i);
        }
    }
    t->scanned_max_host = max;
    return host;
}

/* Allocates for the run, then writes it (unlocked) and maps it. */
static int alloc_and_write(BlockNode *bs, int64_t offset, int64_t bytes,
                           const void *buf)
{
    Qcow2State *s = bs->opaque;
    AllocRun r = { .offset = offset, .bytes = bytes };
    uint32_t n, first;
    g_autofree uint64_t *old = NULL;
    Qcow2Table *t;
    int64_t host;
    int ret;

    r.start = offset & ~(int64_t)(s->cluster_size - 1);
    r.end = ROUND_UP(offset + bytes, (int64_t)s->cluster_size);
    n = (r.end - r.start) >> s->cluster_bits;
    ret = l2_for_write(bs, offset, &t);
    if (ret < 0)
        return ret;
    first = l2_index(s, r.start);
    old = g_new(uint64_t, n);
    for (uint32_t i = 0; i < n; i++)
        old[i] = qcow2_table_entry(t, first + i);
    r.head_zero = reads_zero(s, old[0], r.start);
    r.tail_zero = reads_zero(s, old[n - 1], r.end - s->cluster_size);
    bdrv_debug_event(s->file, BLKDBG_CLUSTER_ALLOC);
    host = qcow2_alloc_clusters(bs, n, &r.fresh);
    if (host >= 0)
        host = check_unreferenced(bs, t, host, n);
    if (host < 0) {
        qcow2_table_put(t);
        return host;
    }
    r.host = host;
    g_mutex_unlock(&s->lock);
    ret = write_run(bs, &r, buf);
    g_mutex_lock(&s->lock);
    if (ret == 0)
        ret = commit_run(bs, t, &r, old);
    else
        qcow2_update_refcount(bs, r.host, r.end - r.start, -1);
    qcow2_table_put(t);
    if (ret == 0)
        ret = maybe_flush_metadata(bs);
    return ret;
}

/* Writes the first run of the range; *done says how many bytes. */
static int write_one_run(BlockNode *bs, int64_t offset, int64_t bytes,
                         const void *buf, int64_t *done)
{
    Qcow2State *s = bs->opaque;
    Qcow2InFlight f;
    uint64_t host;
    int ret;

    if (qcow2_is_corrupt(s))
        return -EIO;
    g_mutex_lock(&s->lock);
    ret = wait_for_run(bs, offset, bytes, &f, &host, done);
    if (ret < 0) {
        g_mutex_unlock(&s->lock);
        return ret;
    }
    if (host) {
        /* Guest data never lands on metadata (a damaged L2 entry). */
        ret = qcow2_check_write(bs, 0, host, *done);
        g_mutex_unlock(&s->lock);
        bdrv_debug_event(s->file, BLKDBG_WRITE_AIO);
        if (ret == 0)
            ret = write_in_place(s, host, *done, buf);
        g_mutex_lock(&s->lock);
    } else {
        ret = alloc_and_write(bs, offset, *done, buf);
    }
    inflight_end(s, &f);
    g_mutex_unlock(&s->lock);
    return ret;
}

static int write_range(BlockNode *bs, int64_t offset, int64_t bytes,
                       const void *buf)
{
    while (bytes > 0) {
        int64_t done;
        int ret = write_one_run(bs, offset, bytes, buf, &done);
        if (ret < 0)
            return ret;
        offset += done;
        bytes -= done;
        buf = (const char *)buf + done;
    }
    return 0;
}

int qcow2_pwrite(BlockNode *bs, int64_t offset, int64_t bytes,
                 const void *buf, int flags)
{
    (void)flags; /* FUA is emulated by io.c with a flush */
    return write_range(bs, offset, bytes, buf);
}

/* --- zeroes and discards
 * ------------------------------------------------------ */

/* What a whole cluster's L2 entry becomes.  Zeroing keeps an owned
 * cluster allocated unless unmapping is allowed; discard drops it, reading
 * as zeroes (v3) or as the backing (v2, as QEMU). */
static uint64_t cleared_entry(Qcow2State *s, uint64_t old, bool discard,
                              bool unmap)
{
    if (discard)
        return s->version >= 3 ? QCOW2_OFLAG_ZERO : 0;
    if (!unmap && (old & QCOW2_OFLAG_COPIED) &&
        qcow2_classify(old) != QCOW2_CLUSTER_COMPRESSED &&
        (old & QCOW2_L2E_OFFSET_MASK))
        return (old & ~QCOW2_OFLAG_ZERO) | QCOW2_OFLAG_ZERO;
    return QCOW2_OFLAG_ZERO;
}

/* Does clearing change nothing? (nothing there, and nothing beneath) */
static bool already_clear(Qcow2State *s, uint64_t old, bool discard)
{
    Qcow2ClusterType type = qcow2_classify(old);

    if (discard)
        return !s->backing && (type == QCOW2_CLUSTER_UNALLOCATED ||
                               (type == QCOW2_CLUSTER_ZERO &&
                                !(old & QCOW2_L2E_OFFSET_MASK)));
    return type == QCOW2_CLUSTER_ZERO;
}

/* Clears whole clusters [offset, offset + bytes) within one L2 table. */
static int clear_in_table(BlockNode *bs, int64_t offset, int64_t bytes,
                          bool discard, bool unmap)
{
    Qcow2State *s = bs->opaque;
    uint32_t first = l2_index(s, offset);
    uint32_t n = (bytes + s->cluster_size - 1) >> s->cluster_bits;
    g_autofree uint64_t *freed = g_new0(uint64_t, n);
    g_autofree bool *leak = g_new0(bool, n);
    uint64_t l1e = s->l1_table[(uint64_t)offset >>
                               (s->cluster_bits + s->l2_bits)];
    bool frees = false;
    Qcow2Table *t;
    int ret;

    if (!(l1e & QCOW2_L1E_OFFSET_MASK) && !s->backing && discard)
        return 0; /* nothing allocated, nothing beneath */
    ret = l2_for_write(bs, offset, &t);
    if (ret < 0)
        return ret;
    for (uint32_t i = 0; i < n && ret == 0; i++) {
        uint64_t old = qcow2_table_entry(t, first + i);
        ret = check_shared(bs, &old, 1, &leak[i]);
    }
    if (ret < 0) {
        qcow2_table_put(t);
        return ret;
    }
    for (uint32_t i = 0; i < n; i++) {
        uint64_t old = qcow2_table_entry(t, first + i);
        uint64_t new;
        if (already_clear(s, old, discard))
            continue;
        new = cleared_entry(s, old, discard, unmap);
        if (((new & QCOW2_L2E_OFFSET_MASK) != (old & QCOW2_L2E_OFFSET_MASK) ||
             (old & QCOW2_OFLAG_COMPRESSED)) && !leak[i]) {
            freed[i] = old;
            frees |= (old & (QCOW2_L2E_OFFSET_MASK |
                             QCOW2_OFLAG_COMPRESSED)) != 0;
        }
        qcow2_table_set(t, first + i, new);
    }
    bdrv_debug_event(s->file, BLKDBG_L2_UPDATE);
    qcow2_cache_mark_dirty(s->l2_cache, t);
    if (frees)
        ret = qcow2_write_l2_now(bs, t);
    for (uint32_t i = 0; i < n && ret == 0; i++)
        ret = qcow2_free_entry(bs, freed[i]);
    qcow2_table_put(t);
    return ret;
}

static int clear_range(BlockNode *bs, int64_t offset, int64_t bytes,
                       bool discard, bool unmap)
{
    Qcow2State *s = bs->opaque;
    int64_t table_bytes = (int64_t)s->cluster_size << s->l2_bits;
    int ret = 0;

    while (bytes > 0 && ret == 0) {
        int64_t n = MIN(bytes, table_bytes - offset % table_bytes);
        uint64_t first = (uint64_t)offset >> s->cluster_bits;
        uint64_t last = (uint64_t)(offset + n - 1) >> s->cluster_bits;
        Qcow2InFlight f;

        g_mutex_lock(&s->lock);
        while (conflicts(s, first, last, true))
            g_cond_wait(&s->inflight_cond, &s->lock);
        inflight_add(s, &f, first, last, true);
        ret = clear_in_table(bs, offset, n, discard, unmap);
        if (ret == 0)
            ret = maybe_flush_metadata(bs);
        inflight_end(s, &f);
        g_mutex_unlock(&s->lock);
        offset += n;
        bytes -= n;
    }
    return ret;
}

int qcow2_pwrite_zeroes(BlockNode *bs, int64_t offset, int64_t bytes,
                        int flags)
{
    Qcow2State *s = bs->opaque;
    bool unmap = (flags & BDRV_REQ_MAY_UNMAP) && bdrv_discard_unmaps(bs);

    if (qcow2_is_corrupt(s))
        return -EIO;
    /* Zero clusters need version 3; io.c then writes zero buffers. */
    if (s->version < 3)
        return -ENOTSUP;
    return clear_range(bs, offset, bytes, false, unmap);
}

int qcow2_pdiscard(BlockNode *bs, int64_t offset, int64_t bytes)
{
    if (qcow2_is_corrupt(bs->opaque))
        return -EIO;
    return clear_range(bs, offset, bytes, true, true);
}

/* --- preallocation -------------------------------------------------------- */

/* Maps the guest clusters of one L2 table's range at @offset to new host
 * clusters; returns the end of the last one on the host, or -errno. */
static int64_t preallocate_table(BlockNode *bs, int64_t offset)
{
    Qcow2State *s = bs->opaque;
    int64_t end = MIN((int64_t)s->size,
                      offset + ((int64_t)s->cluster_size << s->l2_bits));
    uint32_t n = (end - offset + s->cluster_size - 1) >> s->cluster_bits;
    int64_t host = 0, last = 0;
    Qcow2Table *t;
    bool fresh;
    int ret = l2_for_write(bs, offset, &t);

    if (ret < 0)
        return ret;
    /* In runs an allocation can make (qcow2_max_alloc_clusters). */
    for (uint32_t i = 0; i < n && host >= 0;) {
        uint32_t k = MIN(n - i, qcow2_max_alloc_clusters(s));
        host = qcow2_alloc_clusters(bs, k, &fresh);
        for (uint32_t j = 0; host >= 0 && j < k; j++, i++)
            qcow2_table_set(t, i, (host + ((uint64_t)j << s->cluster_bits)) |
                                      QCOW2_OFLAG_COPIED);
        if (host >= 0)
            last = MAX(last, host + ((int64_t)k << s->cluster_bits));
    }
    qcow2_cache_mark_dirty(s->l2_cache, t);
    qcow2_table_put(t);
    ret = host < 0 ? (int)host : maybe_flush_metadata(bs);
    return ret < 0 ? ret : last;
}

int qcow2_preallocate_metadata(BlockNode *bs)
{
    Qcow2State *s = bs->opaque;
    int64_t table_bytes = (int64_t)s->cluster_size << s->l2_bits;
    int64_t host_end = 0;
    int ret = 0;

    g_mutex_lock(&s->lock);
    for (int64_t off = 0; off < (int64_t)s->size && ret == 0;
         off += table_bytes) {
        int64_t end = preallocate_table(bs, off);
        if (end < 0)
            ret = end;
        host_end = MAX(host_end, end);
    }
    if (ret == 0)
        ret = qcow2_flush_metadata(bs);
    g_mutex_unlock(&s->lock);
    /* The file covers its clusters, as qemu-img leaves it (sparse). */
    if (ret == 0 && host_end > bdrv_getlength(s->file)) {
        static const char zero[512];
        ret = bdrv_pwrite(s->file, host_end - sizeof(zero), sizeof(zero),
                          zero, 0);
    }
    return ret;
}
