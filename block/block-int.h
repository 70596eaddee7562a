/*
 * block-int.h - what drivers and the graph core share; nothing above block/
 * includes this file.
 *
 * A driver is a static const BlockDriver table plus a private state type
 * (state_size bytes, reached with bs->opaque).  Drivers never see a request
 * that breaks the node's BlockLimits: io.c aligns, splits, tracks and runs
 * notifiers before calling them.
 */
#ifndef SNAPNBD_BLOCK_INT_H
#define SNAPNBD_BLOCK_INT_H

#include "block.h"

#include <pthread.h>

#define ROUND_UP(n, a) ((((n) + (a) - 1) / (a)) * (a))

/*
 * Points of a request or of a format's metadata update that a driver below
 * may want to know about (QEMU's BlkdebugEvent): a format raises them on
 * its "file" child with bdrv_debug_event, io.c raises the request path's on
 * the node it serves.  Only blkdebug listens; the names are QEMU's.
 */
typedef enum {
    BLKDBG_L1_UPDATE,
    BLKDBG_L1_GROW_ALLOC_TABLE,
    BLKDBG_L1_GROW_WRITE_TABLE,
    BLKDBG_L1_GROW_ACTIVATE_TABLE,
    BLKDBG_L2_LOAD,
    BLKDBG_L2_UPDATE,
    BLKDBG_L2_UPDATE_COMPRESSED,
    BLKDBG_L2_ALLOC_COW_READ,
    BLKDBG_L2_ALLOC_WRITE,
    BLKDBG_READ_AIO,
    BLKDBG_READ_BACKING_AIO,
    BLKDBG_READ_COMPRESSED,
    BLKDBG_WRITE_AIO,
    BLKDBG_WRITE_COMPRESSED,
    BLKDBG_VMSTATE_LOAD,
    BLKDBG_VMSTATE_SAVE,
    BLKDBG_COW_READ,
    BLKDBG_COW_WRITE,
    BLKDBG_REFTABLE_LOAD,
    BLKDBG_REFTABLE_GROW,
    BLKDBG_REFTABLE_UPDATE,
    BLKDBG_REFBLOCK_LOAD,
    BLKDBG_REFBLOCK_UPDATE,
    BLKDBG_REFBLOCK_UPDATE_PART,
    BLKDBG_REFBLOCK_ALLOC,
    BLKDBG_REFBLOCK_ALLOC_HOOKUP,
    BLKDBG_REFBLOCK_ALLOC_WRITE,
    BLKDBG_REFBLOCK_ALLOC_WRITE_BLOCKS,
    BLKDBG_REFBLOCK_ALLOC_WRITE_TABLE,
    BLKDBG_REFBLOCK_ALLOC_SWITCH_TABLE,
    BLKDBG_CLUSTER_ALLOC,
    BLKDBG_CLUSTER_ALLOC_BYTES,
    BLKDBG_CLUSTER_FREE,
    BLKDBG_FLUSH_TO_OS,
    BLKDBG_FLUSH_TO_DISK,
    BLKDBG_PWRITEV_RMW_HEAD,
    BLKDBG_PWRITEV_RMW_AFTER_HEAD,
    BLKDBG_PWRITEV_RMW_TAIL,
    BLKDBG_PWRITEV_RMW_AFTER_TAIL,
    BLKDBG_PWRITEV,
    BLKDBG_PWRITEV_ZERO,
    BLKDBG_PWRITEV_DONE,
    BLKDBG_EMPTY_IMAGE_PREPARE,
    BLKDBG_L1_SHRINK_WRITE_TABLE,
    BLKDBG_L1_SHRINK_FREE_L2_CLUSTERS,
    BLKDBG_COR_WRITE,
    BLKDBG_CLUSTER_ALLOC_SPACE,
    BLKDBG_NONE,
    BLKDBG__MAX,
} BlkdebugEvent;

