/*
 * qcow2.h - private to the qcow2 driver (block/qcow2*.c).
 *
 * Design notes.
 *
 * The on-disk layout follows QEMU's docs/interop/qcow2.txt; every number on
 * disk is big-endian and is converted where it is read.
 *
 * Locking.  The geometry is written once, by open.  Everything that changes
 * metadata (L1 and L2 entries, refcounts, the refcount table, the caches'
 * dirty tables) does so under the image's metadata lock, s->lock, which is
 * never held across guest data I/O.  Readers do not take it: they look up
 * L2 entries through the cache (its own mutex) and read each 64-bit entry
 * atomically, so they see the old or the new mapping, and a new mapping
 * only appears after its data was written.
 *
 * Writes that touch the same guest clusters are ordered by the in-flight
 * list (qcow2-write.c): an allocating write, a zero or a discard owns its
 * clusters exclusively until its L2 entries are updated; writes in place
 * share them.
 *
 * One concern per file:
 *   qcow2.c           header parsing and validation, backing chain,
 *                     open/close, read, block status, the driver table
 *   qcow2-cluster.c   guest offset -> mapping (L1/L2 lookup)
 *   qcow2-write.c     writes, zeroes, discards: in-flight clusters,
 *                     allocation with copy-on-write, L2 updates
 *   qcow2-refcount.c  refcounts, cluster allocation, metadata flush order
 *   qcow2-create.c    creating images
 *   qcow2-header.c    rewriting the header's extensions and backing name
 *   qcow2-bitmap.c    persistent dirty bitmaps (the bitmaps extension)
 *   qcow2-repair.c    counting references at a writable open; rebuilding
 *                     refcounts that are dirty or miss references
 *   qcow2-snapshot.c  internal snapshots (read-only loading)
 *   qcow2-cache.c     the L2 table and refcount block caches
 *   qcow2-check.c     metadata overlap checks and marking the image corrupt
 *   qcow2-compress.c  reading deflate-compressed clusters
 */
#ifndef SNAPNBD_QCOW2_H
#define SNAPNBD_QCOW2_H

#include "block-int.h"

#include <string.h>

#define QCOW2_MAGIC 0x514649fbU /* "QFI\xfb" */
#define QCOW2_V2_HEADER_LENGTH 72
#define QCOW2_V3_HEADER_LENGTH 104
#define QCOW2_MIN_CLUSTER_BITS 9
#define QCOW2_MAX_CLUSTER_BITS 21
/* QEMU's implementation limit of the active L1 table (qcow2.txt). */
#define QCOW2_MAX_L1_BYTES (32 * 1024 * 1024)
/* QEMU's limit of the refcount table (QCOW_MAX_REFTABLE_SIZE). */
#define QCOW2_MAX_REFTABLE_BYTES (8 * 1024 * 1024)
#define QCOW2_MAX_BACKING_NAME 1023

/* incompatible_features bits */
#define QCOW2_INCOMPAT_DIRTY (1ULL << 0)
#define QCOW2_INCOMPAT_CORRUPT (1ULL << 1)
#define QCOW2_INCOMPAT_DATA_FILE (1ULL << 2)
#define QCOW2_INCOMPAT_COMPRESSION (1ULL << 3)
#define QCOW2_INCOMPAT_EXTL2 (1ULL << 4)

/* Header extension types. */
#define QCOW2_EXT_END 0x00000000U
#define QCOW2_EXT_BACKING_FORMAT 0xe2792acaU
#define QCOW2_EXT_FEATURE_TABLE 0x6803f857U
#define QCOW2_EXT_DATA_FILE 0x44415441U
#define QCOW2_EXT_BITMAPS 0x23852875U
#define QCOW2_EXT_CRYPTO_HEADER 0x0537be77U
#define QCOW2_CRYPT_LUKS 2

/* compatible_features bits */
#define QCOW2_COMPAT_LAZY_REFCOUNTS (1ULL << 0)

/* Header field offsets, for updating one field in place. */
#define QCOW2_HDR_REFCOUNT_TABLE_OFFSET 48 /* + refcount_table_clusters */
#define QCOW2_HDR_INCOMPATIBLE 72
#define QCOW2_HDR_AUTOCLEAR 88

