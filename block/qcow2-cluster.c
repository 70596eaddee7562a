/*
 * qcow2-cluster.c - guest offset -> where its bytes are (L1/L2 lookup).
 *
 * Design notes.
 *
 * A lookup answers for a run of guest bytes, not one cluster: reads want
 * one host I/O per host-contiguous run, block status wants the longest run
 * of one kind (so that a map of a big image is quick).  A run never crosses
 * an L2 table (callers loop), except that an unallocated L1 entry answers
 * for its whole range at once.
 *
 * The image is untrusted input.  The L1 table was checked at open; each L2
 * table offset and data cluster offset is checked here when used: unaligned
 * or (for tables) past the end of the file is -EIO, as QEMU does, rather
 * than a read of some arbitrary place.  A bad entry in the middle of a run
 * ends the run, so the error is reported for the cluster that has it.
 */
#include "qcow2.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

/* Signals the corruption (qcow2-check.c); returns -EIO. */
static int corrupt(BlockNode *bs, const char *what, uint64_t value,
                   uint64_t guest)
{
    return qcow2_signal_corruption(bs, "%s %#" PRIx64 " (guest offset %#"
                                   PRIx64 ")", what, value, guest);
}

Qcow2ClusterType qcow2_classify(uint64_t entry)
{
    if (entry & QCOW2_OFLAG_COMPRESSED)
        return QCOW2_CLUSTER_COMPRESSED;
    /* As QEMU, the zero flag is honoured in v2 images too (the spec says
     * it is never set there, so reading it as zero costs nothing). */
    if (entry & QCOW2_OFLAG_ZERO)
        return QCOW2_CLUSTER_ZERO;
    if (!(entry & QCOW2_L2E_OFFSET_MASK))
        return QCOW2_CLUSTER_UNALLOCATED;
    return QCOW2_CLUSTER_NORMAL;
}

/* A standard descriptor's host offset must be cluster aligned (also for
 * preallocated zero clusters, which QEMU checks the same way). */
static bool entry_ok(Qcow2State *s, uint64_t entry, Qcow2ClusterType type)
{
    if (type != QCOW2_CLUSTER_NORMAL && type != QCOW2_CLUSTER_ZERO)
        return true;
    return (entry & QCOW2_L2E_OFFSET_MASK & (s->cluster_size - 1)) == 0;
}

/* The L2 table for L1 entry @l1_index, or NULL with *ret = 0 when it is
 * unallocated, or NULL with *ret < 0 when the entry is bad. */
static Qcow2Table *get_l2(BlockNode *bs, uint64_t l1_index, uint64_t guest,
                          int *ret)
{
    Qcow2State *s = bs->opaque;
    uint64_t l2_offset;
    Qcow2Table *t = NULL;

    *ret = 0;
    if (l1_index >= s->l1_size)
        return NULL; /* cannot happen: open checked the L1 size */
    l2_offset = __atomic_load_n(&s->l1_table[l1_index], __ATOMIC_RELAXED) &
                QCOW2_L1E_OFFSET_MASK;
    if (!l2_offset)
        return NULL;
    if (l2_offset & (s->cluster_size - 1)) {
        *ret = corrupt(bs, "L2 table offset unaligned:", l2_offset, guest);
        return NULL;
    }
    if (!qcow2_table_in_file(bs, l2_offset, s->cluster_size)) {
        *ret = corrupt(bs, "L2 table beyond the end of the file:", l2_offset,
                       guest);
        return NULL;
    }
    bdrv_debug_event(s->file, BLKDBG_L2_LOAD);
    *ret = qcow2_cache_get(s->l2_cache, l2_offset, &t);
    return t;
}

/* Guest clusters from @first (index in @t) that continue the run. */
static uint32_t run_length(Qcow2State *s, const Qcow2Table *t, uint32_t first,
                           uint32_t max, bool any_host)
{
    uint64_t e0 = qcow2_table_entry(t, first);
    Qcow2ClusterType type = qcow2_classify(e0);
    uint64_t next_host = (e0 & QCOW2_L2E_OFFSET_MASK) + s->cluster_size;
    uint32_t n = 1;

    if (type == QCOW2_CLUSTER_COMPRESSED && !any_host)
        return 1; /* each is decompressed on its own */
    for (; n < max; n++) {
        uint64_t e = qcow2_table_entry(t, first + n);
        if (qcow2_classify(e) != type || !entry_ok(s, e, type))
            break;
        if (type == QCOW2_CLUSTER_NORMAL && !any_host) {
            if ((e & QCOW2_L2E_OFFSET_MASK) != next_host)
                break;
            next_host += s->cluster_size;
        }
    }
    return n;
}