typedef struct BlockDriver {
    const char *name;
    size_t state_size;
    /* Opens a host file itself ("filename" option) rather than a child. */
    bool is_protocol;
    /* A filter: shows its "file" child's data as it is (copy-before-write,
     * snapshot-access, throttle, blkdebug, copy-on-read).  Block status
     * and allocation depth look through it unless the driver answers
     * block status itself; it is not a layer of a backing chain. */
    bool is_filter;

    int (*open)(BlockNode *bs, GHashTable *options, GError **errp);
    void (*close)(BlockNode *bs);
    int (*create)(const char *filename, uint64_t size, GHashTable *options,
                  GError **errp);
    /* A new image of this format over the open node @file. */
    int (*format)(BlockNode *file, uint64_t size, GHashTable *options,
                  GError **errp);
    int64_t (*get_length)(BlockNode *bs);
    void (*refresh_limits)(BlockNode *bs, BlockLimits *limits);
    char *(*describe)(BlockNode *bs);

    int (*pread)(BlockNode *bs, int64_t offset, int64_t bytes, void *buf);
    /* Optional: an aligned read into a pipe (bdrv_pread_pipe); NULL or
     * -ENOTSUP when the node cannot. */
    int (*pread_pipe)(BlockNode *bs, int64_t offset, int64_t bytes,
                      int pipe_fd);
    int (*pwrite)(BlockNode *bs, int64_t offset, int64_t bytes,
                  const void *buf, int flags);
    /* May return -ENOTSUP: io.c then writes zero buffers (unless
     * BDRV_REQ_NO_FALLBACK). */
    int (*pwrite_zeroes)(BlockNode *bs, int64_t offset, int64_t bytes,
                         int flags);
    int (*pdiscard)(BlockNode *bs, int64_t offset, int64_t bytes);
    int (*flush)(BlockNode *bs);
    int (*prefetch)(BlockNode *bs, int64_t offset, int64_t bytes);
    int (*block_status)(BlockNode *bs, int64_t offset, int64_t bytes,
                        int64_t *pnum);
    /* Do unwritten ranges read as zeroes when the image is opened as its
     * own metadata says?  NULL: a format asks its "file" child, a protocol
     * says yes. */
    bool (*has_zero_init)(BlockNode *bs);
    /* What the node takes and shares on child @name, given what its
     * parents take (@perm) and share (@shared).  NULL: "backing" children
     * get bdrv_child_perm_cow, others bdrv_child_perm_storage. */
    void (*child_perm)(BlockNode *bs, const char *name, uint32_t perm,
                       uint32_t shared, uint32_t *nperm, uint32_t *nshared);
    /* The node's cumulative permissions changed (image locks); false and
     * *errp when they cannot be had.  Called under graph_lock. */
    bool (*set_perm)(BlockNode *bs, uint32_t perm, uint32_t shared,
                     GError **errp);
    /* A backing child was attached to the open node (a live snapshot's
     * overlay), or detached again (@backing NULL); NULL: the driver has no
     * backing files.  Called while the node is drained. */
    void (*set_backing)(BlockNode *bs, BlockNode *backing);
    /* Changes the length to @size (resize.c: drained, resize permission
     * held).  NULL: a filter resizes its "file" child, others refuse. */
    int (*truncate)(BlockNode *bs, int64_t size, GError **errp);
    /* x-blockdev-amend, called drained; NULL: not supported. */
    int (*amend)(BlockNode *bs, const BdrvAmendOptions *opts, GError **errp);
    /* query-named-block-nodes' format details; NULL: none. */
    void (*get_image_info)(BlockNode *bs, BdrvImageInfo *info);
    /* Internal snapshots (snapshot.c says what each does); NULL: none. */
    GArray *(*snapshot_list)(BlockNode *bs, GError **errp);
    int (*snapshot_create)(BlockNode *bs, const char *name,
                           BdrvSnapshotInfo *info, GError **errp);
    int (*snapshot_delete)(BlockNode *bs, const char *id, const char *name,
                           BdrvSnapshotInfo *info, GError **errp);
    /* The node, opened read-only, becomes writable (its non-backing
     * children already are): a commit writes into a backing file.  NULL:
     * nothing to do beyond the children (raw, filters). */
    int (*reopen_writable)(BlockNode *bs, GError **errp);
    /* blockdev-reopen: takes the driver's own options from @opts and
     * checks them (one left out means its default); a g_malloc'd plan
     * for reopen_commit, freed by the caller, or NULL + errp.  Without
     * it, no driver option can change. */
    void *(*reopen_prepare)(BlockNode *bs, GHashTable *opts, GError **errp);
    void (*reopen_commit)(BlockNode *bs, void *plan);
    /* Writes @name (NULL: none) and @format (NULL: none) as the backing
     * file of the image's metadata; the attached child is not changed.
     * NULL: the format has no backing files. */
    int (*change_backing_file)(BlockNode *bs, const char *name,
                               const char *format);
    /* Can the node store a new persistent dirty bitmap?  Says why not. */
    bool (*can_store_dirty_bitmap)(BlockNode *bs, GError **errp);

    /* @event happened on this node (blkdebug: fire its rules).  May block
     * (a breakpoint) and is called with no block-layer lock held. */
    void (*debug_event)(BlockNode *bs, BlkdebugEvent event);

    /* Write flags the driver honours itself; io.c emulates the rest. */
    int supported_write_flags;
    int supported_zero_flags;
    bool can_fast_zero;
} BlockDriver;

/* An edge into a node: a child link of a parent node, or a user outside
 * the graph (perm.c). */