/* autoclear_features bits */
#define QCOW2_AUTOCLEAR_BITMAPS (1ULL << 0)

/* L1 entry: bits 9-55 are the L2 table offset. */
#define QCOW2_L1E_OFFSET_MASK 0x00fffffffffffe00ULL
/* Standard L2 entry: bits 9-55 are the host cluster offset. */
#define QCOW2_L2E_OFFSET_MASK 0x00fffffffffffe00ULL
#define QCOW2_OFLAG_COPIED (1ULL << 63)
#define QCOW2_OFLAG_COMPRESSED (1ULL << 62)
#define QCOW2_OFLAG_ZERO (1ULL << 0)

/* Compressed data is counted in 512-byte sectors. */
#define QCOW2_COMPRESSED_SECTOR 512

/* The header as stored, version 3 fields included (v2 stops at 72). */
typedef struct __attribute__((packed)) Qcow2Header {
    uint32_t magic;
    uint32_t version;
    uint64_t backing_file_offset;
    uint32_t backing_file_size;
    uint32_t cluster_bits;
    uint64_t size;
    uint32_t crypt_method;
    uint32_t l1_size;
    uint64_t l1_table_offset;
    uint64_t refcount_table_offset;
    uint32_t refcount_table_clusters;
    uint32_t nb_snapshots;
    uint64_t snapshots_offset;
    /* version 3 */
    uint64_t incompatible_features;
    uint64_t compatible_features;
    uint64_t autoclear_features;
    uint32_t refcount_order;
    uint32_t header_length;
} Qcow2Header;

typedef struct Qcow2Cache Qcow2Cache;

/* One cached L2 table; entries are kept as stored (big-endian). */
typedef struct Qcow2Table {
    gint refs;          /* atomic: the cache's reference + users' */
    uint64_t offset;    /* host offset of the table, the cache key */
    GList lru_link;     /* position in the cache's LRU queue */
    bool dirty;         /* changed since read or written; cache lock */
    uint64_t *entries;  /* one cluster, as stored, I/O aligned */
    /* L2 tables: the highest host offset an entry named at the last full
     * scan for clusters in use (qcow2-write.c), UINT64_MAX before one;
     * under the image lock. */
    uint64_t scanned_max_host;
} Qcow2Table;

typedef enum Qcow2ClusterType {
    QCOW2_CLUSTER_UNALLOCATED, /* read from the backing (or zeroes) */
    QCOW2_CLUSTER_ZERO,        /* reads as zeroes, never from the backing */
    QCOW2_CLUSTER_NORMAL,      /* data at a host offset */
    QCOW2_CLUSTER_COMPRESSED,  /* deflate-compressed cluster */
} Qcow2ClusterType;

/* What qcow2_map found for a range of guest bytes. */
typedef struct Qcow2Mapping {
    Qcow2ClusterType type;
    /* NORMAL: host offset of the first guest byte; COMPRESSED: the raw L2
     * entry (the compressed cluster descriptor); otherwise 0. */
    uint64_t host;
    int64_t bytes; /* guest bytes from the lookup offset that map alike */
} Qcow2Mapping;

