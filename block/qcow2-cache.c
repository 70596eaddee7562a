/*
 * qcow2-cache.c - a small LRU cache of L2 tables, shared by all threads.
 *
 * Design notes.
 *
 * Lookups are a hash table (host offset -> table) and the LRU order a
 * queue, both O(1), so a cache of thousands of tiny (512-byte) tables stays
 * cheap.  One mutex guards both; it is never held across I/O: on a miss the
 * table is read unlocked, then inserted unless another thread won the race
 * (its copy is used, ours dropped).
 *
 * Tables are reference counted.  The cache holds one reference, every user
 * one more.  Eviction takes only tables nobody else holds and that are
 * clean, so it never frees a table another thread scans, never loses an
 * update a writer is making, and never has to write: any thread may evict.
 * When every table is dirty or in use the cache grows past its size for a
 * while; the qcow2 write path flushes when too many tables are dirty.
 *
 * A miss reads its table without the lock, so a writer may meanwhile
 * change that table, write it back and see it evicted; the copy the miss
 * read would then be stale.  A generation count, bumped whenever a table
 * becomes evictable by write-back or is forgotten, tells the miss to read
 * again instead of inserting it.
 *
 * Dirty tables are written only by qcow2_cache_flush and
 * qcow2_cache_write_table, which run under the image's metadata lock (as
 * do all changes to table contents), so a table never changes while it is
 * written.  Which cache is written first is the caller's business: that
 * order is what makes the image crash safe (qcow2-refcount.c).
 */
#include "qcow2.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct Qcow2Cache {
    BlockNode *file;      /* where tables are read from */
    uint32_t table_size;  /* bytes per table (the cluster size) */
    size_t max_tables;    /* capacity, at least 1 */
    GMutex lock;          /* guards map and lru */
    GHashTable *map;      /* uint64_t * offset -> Qcow2Table *, owns ref */
    GQueue lru;           /* of Qcow2Table, most recent at the head */
    size_t dirty;         /* tables with dirty set */
    /* Bumped when a table is written back or forgotten: a table read
     * from the file before that may be older than what the cache held,
     * so a miss that read it must not insert it (see qcow2_cache_get). */
    uint64_t gen;
    /* Asked before each table is written: the image's overlap check, so
     * that a table misplaced on metadata is never written there. */
    Qcow2CacheCheck check;
    void *check_opaque;
};

Qcow2Cache *qcow2_cache_new(BlockNode *file, uint32_t table_size,
                            size_t max_tables, Qcow2CacheCheck check,
                            void *opaque)
{
    Qcow2Cache *c = g_new0(Qcow2Cache, 1);

    c->file = file;
    c->check = check;
    c->check_opaque = opaque;
    c->table_size = table_size;
    c->max_tables = MAX(max_tables, 1);
    g_mutex_init(&c->lock);
    c->map = g_hash_table_new(g_int64_hash, g_int64_equal);
    g_queue_init(&c->lru);
    return c;
}

void qcow2_table_put(Qcow2Table *t)
{
    if (t && g_atomic_int_dec_and_test(&t->refs)) {
        free(t->entries);
        g_free(t);
    }
}

void qcow2_cache_free(Qcow2Cache *c)
{
    GList *l;

    if (!c)
        return;
    while ((l = g_queue_pop_head_link(&c->lru)))
        qcow2_table_put(l->data);
    g_hash_table_destroy(c->map);
    g_mutex_clear(&c->lock);
    g_free(c);
}

/* Called locked: the table, referenced and moved to the LRU head. */
static Qcow2Table *lookup_locked(Qcow2Cache *c, uint64_t offset)
{
    Qcow2Table *t = g_hash_table_lookup(c->map, &offset);

    if (t) {
        g_atomic_int_inc(&t->refs);
        g_queue_unlink(&c->lru, &t->lru_link);
        g_queue_push_head_link(&c->lru, &t->lru_link);
    }
    return t;
}

static void remove_locked(Qcow2Cache *c, Qcow2Table *t)
{
    g_queue_unlink(&c->lru, &t->lru_link);
    g_hash_table_remove(c->map, &t->offset);
    if (t->dirty)
        c->dirty--;
    qcow2_table_put(t);
}

/* Called locked: drops least recently used idle clean tables to make room
 * for one. */
static void evict_locked(Qcow2Cache *c)
{
    GList *l = c->lru.tail;

    while (l && c->lru.length >= c->max_tables) {
        Qcow2Table *t = l->data;
        l = l->prev;
        if (!t->dirty && g_atomic_int_get(&t->refs) == 1)
            remove_locked(c, t);
    }
}

void qcow2_cache_set_capacity(Qcow2Cache *c, size_t max_tables)
{
    g_mutex_lock(&c->lock);
    c->max_tables = MAX(max_tables, 1);
    evict_locked(c);
    g_mutex_unlock(&c->lock);
}

static Qcow2Table *new_table(Qcow2Cache *c, uint64_t offset)
{
    Qcow2Table *t = g_new0(Qcow2Table, 1);

    /* Aligned for the file node, so O_DIRECT I/O needs no bounce. */
    t->entries = bdrv_blockalign(c->file, c->table_size);
    if (!t->entries) {
        g_free(t);
        return NULL;
    }
    t->refs = 1;
    t->offset = offset;
    t->scanned_max_host = UINT64_MAX;
    t->lru_link = (GList){ .data = t };
    return t;
}