struct BlockChild {
    char *name;          /* "file", "backing"; a user's role: "root", ... */
    BlockNode *node;     /* holds a reference */
    BlockNode *parent;   /* the node above, or NULL for a user */
    char *holder;        /* a user: "NBD export 'e0'", "backup job 'j0'" */
    uint32_t perm;       /* BDRV_PERM_* taken; guarded by graph_lock */
    uint32_t shared;     /* BDRV_PERM_* others may take */
    uint64_t id;         /* unique, for drained sections */
    const BdrvUserOps *ops; /* a user that drains itself, or NULL */
    void *opaque;
    int drained;         /* drained_begin calls not yet ended; graph_lock */
    /* a job's edge on a layer of a chain it rewrites: the "backing" links
     * of these nodes are not held to its shared (bdrv_user_attach_layer) */
    GPtrArray *chain;
};

typedef struct TrackedRequest TrackedRequest;

struct BlockNode {
    const BlockDriver *drv;
    void *opaque;           /* driver state, drv->state_size bytes */
    char *node_name;
    uint64_t opened_seq;    /* order of opens completed (query order) */
    gint refcnt;            /* atomic */
    GPtrArray *children;    /* of BlockChild *; fixed after open */
    GPtrArray *parents;     /* of BlockChild * into this node; graph_lock */
    uint32_t cumulative_perm;   /* what the parents take; graph_lock */
    uint32_t cumulative_shared; /* what they all share; graph_lock */
    gint quiesce_counter;   /* drained sections holding it; atomic */
    gint in_flight;         /* requests of users, counted; atomic */
    BlockNode *replaced_by; /* where bdrv_replace_node moved its users */
    unsigned replace_gen;   /* bumped by each such move; atomic */
    bool read_only;
    bool unmap;             /* discard=unmap: honour discards */
    bool no_flush;          /* cache.no-flush */
    bool cache_direct;      /* cache.direct */
    /* force-share=on (read-only nodes): edges into it share everything,
     * so other processes may write the file (QEMU's bdrv_child_perm). */
    bool force_share;
    /* auto-read-only=on: a file that cannot be opened for writing is
     * opened read-only, and the node becomes read-only (file.c). */
    bool auto_read_only;
    BdrvDetectZeroes detect_zeroes;
    BlockLimits limits;
    int64_t total_bytes;    /* length; only a growable node changes it,
                             * atomically, after a write past the end */
    bool growable;          /* writes may extend it (a format's file) */
    char *filename;         /* of the bottom file, for messages */

    /* Tracked requests, for serialising overlapping ones. */
    GMutex reqs_lock;
    GCond reqs_cond;        /* broadcast when a request ends */
    TrackedRequest *reqs;   /* list, guarded by reqs_lock */
    uint64_t reqs_seq;      /* last sequence number, guarded by reqs_lock */

    /* The last data extent the (protocol) driver reported, so that block
     * status of data costs no syscall: SEEK_HOLE is linear in the file size
     * on tmpfs.  Writes keep data data; write-zeroes and discard drop it.
     * Guarded by status_cache_lock. */
    GMutex status_cache_lock;
    int64_t status_cache_start;
    int64_t status_cache_end;   /* empty when end <= start */
    uint64_t status_cache_gen;  /* bumped by every drop */

    /* Dirty bitmaps and all their bits (dirty-bitmap.c). */
    GMutex dirty_lock;
    GList *dirty_bitmaps;   /* of BdrvDirtyBitmap *, read atomically */

    /* query-blockstats counters, changed atomically by io.c. */
    BdrvStats stats;

    /* QEMU's write threshold (io.c): 0, or the offset whose crossing by
     * a write is reported once; atomic. */
    uint64_t write_threshold;

    /* Before-write notifiers: read-locked by every write, write-locked to
     * change the list. */
    GRWLock notifiers_lock;
    GList *notifiers;       /* of BlockNotifier *, guarded by notifiers_lock */
};

/* Option helpers: each takes (removes) the key from the table, so that what
 * is left after open is an unknown option. */
char *opt_take(GHashTable *opts, const char *key);
bool opt_take_bool(GHashTable *opts, const char *key, bool def,
                   GError **errp);
bool opt_take_size(GHashTable *opts, const char *key, uint64_t *out,
                   GError **errp);
/* The same without the limit of a node's length (cache sizes). */
bool opt_take_size_u64(GHashTable *opts, const char *key, uint64_t *out,
                       GError **errp);
/* Takes all "prefix.*" keys into a new table without the prefix. */
GHashTable *opt_take_prefix(GHashTable *opts, const char *prefix);
GHashTable *opt_new(void);
/* Is there a key @name or @name.something? */
bool opt_has_prefix(GHashTable *opts, const char *name);
/* "discard" and "detect-zeroes", taken from @opts (absent: the defaults,
 * ignore and off), with QEMU's rule that unmap needs discard=unmap. */