typedef struct Qcow2State {
    BlockNode *file;          /* the image file child ("file") */
    BlockNode *backing;       /* backing child or NULL ("backing") */
    int64_t file_length;      /* bytes of the image file at open */
    int64_t backing_length;   /* bytes of the backing node, 0 without */

    uint32_t version;         /* 2 or 3 */
    int cluster_bits;         /* 9..21 */
    uint32_t cluster_size;    /* 1 << cluster_bits */
    int l2_bits;              /* log2 of entries per L2 table */
    uint32_t l2_entries;      /* entries per L2 table: cluster_size / 8 */
    uint64_t size;            /* virtual disk size in bytes */
    uint64_t incompatible;    /* incompatible_features (dirty, corrupt) */

    uint64_t *l1_table;       /* the active L1 table, host byte order */
    uint32_t l1_size;         /* entries in l1_table */
    uint64_t l1_offset;       /* where it lives in the file, for messages */

    /* Compressed descriptor fields (qcow2.txt: x = 62 - (cluster_bits-8)). */
    int csize_shift;          /* x: first bit of the sector count */
    uint64_t csize_mask;      /* sector count mask after the shift */
    uint64_t coffset_mask;    /* bits 0..x-1: the host offset */

    char *backing_file;       /* name as stored in the header, or NULL */
    char *backing_format;     /* from the backing format extension, or NULL */
    Qcow2Cache *l2_cache;     /* L2 tables, thread safe */
    size_t l2_cache_tables;   /* its size, from the runtime options */
    size_t refcount_cache_tables; /* the refcount cache's; 0: default */

    uint32_t header_length;   /* bytes of the fixed header */
    uint64_t autoclear;       /* autoclear_features at open */
    /* The bitmaps extension as found at open (qcow2-bitmap.c). */
    bool bitmaps_ext;         /* present and consistent (autoclear bit 0) */
    uint32_t nb_bitmaps;
    uint64_t bitmap_dir_offset, bitmap_dir_size;
    bool bitmaps_loaded;      /* a writable open completed: close stores */

    /* encrypt.format=luks: the LUKS header's clusters (extension
     * 0x0537be77) and the unlocked key; data clusters are encrypted with
     * the tweak host_offset / 512, as QEMU does.  Read-only after open. */
    uint64_t crypto_header_offset, crypto_header_length;
    struct LuksKey *crypto;

    /* Write path; all guarded by lock (see the design notes). */
    bool writable;
    GMutex lock;
    GCond inflight_cond;      /* broadcast when an in-flight write ends */
    GList *inflight;          /* of Qcow2InFlight */
    int refcount_order;       /* refcount width is 1 << order bits */
    int refblock_bits;        /* log2 of entries per refcount block */
    uint64_t refcount_max;
    uint64_t *refcount_table; /* host byte order */
    uint64_t refcount_table_size;   /* entries */
    uint64_t refcount_table_offset;
    Qcow2Cache *refcount_cache;
    uint64_t free_cluster_index; /* no free cluster below it */
    uint64_t refcount_table_used; /* entries up to the last block, lock */
    /* One bit per host cluster whose refcount this node raised from 0
     * since the open (grown on demand; lock).  Such a cluster has a user
     * the node made, so an L2 entry without the COPIED flag that names it
     * while its refcount is 1 is a second user, not a leftover flag
     * (qcow2-write.c, check_shared). */
    uint64_t *born;
    uint64_t born_words;
    /* Clusters the metadata referenced past the end of the file at the
     * open (qcow2-repair.c): never allocated (lock).  NULL: none. */
    GHashTable *reserved;
    bool said_uncopied;       /* logged an entry that lacks COPIED (lock) */

    /* Metadata that the overlap checks know of besides the above
     * (qcow2-check.c), found at a writable open. */
    GArray *snapshot_l1s;     /* of Qcow2SnapshotL1, or NULL */
    uint64_t snapshots_offset, snapshots_bytes; /* the snapshot table */
    /* Set once, atomically, when corruption was found: a writable image
     * is then marked corrupt on disk and takes no more writes. */
    gint corrupt;
    /* While a writable open repairs or prepares the image: corruption
     * found then fails the open with this message (one line) instead of
     * being logged and marked in the header. */
    bool opening;
    char *open_corruption;
} Qcow2State;

/* A write in progress on guest clusters [first, last] (qcow2-write.c). */
typedef struct Qcow2InFlight {
    uint64_t first, last;
    bool exclusive;           /* allocating, zeroing or discarding */
    GList link;
} Qcow2InFlight;

/* Big-endian stores into a header buffer (no alignment assumed). */
static inline void qcow2_put_be32(uint8_t *p, uint32_t v)
{
    v = GUINT32_TO_BE(v);
    memcpy(p, &v, 4);
}

static inline void qcow2_put_be64(uint8_t *p, uint64_t v)
{
    v = GUINT64_TO_BE(v);
    memcpy(p, &v, 8);
}