/* Inserts @t unless a table of its offset is there already; returns the
 * one in the cache, referenced, and drops @t if it lost.  With @gen, @t
 * was read from the file when the cache was at that generation: if it
 * moved on, @t may be stale, and NULL says to read it again. */
static Qcow2Table *insert(Qcow2Cache *c, Qcow2Table *t, const uint64_t *gen)
{
    Qcow2Table *raced;

    g_mutex_lock(&c->lock);
    raced = lookup_locked(c, t->offset);
    if (!raced && gen && *gen != c->gen) {
        g_mutex_unlock(&c->lock);
        qcow2_table_put(t);
        return NULL;
    }
    if (!raced) {
        evict_locked(c);
        g_atomic_int_inc(&t->refs); /* the cache's reference */
        g_hash_table_insert(c->map, &t->offset, t);
        g_queue_push_head_link(&c->lru, &t->lru_link);
    }
    g_mutex_unlock(&c->lock);
    if (!raced)
        return t;
    qcow2_table_put(t);
    return raced;
}

static int read_table(Qcow2Cache *c, uint64_t offset, Qcow2Table **out)
{
    Qcow2Table *t = new_table(c, offset);
    int ret;

    if (!t)
        return -ENOMEM;
    ret = bdrv_pread(c->file, offset, c->table_size, t->entries);
    if (ret < 0) {
        qcow2_table_put(t);
        return ret;
    }
    *out = t;
    return 0;
}

int qcow2_cache_get(Qcow2Cache *c, uint64_t offset, Qcow2Table **out)
{
    Qcow2Table *t = NULL;
    uint64_t gen;
    int ret;

    /* A writer may update, write back and lose this table while the miss
     * reads it unlocked: then the copy read is not inserted, but read
     * again. */
    while (!t) {
        g_mutex_lock(&c->lock);
        t = lookup_locked(c, offset);
        gen = c->gen;
        g_mutex_unlock(&c->lock);
        if (t)
            break;
        ret = read_table(c, offset, &t);
        if (ret < 0)
            return ret;
        t = insert(c, t, &gen);
    }
    *out = t;
    return 0;
}

int qcow2_cache_get_empty(Qcow2Cache *c, uint64_t offset, Qcow2Table **out)
{
    Qcow2Table *t;

    qcow2_cache_forget(c, offset);
    t = new_table(c, offset);
    if (!t)
        return -ENOMEM;
    memset(t->entries, 0, c->table_size);
    *out = insert(c, t, NULL);
    return 0;
}

void qcow2_cache_mark_dirty(Qcow2Cache *c, Qcow2Table *t)
{
    g_mutex_lock(&c->lock);
    if (!t->dirty) {
        t->dirty = true;
        c->dirty++;
    }
    g_mutex_unlock(&c->lock);
}

bool qcow2_cache_needs_flush(Qcow2Cache *c)
{
    bool full;

    g_mutex_lock(&c->lock);
    /* Half the cache, but never so few that flushes (each a barrier)
     * come every few writes: dirty tables cannot be evicted anyway. */
    full = c->dirty > MAX(c->max_tables / 2,
                          (8u << 20) / c->table_size);
    g_mutex_unlock(&c->lock);
    return full;
}

void qcow2_cache_forget(Qcow2Cache *c, uint64_t offset)
{
    Qcow2Table *t;

    g_mutex_lock(&c->lock);
    t = g_hash_table_lookup(c->map, &offset);
    if (t)
        remove_locked(c, t);
    c->gen++;
    g_mutex_unlock(&c->lock);
}

int qcow2_cache_write_table(Qcow2Cache *c, Qcow2Table *t)
{
    int ret;

    if (!t->dirty)
        return 0;
    ret = c->check ? c->check(c->check_opaque, t->offset) : 0;
    if (ret < 0)
        return ret;
    ret = bdrv_pwrite(c->file, t->offset, c->table_size, t->entries, 0);
    if (ret < 0)
        return ret;
    g_mutex_lock(&c->lock);
    if (t->dirty) {
        t->dirty = false;
        c->dirty--;
    }
    c->gen++; /* now evictable: a stale read of it must not come back */
    g_mutex_unlock(&c->lock);
    return 0;
}

int qcow2_cache_flush(Qcow2Cache *c, bool *wrote)
{
    g_autoptr(GPtrArray) dirty = g_ptr_array_new_with_free_func(
        (GDestroyNotify)qcow2_table_put);
    int ret = 0;

    g_mutex_lock(&c->lock);
    for (GList *l = c->lru.head; l && c->dirty; l = l->next) {
        Qcow2Table *t = l->data;
        if (t->dirty) {
            g_atomic_int_inc(&t->refs);
            g_ptr_array_add(dirty, t);
        }
    }
    g_mutex_unlock(&c->lock);
    for (guint i = 0; i < dirty->len && ret == 0; i++)
        ret = qcow2_cache_write_table(c, g_ptr_array_index(dirty, i));
    if (wrote)
        *wrote = dirty->len > 0;
    return ret;
}