bool bdrv_parse_discard_options(GHashTable *opts, bool *unmap,
                                BdrvDetectZeroes *dz, GError **errp);

/* Tells @bs (NULL is fine) that @event happened: a no-op unless its driver
 * listens (blkdebug).  Formats call it on their "file" child at each
 * metadata update, as QEMU's BLKDBG_EVENT. */
void bdrv_debug_event(BlockNode *bs, BlkdebugEvent event);

/* Open (or look up by node-name) the child given by @name in @options and
 * attach it to @parent.  NULL with @errp set on failure. */
BlockNode *bdrv_open_child(BlockNode *parent, GHashTable *options,
                           const char *name, GError **errp);

const BlockDriver *bdrv_find_driver(const char *name);

/* perm.c: child links take permissions by the driver's child_perm. */
bool bdrv_child_attach(BlockNode *parent, BlockNode *child, const char *name,
                       GError **errp);
void bdrv_children_detach_all(BlockNode *bs);
void bdrv_child_perm_filtered(BlockNode *bs, const char *name, uint32_t perm,
                              uint32_t shared, uint32_t *nperm,
                              uint32_t *nshared);
void bdrv_child_perm_storage(BlockNode *bs, const char *name, uint32_t perm,
                             uint32_t shared, uint32_t *nperm,
                             uint32_t *nshared);
void bdrv_child_perm_cow(BlockNode *bs, const char *name, uint32_t perm,
                         uint32_t shared, uint32_t *nperm, uint32_t *nshared);
void bdrv_graph_lock(void);
/* A reference, unless the last one is already gone (0: no longer alive). */
bool bdrv_ref_if_alive(BlockNode *bs);
/* Waits until no thread is taking a reference through an edge (perm.c):
 * before a node's memory is freed. */
void bdrv_wait_node_readers(void);
/* Where @bs's users went (bdrv_replace_node), referenced, or NULL. */
BlockNode *bdrv_ref_replacement(BlockNode *bs);
/* @dying is being freed: no node's replaced_by may name it any more. */
void bdrv_forget_replacement(BlockNode *dying);
void bdrv_graph_unlock(void);

/* drain.c: every outermost request is counted (see the design notes). */
/* May move *@bs to where a graph change moved the node's users while the
 * request waited for a drained section. */
bool bdrv_io_enter(BlockNode **bs);
void bdrv_io_leave(BlockNode *bs, bool counted);
/* Is this thread outside any request (the next one is a user's or a
 * job's own, not one nested in another node's)? */
bool bdrv_io_outermost(void);
void bdrv_drain_user_linked_locked(BlockChild *c);
void bdrv_drain_user_unlinked_locked(BlockChild *c);

/* dirty-bitmap.c: a bitmap for a node of @length bytes (a driver loading
 * its stored bitmaps at open, before the node's length is set). */
BdrvDirtyBitmap *bdrv_dirty_bitmap_new(BlockNode *bs, const char *name,
                                       uint32_t granularity, int64_t length,
                                       GError **errp);
/* Marks [offset, offset + bytes) in every enabled bitmap of @bs. */
void bdrv_set_dirty(BlockNode *bs, int64_t offset, int64_t bytes);
/* At node free. */
void bdrv_release_all_dirty_bitmaps(BlockNode *bs);
/* The node's length changed: its bitmaps (and their successors) describe
 * @length bytes from now on; bits past a shrunk end are dropped. */
void bdrv_dirty_bitmap_truncate(BlockNode *bs, int64_t length);

/* Let writes past the end of @bs extend it (a format driver's image file,
 * as QEMU's protocol nodes grow under qcow2). */
void bdrv_set_growable(BlockNode *bs);

extern const BlockDriver bdrv_file;
extern const BlockDriver bdrv_raw;
extern const BlockDriver bdrv_null;
extern const BlockDriver bdrv_null_aio;
extern const BlockDriver bdrv_qcow2;
extern const BlockDriver bdrv_blkdebug;
extern const BlockDriver bdrv_throttle;
extern const BlockDriver bdrv_copy_on_read;
extern const BlockDriver bdrv_copy_before_write;
extern const BlockDriver bdrv_snapshot_access;
extern const BlockDriver bdrv_luks;
extern const BlockDriver bdrv_nbd;
extern const BlockDriver bdrv_rbd;
extern const BlockDriver bdrv_mirror_top;

/* The bytes of the "secret" object @id (borrowed), or NULL and *errp. */
GBytes *bdrv_lookup_secret(const char *id, GError **errp);

#endif