/* qcow2-header.c: the header cluster rebuilt with one extension replaced
 * (@ext_len 0: dropped) and the backing file name and format given; every
 * other extension is kept.  -ENOSPC if it no longer fits the cluster. */
typedef struct Qcow2HeaderEdit {
    uint32_t ext_type;          /* the extension replaced, 0: none */
    const void *ext;
    uint32_t ext_len;
    uint64_t autoclear;         /* autoclear_features to write (v3) */
    const char *backing_file;   /* NULL: none */
    const char *backing_format; /* NULL: no backing format extension */
} Qcow2HeaderEdit;
int qcow2_rewrite_header(BlockNode *bs, const Qcow2HeaderEdit *e);
int qcow2_change_backing_file(BlockNode *bs, const char *name,
                              const char *format);

/* qcow2-cache.c */
/* Called before a table is written (under the metadata lock): 0, or a
 * negative errno that fails the write. */
typedef int (*Qcow2CacheCheck)(void *opaque, uint64_t offset);
Qcow2Cache *qcow2_cache_new(BlockNode *file, uint32_t table_size,
                            size_t max_tables, Qcow2CacheCheck check,
                            void *opaque);
void qcow2_cache_free(Qcow2Cache *c);
/* The table at host @offset, referenced: release it with qcow2_table_put.
 * Returns 0 or a negative errno from reading the file. */
int qcow2_cache_get(Qcow2Cache *c, uint64_t offset, Qcow2Table **out);
/* A zeroed table for a cluster just allocated (nothing is read). */
int qcow2_cache_get_empty(Qcow2Cache *c, uint64_t offset, Qcow2Table **out);
void qcow2_table_put(Qcow2Table *t);
/* The rest run under the image's metadata lock. */
void qcow2_cache_mark_dirty(Qcow2Cache *c, Qcow2Table *t);
/* Writes @t if dirty. */
int qcow2_cache_write_table(Qcow2Cache *c, Qcow2Table *t);
/* Writes every dirty table; *wrote (may be NULL) says whether any was. */
int qcow2_cache_flush(Qcow2Cache *c, bool *wrote);
/* Are so many tables dirty that it is time to write them back? */
bool qcow2_cache_needs_flush(Qcow2Cache *c);
/* Drops the table at @offset (its cluster was freed), dirty or not. */
void qcow2_cache_forget(Qcow2Cache *c, uint64_t offset);
/* A new capacity (at least 1): clean tables nobody uses go at once down
 * to it, dirty ones once written back. */
void qcow2_cache_set_capacity(Qcow2Cache *c, size_t max_tables);

/* Entries change under the metadata lock while lock-free readers scan:
 * each 64-bit entry is read and written whole. */
static inline uint64_t qcow2_table_entry(const Qcow2Table *t, uint32_t i)
{
    return GUINT64_FROM_BE(__atomic_load_n(&t->entries[i], __ATOMIC_RELAXED));
}

static inline void qcow2_table_set(Qcow2Table *t, uint32_t i, uint64_t e)
{
    __atomic_store_n(&t->entries[i], GUINT64_TO_BE(e), __ATOMIC_RELAXED);
}

/* qcow2-cluster.c */
/*
 * Maps guest @offset: fills @m for up to @bytes bytes that map alike (same
 * type; for NORMAL, contiguous in the host file too unless @any_host).  A
 * compressed cluster is reported one at a time unless @any_host.  Never
 * crosses an L2 table.  Returns 0, or -EIO for a corrupt L1/L2 entry.
 */
int qcow2_map(BlockNode *bs, int64_t offset, int64_t bytes, bool any_host,
              Qcow2Mapping *m);

Qcow2ClusterType qcow2_classify(uint64_t entry);

/* Write-path lookup (under the metadata lock): from guest @offset, how many
 * bytes (up to @bytes, within one L2 table) can be written in place
 * (*host set: clusters owned by this image alone, contiguous on the host),
 * or, when the first cluster cannot, how many bytes lie in clusters that
 * all need a new cluster (*host = 0).  0 or -EIO. */
int qcow2_map_for_write(BlockNode *bs, int64_t offset, int64_t bytes,
                        uint64_t *host, int64_t *pnum);