int qcow2_map(BlockNode *bs, int64_t offset, int64_t bytes, bool any_host,
              Qcow2Mapping *m)
{
    Qcow2State *s = bs->opaque;
    uint64_t cluster = (uint64_t)offset >> s->cluster_bits;
    uint64_t l1_index = cluster >> s->l2_bits;
    uint32_t l2_index = cluster & (s->l2_entries - 1);
    uint32_t in_cluster = offset & (s->cluster_size - 1);
    int64_t table_end = (int64_t)(l1_index + 1)
                        << (s->l2_bits + s->cluster_bits);
    int64_t limit = MIN(offset + bytes, table_end);
    uint32_t max_clusters;
    Qcow2Table *t;
    uint64_t e;
    int ret;

    *m = (Qcow2Mapping){ .type = QCOW2_CLUSTER_UNALLOCATED,
                         .bytes = limit - offset };
    t = get_l2(bs, l1_index, offset, &ret);
    if (!t)
        return ret;
    e = qcow2_table_entry(t, l2_index);
    m->type = qcow2_classify(e);
    if (!entry_ok(s, e, m->type)) {
        qcow2_table_put(t);
        return corrupt(bs, "cluster offset unaligned:",
                       e & QCOW2_L2E_OFFSET_MASK, offset);
    }
    if (m->type == QCOW2_CLUSTER_NORMAL)
        m->host = (e & QCOW2_L2E_OFFSET_MASK) + in_cluster;
    else if (m->type == QCOW2_CLUSTER_COMPRESSED)
        m->host = e;
    max_clusters = ((limit - offset + in_cluster - 1) >> s->cluster_bits) + 1;
    max_clusters = run_length(s, t, l2_index, max_clusters, any_host);
    qcow2_table_put(t);
    m->bytes = MIN(((int64_t)max_clusters << s->cluster_bits) - in_cluster,
                   limit - offset);
    return 0;
}

/* A cluster this image alone owns: written in place. */
/* Written in place: a normal cluster with the COPIED flag, unless it lay
 * past the end of the file at the open (never counted: qcow2-repair.c;
 * another entry may name it too), which is copied like a shared one. */
static bool owned(Qcow2State *s, uint64_t entry)
{
    return (entry & QCOW2_OFLAG_COPIED) &&
           qcow2_classify(entry) == QCOW2_CLUSTER_NORMAL &&
           !(s->reserved &&
             qcow2_cluster_reserved(s, (entry & QCOW2_L2E_OFFSET_MASK) >>
                                           s->cluster_bits));
}

/* Clusters written in place must be this image's alone: refcount 1, as
 * the COPIED flag says.  Another count means the metadata lies, and the
 * write could land on a snapshot's data or on clusters the allocator
 * hands out (refcount 0).  0, or -EIO after marking the image corrupt. */
static int check_owned(BlockNode *bs, uint64_t host, uint64_t n)
{
    Qcow2State *s = bs->opaque;

    for (uint64_t i = 0; i < n; i++) {
        uint64_t rc;
        int ret = qcow2_get_refcount(bs, (host >> s->cluster_bits) + i, &rc);
        if (ret < 0)
            return ret;
        if (rc != 1)
            return qcow2_signal_corruption(
                bs, "cluster %#" PRIx64 " is owned (COPIED flag) but its "
                "refcount is %" PRIu64, host + (i << s->cluster_bits), rc);
    }
    return 0;
}

int qcow2_map_for_write(BlockNode *bs, int64_t offset, int64_t bytes,
                        uint64_t *host, int64_t *pnum)
{
    Qcow2State *s = bs->opaque;
    uint64_t cluster = (uint64_t)offset >> s->cluster_bits;
    uint64_t l1_index = cluster >> s->l2_bits;
    uint32_t first = cluster & (s->l2_entries - 1);
    uint32_t in_cluster = offset & (s->cluster_size - 1);
    uint32_t max, n = 1;
    Qcow2Table *t;
    uint64_t e;
    int ret;

    max = MIN((uint64_t)(in_cluster + bytes - 1) >> s->cluster_bits,
              (uint64_t)(s->l2_entries - 1 - first)) + 1;
    *host = 0;
    *pnum = MIN(bytes, ((int64_t)max << s->cluster_bits) - in_cluster);
    if (!(s->l1_table[l1_index] & QCOW2_OFLAG_COPIED))
        return 0; /* no L2 table of our own: every cluster is new */
    t = get_l2(bs, l1_index, offset, &ret);
    if (!t)
        return ret;
    e = qcow2_table_entry(t, first);
    if (owned(s, e)) {
        uint64_t h = e & QCOW2_L2E_OFFSET_MASK;
        /* Owned means counted: beyond the refcount table's reach, the
         * entry lies (and a write would make a file of petabytes). */
        if ((h & (s->cluster_size - 1)) || h < s->cluster_size ||
            (h >> (s->cluster_bits + s->refblock_bits)) >=
                s->refcount_table_size) {
            qcow2_table_put(t);
            return corrupt(bs, "data cluster offset invalid:", h, offset);
        }
        *host = (e & QCOW2_L2E_OFFSET_MASK) + in_cluster;
        for (; n < max; n++) {
            uint64_t next = qcow2_table_entry(t, first + n);
            if (!owned(s, next) || (next & QCOW2_L2E_OFFSET_MASK) !=
                                    (e & QCOW2_L2E_OFFSET_MASK) +
                                        ((uint64_t)n << s->cluster_bits))
                break;
        }
        ret = check_owned(bs, h, MIN(n, ((uint64_t)in_cluster + bytes +
                                         s->cluster_size - 1) >>
                                            s->cluster_bits));
        if (ret < 0) {
            qcow2_table_put(t);
            return ret;
        }
    } else {
        /* A new refcount block takes the first cluster it describes, so a
         * run of new clusters must fit beside one (see qcow2-refcount.c). */
        max = MIN(max, qcow2_max_alloc_clusters(s));
        while (n < max && !owned(s, qcow2_table_entry(t, first + n)))
            n++;
    }
    qcow2_table_put(t);
    *pnum = MIN(bytes, ((int64_t)n << s->cluster_bits) - in_cluster);
    return 0;
}