/* qcow2-options.c: takes the runtime options (cache sizes,
 * cache-clean-interval, lazy-refcounts, pass-discard-*) from @options,
 * with QEMU's checks once the header is read (at open and at
 * blockdev-reopen, where a left-out option takes its default): the cache
 * sizes they give. */
typedef struct Qcow2CacheSizes {
    size_t l2_tables;
    size_t refcount_tables;   /* 0: qcow2_refcount_cache_tables' default */
} Qcow2CacheSizes;
bool qcow2_take_runtime_options(BlockNode *bs, GHashTable *options,
                                Qcow2CacheSizes *sizes, GError **errp);

/* qcow2-refcount.c (all under the metadata lock) */
/* Loads the refcount table for writing; one-line errors. */
bool qcow2_refcount_open(BlockNode *bs, uint64_t table_offset,
                         uint32_t table_clusters, int order, GError **errp);
void qcow2_refcount_close(BlockNode *bs);
/* The refcount cache's capacity: the runtime options' or the default. */
size_t qcow2_refcount_cache_tables(Qcow2State *s);
int qcow2_get_refcount(BlockNode *bs, uint64_t cluster, uint64_t *refcount);
/* The refcounts of clusters [first, first + n), all described by one
 * refcount block (0 where it does not exist). */
int qcow2_get_refcounts(BlockNode *bs, uint64_t first, uint64_t n,
                        uint64_t *refcounts);
/* Adds @addend to the refcount of every cluster in [offset, offset+bytes);
 * a cluster that drops to zero is discarded in the file too. */
int qcow2_update_refcount(BlockNode *bs, uint64_t offset, uint64_t bytes,
                          int64_t addend);
/* Did this node raise @cluster's refcount from 0 since the open? */
bool qcow2_cluster_born(Qcow2State *s, uint64_t cluster);
/* Keeps @cluster from the allocator; false if @max are kept already. */
bool qcow2_reserve_cluster(Qcow2State *s, uint64_t cluster, guint max);
bool qcow2_cluster_reserved(Qcow2State *s, uint64_t cluster);
/* Where a new refcount block for refcount table entry @block goes: the
 * first cluster of the range it describes that is not reserved. */
uint64_t qcow2_refblock_place(Qcow2State *s, uint64_t block);
/* Sets a cluster's refcount outright (repair only). */
int qcow2_set_refcount(BlockNode *bs, uint64_t cluster, uint64_t value);
/* Does a refcount block describe @cluster?  (Else its refcount is 0 and
 * setting it needs a new block.) */
bool qcow2_refblock_exists(BlockNode *bs, uint64_t cluster);
/* Allocates @n contiguous clusters (refcount 1); their host offset, or a
 * negative errno.  *fresh says whether they lie past the end of the file
 * (so they read as zeroes without being written). */
int64_t qcow2_alloc_clusters(BlockNode *bs, uint64_t n, bool *fresh);
/* The most clusters one allocation may ask for: one less than a refcount
 * block describes (a run of new clusters beside the new block that
 * describes them; with more, the search could never end). */
static inline uint64_t qcow2_max_alloc_clusters(const Qcow2State *s)
{
    return (1ULL << s->refblock_bits) - 1;
}
/* The host bytes an L2 entry holds, for its refcount; false when none.  A
 * compressed entry's bytes run to the end of its last 512-byte sector
 * (qcow2.txt), and may share clusters with its neighbours. */
static inline bool qcow2_entry_extent(const Qcow2State *s, uint64_t e,
                                      uint64_t *off, uint64_t *bytes)
{
    if (e & QCOW2_OFLAG_COMPRESSED) {
        uint64_t sectors = ((e >> s->csize_shift) & s->csize_mask) + 1;
        *off = e & s->coffset_mask;
        *bytes = (*off & ~(uint64_t)(QCOW2_COMPRESSED_SECTOR - 1)) +
                 sectors * QCOW2_COMPRESSED_SECTOR - *off;
        return true;
    }
    *off = e & QCOW2_L2E_OFFSET_MASK;
    *bytes = s->cluster_size;
    return *off != 0;
}
/* Frees what an L2 entry pointed to (normal or compressed cluster). */
int qcow2_free_entry(BlockNode *bs, uint64_t l2_entry);
/* Writes dirty metadata in crash-safe order: refcounts, barrier, L2. */
int qcow2_flush_metadata(BlockNode *bs);
/* Writes L2 table @t now (refcounts first), so that clusters it no longer
 * points to may be freed. */
int qcow2_write_l2_now(BlockNode *bs, Qcow2Table *t);
/* Flush of the image file, the ordering point between metadata writes. */
int qcow2_barrier(BlockNode *bs);

/* qcow2-write.c */
int qcow2_pwrite(BlockNode *bs, int64_t offset, int64_t bytes,
                 const void *buf, int flags);
int qcow2_pwrite_zeroes(BlockNode *bs, int64_t offset, int64_t bytes,
                        int flags);
int qcow2_pdiscard(BlockNode *bs, int64_t offset, int64_t bytes);
void qcow2_write_init(Qcow2State *s);
/* Maps every guest cluster to a host cluster (preallocation=metadata). */
int qcow2_preallocate_metadata(BlockNode *bs);

/* qcow2.c */
/* Reads guest bytes as the image maps them now (for copy-on-write). */
int qcow2_read_guest(BlockNode *bs, int64_t offset, int64_t bytes,
                     void *buf);

/* A backing file name as QEMU resolves it: relative to the overlay's
 * directory. */
char *qcow2_resolve_backing(const char *overlay, const char *name);

/* qcow2-bitmap.c */
/* Loads the persistent dirty bitmaps (writes nothing). */
bool qcow2_bitmaps_load(BlockNode *bs, GError **errp);
/* A writable open marks them in use in the image, so that a crash leaves
 * them inconsistent; a clean close stores them without the mark. */
int qcow2_bitmaps_mark_in_use(BlockNode *bs);
/* The bitmaps the image stores now (directory entries: names, flags), or
 * NULL when there are none or they cannot be read. */
GArray *qcow2_bitmaps_info(BlockNode *bs);
/* Writes the node's persistent bitmaps and the extension (writable close). */
int qcow2_bitmaps_store(BlockNode *bs);
/* Calls @ref for every cluster range the stored bitmaps use. */
typedef void (*Qcow2RefFunc)(void *opaque, uint64_t offset, uint64_t bytes);
bool qcow2_bitmaps_references(BlockNode *bs, Qcow2RefFunc ref, void *opaque,
                              GError **errp);

/* qcow2-repair.c */
/* Counts every cluster's references (writable opens only).  A @dirty
 * image gets the refcounts that differ rewritten and its dirty bit cleared:
 * what QEMU does when it opens an image left dirty by lazy refcounts.  A
 * clean one is repaired so only when a refcount misses a reference (QEMU
 * trusts it, and may hand the cluster out twice).  Clusters referenced
 * past the end of the file are reserved from allocation. */
bool qcow2_count_references(BlockNode *bs, bool dirty, GError **errp);

/* The one-line error for a bad image: "qcow2 image 'FILE': MESSAGE". */
void qcow2_bad_image(GError **errp, const char *file, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);

/* qcow2-check.c */
/* Kinds of metadata, as QEMU's overlap checks name them. */
enum {
    QCOW2_OL_HEADER = 1 << 0,
    QCOW2_OL_ACTIVE_L1 = 1 << 1,
    QCOW2_OL_ACTIVE_L2 = 1 << 2,
    QCOW2_OL_REFCOUNT_TABLE = 1 << 3,
    QCOW2_OL_REFCOUNT_BLOCK = 1 << 4,
    QCOW2_OL_SNAPSHOT_TABLE = 1 << 5,
    QCOW2_OL_INACTIVE_L1 = 1 << 6,
    QCOW2_OL_BITMAP_DIRECTORY = 1 << 7,
};
/* The first kind of metadata (not in @ignore) that overlaps host bytes
 * [offset, offset + bytes), or 0.  What QEMU's overlap-check=cached
 * looks at: everything whose place is in memory.  Under the metadata
 * lock (or before any write). */
int qcow2_overlaps(BlockNode *bs, int ignore, uint64_t offset,
                   uint64_t bytes);
/* Before writing host bytes [offset, offset + bytes): 0, or -EIO after
 * marking the image corrupt when they overlap metadata (not in @ignore). */
int qcow2_check_write(BlockNode *bs, int ignore, uint64_t offset,
                      uint64_t bytes);
/* Corrupt metadata was found: logs one line (once), and on a writable
 * image sets the corrupt bit in the header (as QEMU does) and refuses
 * every later write.  Returns -EIO for the caller to fail with. */
int qcow2_signal_corruption(BlockNode *bs, const char *fmt, ...)
    G_GNUC_PRINTF(2, 3);
/* What corruption a failing open found (or NULL), for its error. */
const char *qcow2_open_corruption(Qcow2State *s);
/* Has corruption been signalled? (writes are refused then) */
bool qcow2_is_corrupt(Qcow2State *s);
/* The cache hook: an L2 table or refcount block about to be written. */
int qcow2_check_l2_write(void *bs, uint64_t offset);
int qcow2_check_refblock_write(void *bs, uint64_t offset);
/* Is a table of @bytes at host @offset aligned and inside the file? */
bool qcow2_table_in_file(BlockNode *bs, uint64_t offset, uint64_t bytes);

/* qcow2-create.c */
int qcow2_create(const char *filename, uint64_t size, GHashTable *options,
                 GError **errp);
/* Writes a new image over the open file node @file (blockdev-create). */
int qcow2_format(BlockNode *file, uint64_t size, GHashTable *options,
                 GError **errp);

/* qcow2-compress.c */
/* Reads @bytes guest bytes at @offset_in_cluster of the compressed cluster
 * described by L2 entry @l2_entry into @buf.  0 or a negative errno. */
int qcow2_read_compressed(BlockNode *bs, uint64_t l2_entry,
                          uint32_t offset_in_cluster, uint32_t bytes,
                          void *buf);

/* qcow2-info.c: query-named-block-nodes' ImageInfoSpecificQCow2, read
 * from the header as it is now. */
void qcow2_get_image_info(BlockNode *bs, BdrvImageInfo *info);

/* qcow2-amend.c: x-blockdev-amend (version, lazy refcounts); drained. */
int qcow2_amend(BlockNode *bs, const BdrvAmendOptions *opts, GError **errp);

/* qcow2-resize.c */
/* block_resize: grows (the L1 table too) or shrinks the virtual disk.
 * Called drained (resize.c). */
int qcow2_truncate(BlockNode *bs, int64_t size, GError **errp);

/* qcow2-snapshot.c */
/* Checks the internal snapshot table, and with the options "snapshot.id",
 * "snapshot.name" or "snapshot.id-or-name" (taken from @options) puts that
 * snapshot's L1 table in place of the active one (read-only nodes only).
 * false with a one-line error in @errp. */
bool qcow2_snapshot_apply(BlockNode *bs, GHashTable *options, GError **errp);
/* Where each snapshot's L1 table is, and the table's own extent (for
 * rebuilding refcounts); NULL with @errp set when the table is damaged. */
typedef struct Qcow2SnapshotL1 {
    uint64_t offset;
    uint32_t size;
} Qcow2SnapshotL1;
GArray *qcow2_snapshot_l1_tables(BlockNode *bs, uint64_t *table_offset,
                                 uint64_t *table_bytes, GError **errp);
/* COPIED on exactly the active L2 tables and clusters with refcount 1
 * (the repair of a dirty image, under the metadata lock). */
int qcow2_fix_copied_flags(BlockNode *bs);
/* The driver's internal snapshot callbacks (see block-int.h); create and
 * delete run drained, writable images only. */
GArray *qcow2_snapshot_list(BlockNode *bs, GError **errp);
int qcow2_snapshot_create(BlockNode *bs, const char *name,
                          BdrvSnapshotInfo *info, GError **errp);
int qcow2_snapshot_delete(BlockNode *bs, const char *id, const char *name,
                          BdrvSnapshotInfo *info, GError **errp);

#endif
