/*
 * block.h - the block graph as the layers above it see it.
 *
 * Promises:
 *  - A graph is made of nodes; each node is one driver instance with named
 *    children ("file", "backing").  Nodes are reference counted and may have a
 *    unique node-name.
 *  - Every read, write, write-zeroes, discard, flush and block-status of every
 *    node goes through the bdrv_* I/O functions below (block/io.c).  They are
 *    blocking and thread safe: callers run them from any number of worker
 *    threads at once.
 *  - Open and create report failures through GError with a sentence that names
 *    the file or node; the I/O functions return 0 or a negative errno.
 */
#ifndef SNAPNBD_BLOCK_H
#define SNAPNBD_BLOCK_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

/* GError domain of the block layer and the layers above it. */
#define BDRV_ERROR bdrv_error_quark()
GQuark bdrv_error_quark(void);
typedef enum {
    BDRV_ERROR_FAILED,
    BDRV_ERROR_INVALID_ARGUMENT,
    BDRV_ERROR_NOT_SUPPORTED,
    BDRV_ERROR_NOT_FOUND,
    BDRV_ERROR_EXISTS,
    BDRV_ERROR_BUSY,
    BDRV_ERROR_READ_ONLY,
} BdrvErrorCode;

typedef struct BlockNode BlockNode;
typedef struct BlockNotifier BlockNotifier;
typedef struct BlockChild BlockChild;
typedef struct BdrvDrain BdrvDrain;

#define BDRV_MAX_LENGTH (INT64_MAX / 2)

/* Flags of a write-like request. */
enum {
    BDRV_REQ_FUA = 1 << 0,         /* stable on return */
    BDRV_REQ_MAY_UNMAP = 1 << 1,   /* write-zeroes may deallocate */
    BDRV_REQ_NO_FALLBACK = 1 << 2, /* write-zeroes: -ENOTSUP unless fast */
    /* Waits for every earlier overlapping request of the node, reads too
     * (a fleecing target's writes: see jobs/block-copy.c). */
    BDRV_REQ_SERIALISING = 1 << 3,
};

/* Block status flags (bdrv_block_status). */
enum {
    BDRV_BLOCK_DATA = 1 << 0,      /* the range holds data */
    BDRV_BLOCK_ZERO = 1 << 1,      /* the range reads as zeroes */
    BDRV_BLOCK_ALLOCATED = 1 << 2, /* allocated in this node (not a hole) */
};

typedef enum {
    BDRV_DETECT_ZEROES_OFF,
    BDRV_DETECT_ZEROES_ON,
    BDRV_DETECT_ZEROES_UNMAP,
} BdrvDetectZeroes;

/* What a write-like request does; tells notifiers why they run. */
typedef enum {
    BDRV_WRITE,
    BDRV_WRITE_ZEROES,
    BDRV_DISCARD,
} BdrvWriteKind;

/* Limits of a node, in bytes; 0 means no limit.  Every request the driver
 * receives honours them: io.c aligns and splits on the driver's behalf. */
typedef struct BlockLimits {
    uint32_t request_alignment;  /* offsets/lengths reaching the driver */
    uint32_t buffer_alignment;   /* memory alignment (O_DIRECT) */
    uint64_t max_transfer;       /* largest read or write */
    uint64_t max_pwrite_zeroes;  /* largest write-zeroes */
    uint64_t max_pdiscard;       /* largest discard */
    uint32_t pdiscard_alignment; /* discard granularity */
    uint32_t pwrite_zeroes_alignment;
    /* What the node's users are asked to align to (the NBD minimum block
     * size): 0 (any) but where a driver must see whole blocks, as QEMU's
     * probed raw images (512).  io.c realigns whatever comes anyway. */
    uint32_t min_request;
} BlockLimits;

/*
 * A before-write notifier runs for every write-like request on its node,
 * before the request is tracked (so that it may read the very range being
 * written without waiting behind the write) and before it reaches the
 * driver.  It may
 * block (delaying the write) and may return a negative errno, which fails the
 * write without touching the node.  A backup job's copy-before-write hooks
 * here.
 */
typedef int (*BlockBeforeWriteFunc)(BlockNode *bs, BdrvWriteKind kind,
                                    int64_t offset, int64_t bytes,
                                    void *opaque);

/*
 * An after-write notifier runs once a write-like request is done on the
 * node and no longer tracked, whatever its result (@ret; also when it
 * failed before the driver, e.g. in a before-write notifier: one that
 * took something for the request gives it back here), before the caller
 * sees it.  An error it returns fails a write that had succeeded.  An
 * active mirror (copy-mode=write-blocking) copies the range to its target
 * here.
 */
typedef int (*BlockAfterWriteFunc)(BlockNode *bs, BdrvWriteKind kind,
                                   int64_t offset, int64_t bytes, int ret,
                                   void *opaque);

/* --- graph ------------------------------------------------------------ */

/*
 * Open a node from flat options (QEMU -blockdev style keys: "driver",
 * "node-name", "read-only", "discard", "detect-zeroes", "cache.direct",
 * "file" (a node-name) or "file.driver"/"file.filename"/..., plus the
 * driver's own).  Takes ownership of nothing; unknown keys are an error.
 */
BlockNode *bdrv_open(GHashTable *options, GError **errp);
/* Are a node's "discard" and "detect-zeroes" values (NULL: not given)
 * ones bdrv_open accepts?  Else its error. */
bool bdrv_check_discard_options(const char *discard,
                                const char *detect_zeroes, GError **errp);

/* Create an image of @size bytes with the named driver ("file" or a format
 * over a protocol).  Options are driver specific (e.g. "nocow"). */
int bdrv_create(const char *driver, const char *filename, uint64_t size,
                GHashTable *options, GError **errp);

/* Where encrypted images' drivers get the bytes of a secret object
 * ("key-secret=ID"): the server sets it (its --object secret table); the
 * bytes stay owned by the table.  NULL with @errp set if there is none. */
typedef GBytes *(*BdrvSecretLookup)(const char *id, GError **errp);
void bdrv_set_secret_lookup(BdrvSecretLookup fn);

/* What an NBD client node ("nbd" driver, tls-creds=ID) needs of a
 * tls-creds-x509 or tls-creds-psk object with endpoint=client.  The
 * server sets the lookup (its --object table); the strings the lookup
 * fills in belong to the caller. */
typedef struct BdrvTlsCreds {
    bool psk;           /* tls-creds-psk: DIR/keys.psk; else x509 in DIR */
    char *dir;
    char *username;     /* psk: the name to present, or NULL */
    bool verify_peer;
} BdrvTlsCreds;
typedef bool (*BdrvTlsCredsLookup)(const char *id, BdrvTlsCreds *out,
                                   GError **errp);
void bdrv_set_tls_creds_lookup(BdrvTlsCredsLookup fn);

/* QEMU's rule for node names, export, job and object ids: a letter, then
 * letters, digits, '-', '.' and '_'. */
bool bdrv_id_wellformed(const char *id);

/* Write a new, empty image of the named format ("qcow2") over the open
 * node @file, as QMP's blockdev-create does with a format. */
int bdrv_format(const char *driver, BlockNode *file, uint64_t size,
                GHashTable *options, GError **errp);

/* Is there a driver of this name ("raw", "qcow2", "file", ...)? */
bool bdrv_has_driver(const char *name);

/* The format of an image file as QEMU probes it among the formats snapnbd
 * knows: "qcow2" for the qcow2 magic, else "raw" (also when unreadable:
 * opening it then reports the error). */
const char *bdrv_probe_format(const char *filename);

void bdrv_ref(BlockNode *bs);
void bdrv_unref(BlockNode *bs);

/* The node of that name, or NULL.  A job's thread may drop a node's last
 * reference at any time (its filter, or a node deleted meanwhile, at the
 * job's end): a pointer found so is only safe to use while something else
 * holds the node; bdrv_find_node_ref also takes a reference for the caller
 * to drop. */
BlockNode *bdrv_find_node(const char *node_name);
/* Orders nodes as QEMU 7.2 lists them (query-named-block-nodes): the one
 * whose open completed last first (children before their parent). */
gint bdrv_newest_first(BlockNode *a, BlockNode *b);
BlockNode *bdrv_find_node_ref(const char *node_name);
const char *bdrv_node_name(BlockNode *bs);
const char *bdrv_driver_name(BlockNode *bs);
const char *bdrv_filename(BlockNode *bs); /* the file at the bottom, or "" */
/* A one-line description for -v output (e.g. "file (aio=io_uring)"). */
char *bdrv_describe(BlockNode *bs);
BlockNode *bdrv_child(BlockNode *bs, const char *name);
/* Is @bs a filter node (its "file" child's data as it is)? */
bool bdrv_is_filter(BlockNode *bs);
/* Does the driver open a host resource itself (file, rbd, nbd)? */
bool bdrv_is_protocol(BlockNode *bs);
/* @bs itself, or the first node below its filters that is none. */
BlockNode *bdrv_skip_filters(BlockNode *bs);
bool bdrv_is_read_only(BlockNode *bs);
const BlockLimits *bdrv_limits(BlockNode *bs);
/* May the node be written by several clients with consistent flushes? */
bool bdrv_can_multi_conn(BlockNode *bs);
bool bdrv_can_fast_zero(BlockNode *bs);
/* Does every range not yet written read as zeroes, wherever the image is
 * opened?  Not when a backing file is attached or named in the image's
 * metadata (even if it was opened with "backing": null): a job that skips
 * zeroes of a target it thinks fresh would then show the backing's data
 * (QEMU's bdrv_has_zero_init). */
bool bdrv_has_zero_init(BlockNode *bs);
bool bdrv_discard_unmaps(BlockNode *bs);
/* Options as query-named-block-nodes reports them. */
bool bdrv_cache_direct(BlockNode *bs);
bool bdrv_cache_no_flush(BlockNode *bs);
BdrvDetectZeroes bdrv_detect_zeroes(BlockNode *bs);
/* QEMU's write threshold (block-set-write-threshold): the first write,
 * write-zeroes or discard passed down that reaches past @offset bytes of
 * @bs calls the handler, once: the threshold is then 0, which disarms it.
 * The handler runs on the writing thread, before the write. */
typedef void (*BdrvWriteThresholdFunc)(BlockNode *bs, uint64_t exceeded,
                                       uint64_t threshold);
void bdrv_set_write_threshold_handler(BdrvWriteThresholdFunc fn);
void bdrv_set_write_threshold(BlockNode *bs, uint64_t offset);
uint64_t bdrv_write_threshold(BlockNode *bs);
/* References held on @bs: its parents, exports, jobs, the monitor... */
int bdrv_refcnt(BlockNode *bs);
/* Calls @fn for every node, in no particular order, under the node-name
 * table's lock: @fn may read nodes but not open, look up or release any. */
void bdrv_foreach_node(void (*fn)(BlockNode *bs, void *opaque),
                       void *opaque);
/* Every node still alive, each referenced (a node whose last reference is
 * gone stays in the name table until its free removes it: it is left
 * out); the array drops the references when freed. */
GPtrArray *bdrv_ref_all_nodes(void);

/* Length in bytes: never negative (open fails when the driver cannot
 * tell it). */
int64_t bdrv_getlength(BlockNode *bs);

/* Changes the length of @bs to @size bytes (block_resize), as QEMU's
 * bdrv_co_truncate: the caller holds an edge that takes BDRV_PERM_RESIZE
 * and a drained section on @bs.  0, or a negative errno and @errp. */
int bdrv_truncate(BlockNode *bs, int64_t size, GError **errp);

/* --- image information (block/snapshot.c) -------------------------------- */

/* A bitmap as the image stores it (QEMU's Qcow2BitmapInfo). */
typedef struct BdrvBitmapInfo {
    char *name;
    uint32_t granularity;
    bool in_use, autom;       /* the "in-use" and "auto" flags */
} BdrvBitmapInfo;

/* What query-named-block-nodes says of a format beyond its size (QEMU's
 * ImageInfo cluster-size, encrypted and ImageInfoSpecific). */
typedef struct BdrvImageInfo {
    uint32_t cluster_size;    /* 0: the format has none */
    bool encrypted;
    bool qcow2;               /* the rest describes a qcow2 image */
    uint32_t version;         /* 2 (compat 0.10) or 3 (compat 1.1) */
    bool lazy_refcounts, corrupt, extended_l2;
    uint32_t refcount_bits;
    const char *compression_type; /* "zlib" or "zstd" */
    GArray *bitmaps;          /* of BdrvBitmapInfo; NULL: none stored */
} BdrvImageInfo;
/* Fills @info (zeroed first) as the image is now. */
void bdrv_get_image_info(BlockNode *bs, BdrvImageInfo *info);
void bdrv_image_info_clear(BdrvImageInfo *info);

/* --- statistics and the graph for the monitor (block/query.c) ------------ */

/* What block/io.c counts of the requests that enter a node through the
 * bdrv_* calls (query-blockstats).  Indexed by BDRV_ACCT_*. */
enum { BDRV_ACCT_READ, BDRV_ACCT_WRITE, BDRV_ACCT_UNMAP, BDRV_ACCT_FLUSH,
       BDRV_ACCT__MAX };
typedef struct BdrvStats {
    uint64_t bytes[BDRV_ACCT__MAX];
    uint64_t ops[BDRV_ACCT__MAX];          /* succeeded */
    uint64_t failed[BDRV_ACCT__MAX];
    uint64_t invalid[BDRV_ACCT__MAX];      /* refused: out of range */
    uint64_t total_time_ns[BDRV_ACCT__MAX];
    uint64_t wr_highest_offset;            /* end of the furthest write */
} BdrvStats;
/* A snapshot of the counters (each read atomically). */
void bdrv_get_stats(BlockNode *bs, BdrvStats *out);

/* One edge into a node (QEMU's x-debug-query-block-graph): from a parent
 * node, or from a user outside the graph (@parent NULL, @holder its
 * description: "NBD export 'e0'", "backup job 'j0'"). */
typedef struct BdrvEdgeInfo {
    BlockNode *parent;
    const char *holder;
    const char *name;         /* child name or the user's role */
    BlockNode *child;
    uint32_t perm, shared;
} BdrvEdgeInfo;
/* Calls @fn for every edge into @bs, under the graph lock: @fn may only
 * read. */
void bdrv_foreach_edge_into(BlockNode *bs,
                            void (*fn)(const BdrvEdgeInfo *e, void *opaque),
                            void *opaque);

/* --- amending an image (block/snapshot.c) -------------------------------- */

/* What x-blockdev-amend changes; the "unchanged" values change nothing. */
typedef struct BdrvAmendOptions {
    int version;              /* qcow2 2 or 3; 0: unchanged */
    int lazy_refcounts;       /* 0 or 1; -1: unchanged */
    uint32_t refcount_bits;   /* 0: unchanged */
    bool encrypt;             /* LUKS keyslot changes were asked for */
} BdrvAmendOptions;
/* Changes the image's format options in place, in a drained section of
 * @bs (taken here).  0, or a negative errno and @errp. */
int bdrv_amend(BlockNode *bs, const BdrvAmendOptions *opts, GError **errp);

/* --- internal snapshots (block/snapshot.c) ------------------------------ */

/* One internal snapshot, as QEMU's QEMUSnapshotInfo. */
typedef struct BdrvSnapshotInfo {
    char *id;
    char *name;
    uint64_t vm_state_size;
    uint32_t date_sec, date_nsec;
    uint64_t vm_clock_nsec;
    uint64_t icount;        /* UINT64_MAX: none recorded */
} BdrvSnapshotInfo;
void bdrv_snapshot_info_clear(BdrvSnapshotInfo *info);

/* Does the node's driver take internal snapshots (qcow2)? */
bool bdrv_can_snapshot(BlockNode *bs);
/* Its snapshots (an array of BdrvSnapshotInfo that clears its elements),
 * or NULL and @errp. */
GArray *bdrv_snapshot_list(BlockNode *bs, GError **errp);
/* Takes snapshot @name of the disk as it is now (a new id: the largest
 * numeric one plus one), in a drained section the caller holds.  The new
 * snapshot's description goes to @info (may be NULL). */
int bdrv_snapshot_create(BlockNode *bs, const char *name,
                         BdrvSnapshotInfo *info, GError **errp);
/* Deletes the snapshot with @id and/or @name (both must match when both
 * are given); drained by the caller.  What was deleted goes to @info. */
int bdrv_snapshot_delete(BlockNode *bs, const char *id, const char *name,
                         BdrvSnapshotInfo *info, GError **errp);

/* --- permissions (block/perm.c) ---------------------------------------- */

/*
 * Whoever uses a node holds an edge into it that takes some permissions
 * and shares others, QEMU's set: a user outside the graph (an export, a
 * job, the nbdkit plugin) attaches one with bdrv_user_attach, child links
 * get theirs from their driver.  An edge that takes what another one does
 * not share is refused, with QEMU's sentence ("Permission conflict on node
 * 'f0': permissions 'write' are both required by ... and unshared by
 * ..."); so is a lock that another process holds on the image (the file
 * driver's locks follow the node's permissions).  Thread safe.
 */
enum {
    BDRV_PERM_CONSISTENT_READ = 1 << 0,
    BDRV_PERM_WRITE = 1 << 1,
    BDRV_PERM_WRITE_UNCHANGED = 1 << 2,
    BDRV_PERM_RESIZE = 1 << 3,
    BDRV_PERM_GRAPH_MOD = 1 << 4,
    BDRV_PERM_ALL = (1 << 5) - 1,
};

/* A user that stops its own I/O in drained sections (a job). */
typedef struct BdrvUserOps {
    void (*drained_begin)(void *opaque); /* stop issuing requests */
    bool (*drained_poll)(void *opaque);  /* still busy? */
    void (*drained_end)(void *opaque);
} BdrvUserOps;

/* @holder names the user in errors ("NBD export 'e0'"), @role is its edge's
 * name ("root", "source", "target"); @ops may be NULL.  Takes a reference
 * on @bs until bdrv_user_detach. */
BlockChild *bdrv_user_attach(BlockNode *bs, const char *holder,
                             const char *role, uint32_t perm, uint32_t shared,
                             const BdrvUserOps *ops, void *opaque,
                             GError **errp);
/* A job's "intermediate node" edge on a layer of a chain it rewrites (QEMU's
 * commit): it takes nothing and shares only @shared, but does not hold to
 * it the "backing" links of the nodes in @chain, which read through the
 * layer only what the job keeps unchanged for them (QEMU puts a filter
 * that takes nothing above the chain instead). */
BlockChild *bdrv_user_attach_layer(BlockNode *bs, const char *holder,
                                   uint32_t shared, GPtrArray *chain,
                                   GError **errp);
void bdrv_user_detach(BlockChild *user); /* NULL is fine */
bool bdrv_user_set_perm(BlockChild *user, uint32_t perm, uint32_t shared,
                        GError **errp);
BlockNode *bdrv_user_node(BlockChild *user);
/* The same, referenced (bdrv_unref it): safe while a graph change moves
 * the edge and drops the node it left. */
BlockNode *bdrv_user_node_ref(BlockChild *user);
/* "consistent read, write" */
char *bdrv_perm_names(uint32_t perm);
/* Someone other than @except taking write on @bs ("NBD export 'e0'",
 * "node 'q0'"), or NULL. */
char *bdrv_find_writer(BlockNode *bs, BlockChild *except);
/* A user of @bs in @role ("root": an export or the plugin; NULL: any),
 * as its holder's description, or NULL. */
char *bdrv_find_user(BlockNode *bs, const char *role);
/* The name of a node that has @bs as its @link child ("backing"), or NULL. */
char *bdrv_find_parent_by_link(BlockNode *bs, const char *link);
/* Does @from read @to, itself or through child links (backing links only
 * with @through_backing)? */
bool bdrv_reaches(BlockNode *from, BlockNode *to, bool through_backing);
/* A node whose data both @a and @b are made of (not through backing
 * links), or NULL. */
BlockNode *bdrv_common_storage(BlockNode *a, BlockNode *b);

/* --- graph changes (block/perm.c), to be made in a drained section ------- */

/* Attaches @backing as the "backing" child of @bs, which has none and whose
 * driver takes backing files (a qcow2 overlay opened with "backing": null).
 * Says why not otherwise, in QEMU's words. */
bool bdrv_set_backing(BlockNode *bs, BlockNode *backing, GError **errp);
/* Every user of @from (exports, the plugin, jobs) uses @to from now on, as
 * QEMU's bdrv_replace_node.  Refused while a node other than @to uses
 * @from (its driver holds it), or when @to cannot take the users'
 * permissions; then nothing changed. */
bool bdrv_replace_node(BlockNode *from, BlockNode *to, GError **errp);
/* A mirror job's "mirror_top" filter whose users moved away (in a drained
 * section): it lets go of its child now; requests that still reach it go
 * to the node that took its users. */
void bdrv_mirror_top_detach(BlockNode *filter);
/* @bs's backing child becomes @backing (NULL: none), in one step for its
 * readers: a commit or stream dropping the layers between. */
bool bdrv_replace_backing(BlockNode *bs, BlockNode *backing, GError **errp);
/* Undoes bdrv_set_backing; false if @bs has no backing child. */
bool bdrv_clear_backing(BlockNode *bs);
/* The node only reads from now on (a snapshot's old image). */
void bdrv_set_read_only(BlockNode *bs);
/* The opposite, as QEMU's reopen with read-only=off: the node and the
 * children it stores data in become writable (a backing file a commit
 * writes into).  Fails, changing nothing, when a driver cannot or an
 * image lock is held elsewhere. */
bool bdrv_reopen_writable(BlockNode *bs, GError **errp);
/* QEMU's blockdev-reopen of @bs with @opts (flat keys, "node-name"
 * removed): read-only, discard, detect-zeroes and "backing" change, an
 * option left out takes its default, any other must stay as it is. */
bool bdrv_reopen(BlockNode *bs, GHashTable *opts, GError **errp);
/* The backing file name (and format) in @bs's image metadata, as QEMU's
 * bdrv_change_backing_file; NULL @name: no backing file.  Fails with
 * *errp, the image unchanged, where the format has no such field. */
bool bdrv_change_backing_file(BlockNode *bs, const char *name,
                              const char *format, GError **errp);
/* The same, as a negative errno (-ENOTSUP: the format has no such field,
 * -EPERM: read-only), for callers that word the error themselves. */
int bdrv_write_backing_file(BlockNode *bs, const char *name,
                            const char *format);
/* Where @node is in the backing chain of @top, filters skipped: 1 for @top
 * itself, 2 for its backing, ... as bdrv_allocation_depth counts; 0 if
 * it is not in the chain. */
int bdrv_chain_depth(BlockNode *top, BlockNode *node);

/* --- drained sections (block/drain.c) ------------------------------------- */

/*
 * A drained section holds nodes still: requests of users (exports, the
 * plugin, the monitor) wait before they start, jobs using the nodes park
 * between copies, and begin returns once nothing runs on them any more.
 * The thread holding a section may do I/O itself.  Sections nest and
 * overlap; end each one exactly once.
 */
/* @bs, the nodes above it, and the other nodes of jobs using them. */
BdrvDrain *bdrv_drained_begin(BlockNode *bs);
/* Every node (a transaction). */
BdrvDrain *bdrv_drain_all_begin(void);
void bdrv_drained_end(BdrvDrain *drain);
/* A job's threads: never held back at a request's start (the job parks
 * itself through its BdrvUserOps instead). */
void bdrv_set_thread_drain_exempt(bool exempt);
/* Is @thread (an exempt, job thread) waiting for its turn to open a
 * drained section?  Such a thread issues no I/O: its job counts as parked. */
bool bdrv_thread_waits_to_drain(GThread *thread);

/* --- I/O (block/io.c) ------------------------------------------------- */

int bdrv_pread(BlockNode *bs, int64_t offset, int64_t bytes, void *buf);
/* Reads into the pipe @pipe_fd (its write end, empty, with room for
 * @bytes) without copying through memory where every layer can (raw over
 * a file in the page cache: splice).  -ENOTSUP or -EAGAIN: this node or
 * pipe cannot, read with bdrv_pread instead.  After any error the pipe
 * may hold part of the data. */
int bdrv_pread_pipe(BlockNode *bs, int64_t offset, int64_t bytes,
                    int pipe_fd);
int bdrv_pwrite(BlockNode *bs, int64_t offset, int64_t bytes,
                const void *buf, int flags);
int bdrv_pwrite_zeroes(BlockNode *bs, int64_t offset, int64_t bytes,
                       int flags);
int bdrv_pdiscard(BlockNode *bs, int64_t offset, int64_t bytes);
int bdrv_flush(BlockNode *bs);
/* Advise that a range will be read soon (NBD_CMD_CACHE). */
int bdrv_prefetch(BlockNode *bs, int64_t offset, int64_t bytes);

/*
 * Status of the range starting at @offset: returns BDRV_BLOCK_* flags valid
 * for *@pnum bytes (1 <= *pnum <= bytes), or a negative errno.
 */
int bdrv_block_status(BlockNode *bs, int64_t offset, int64_t bytes,
                      int64_t *pnum);

/*
 * Where in the backing chain of @bs the range at @offset is allocated, for
 * *@pnum bytes (1 <= *pnum <= bytes): 1 in @bs itself, 2 in its backing,
 * and so on, 0 in no layer (QEMU's qemu:allocation-depth); or a negative
 * errno.
 */
int bdrv_allocation_depth(BlockNode *bs, int64_t offset, int64_t bytes,
                          int64_t *pnum);

BlockNotifier *bdrv_add_before_write_notifier(BlockNode *bs,
                                              BlockBeforeWriteFunc fn,
                                              void *opaque);
BlockNotifier *bdrv_add_after_write_notifier(BlockNode *bs,
                                             BlockAfterWriteFunc fn,
                                             void *opaque);
/* Waits until no write runs the notifier any more, then frees it (either
 * kind).  A write between an owner's before and after notifiers may still
 * miss the after one: remove them in a drained section of @bs. */
void bdrv_remove_before_write_notifier(BlockNode *bs, BlockNotifier *n);

/* --- dirty bitmaps (block/dirty-bitmap.c) ------------------------------ */

/*
 * A node has any number of named dirty bitmaps.  Every write, write-zeroes
 * and discard through the request path sets the bits of the granules it
 * touches in each enabled bitmap.  All functions are thread safe.  A
 * persistent bitmap is stored in the image (qcow2) when the node closes.
 */
typedef struct BdrvDirtyBitmap BdrvDirtyBitmap;

/* @granularity: a power of two, at least 512.  Fails if the name exists. */
BdrvDirtyBitmap *bdrv_create_dirty_bitmap(BlockNode *bs, const char *name,
                                          uint32_t granularity,
                                          GError **errp);
/* A job's own bitmap, as QEMU's anonymous ones: @name is for messages;
 * no lookup or list finds it, so QMP cannot remove, merge or export it
 * under the job, and a user's bitmap may have the same name. */
BdrvDirtyBitmap *bdrv_create_job_dirty_bitmap(BlockNode *bs,
                                              const char *name,
                                              uint32_t granularity,
                                              GError **errp);
void bdrv_release_dirty_bitmap(BdrvDirtyBitmap *bm);
/* May @bs store a persistent bitmap (qcow2 v3, writable)?  Says why not. */
bool bdrv_can_store_dirty_bitmap(BlockNode *bs, GError **errp);
/* A bitmap by name, never a job's own. */
BdrvDirtyBitmap *bdrv_find_dirty_bitmap(BlockNode *bs, const char *name);
/* The node's bitmaps now but the jobs' own, which a job's thread may free
 * at any time (free the list with g_list_free). */
GList *bdrv_dirty_bitmap_list(BlockNode *bs);

const char *bdrv_dirty_bitmap_name(BdrvDirtyBitmap *bm);
uint32_t bdrv_dirty_bitmap_granularity(BdrvDirtyBitmap *bm);
int64_t bdrv_dirty_bitmap_length(BdrvDirtyBitmap *bm);
BlockNode *bdrv_dirty_bitmap_node(BdrvDirtyBitmap *bm);
bool bdrv_dirty_bitmap_enabled(BdrvDirtyBitmap *bm);
bool bdrv_dirty_bitmap_persistent(BdrvDirtyBitmap *bm);
bool bdrv_dirty_bitmap_inconsistent(BdrvDirtyBitmap *bm);
/* Dirty bytes (granules times granularity, clipped at the node's end). */
uint64_t bdrv_dirty_bitmap_count(BdrvDirtyBitmap *bm);
/* Dirty granules. */
uint64_t bdrv_dirty_bitmap_granules(BdrvDirtyBitmap *bm);
void bdrv_dirty_bitmap_set_enabled(BdrvDirtyBitmap *bm, bool enabled);
void bdrv_dirty_bitmap_set_persistent(BdrvDirtyBitmap *bm, bool persistent);
/* Marks a bitmap found in use after a crash: disabled, unusable. */
void bdrv_dirty_bitmap_set_inconsistent(BdrvDirtyBitmap *bm);
/* A job or export takes a bitmap with a reason, and gives it back with
 * NULL.  false if someone else holds it. */
bool bdrv_dirty_bitmap_set_busy(BdrvDirtyBitmap *bm, const char *reason);
/* May the bitmap be used (or changed)?  Not if inconsistent, nor (unless
 * @allow_busy) while busy; says why. */
bool bdrv_dirty_bitmap_check(BdrvDirtyBitmap *bm, bool allow_busy,
                             GError **errp);

/* Sets (or clears) the granules covering a byte range. */
void bdrv_dirty_bitmap_set(BdrvDirtyBitmap *bm, int64_t offset,
                           int64_t bytes, bool dirty);
void bdrv_dirty_bitmap_clear(BdrvDirtyBitmap *bm);
bool bdrv_dirty_bitmap_get(BdrvDirtyBitmap *bm, int64_t offset);
/* The extent at @offset (< @end) of alike granules: *dirty and *pnum bytes,
 * clipped at @end.  false at or past the end. */
bool bdrv_dirty_bitmap_next_extent(BdrvDirtyBitmap *bm, int64_t offset,
                                   int64_t end, bool *dirty, int64_t *pnum);
/* The first dirty byte at or after @offset, or -1. */
int64_t bdrv_dirty_bitmap_next_dirty(BdrvDirtyBitmap *bm, int64_t offset);
/* ORs @src into @dst (any granularities, same length). */
bool bdrv_dirty_bitmap_merge(BdrvDirtyBitmap *dst, BdrvDirtyBitmap *src,
                             GError **errp);

/*
 * Successors: how a backup job splits a bitmap (QEMU's create_successor,
 * abdicate and reclaim).  While a bitmap has a successor it is busy with
 * @reason and frozen: its bits stay as they are, and the writes that would
 * set them set the successor's instead.  Fails (and says why) if the
 * bitmap is busy or inconsistent.
 */
bool bdrv_dirty_bitmap_create_successor(BdrvDirtyBitmap *bm,
                                        const char *reason, GError **errp);
/* The successor (read it with the functions above), or NULL. */
BdrvDirtyBitmap *bdrv_dirty_bitmap_successor(BdrvDirtyBitmap *bm);
/* Ends the split: @bm keeps only the successor's bits (what was written
 * since the split), and is no longer busy. */
void bdrv_dirty_bitmap_abdicate(BdrvDirtyBitmap *bm);
/* Ends the split: the successor's bits are ORed into @bm's, and @bm is no
 * longer busy. */
void bdrv_dirty_bitmap_reclaim(BdrvDirtyBitmap *bm);

/* The bitmap's bits as bytes: granule 8 * i + b is bit b of byte i (the
 * qcow2 layout). */
size_t bdrv_dirty_bitmap_serialized_size(BdrvDirtyBitmap *bm);
void bdrv_dirty_bitmap_serialize(BdrvDirtyBitmap *bm, size_t start,
                                 size_t len, uint8_t *out);
/* ORs serialized bytes in. */
void bdrv_dirty_bitmap_deserialize(BdrvDirtyBitmap *bm, size_t start,
                                   size_t len, const uint8_t *in);

/* Is the buffer all zero bytes? (fast, word at a time) */
bool buffer_is_zero(const void *buf, size_t len);

/* Allocate an I/O buffer suitable for any node (aligned for O_DIRECT). */
void *bdrv_blockalign(BlockNode *bs, size_t size);
/* The memory alignment I/O through @bs needs down to its protocol nodes
 * (1 without O_DIRECT); io.c bounces buffers that miss it. */
uint32_t bdrv_buffer_alignment(BlockNode *bs);

/* Verbosity for driver messages (-v). */
extern int bdrv_verbose;

/* --- blkdebug breakpoints (block/blkdebug.c) ------------------------------ */

/*
 * QEMU's blkdebug breakpoints (qemu-io's break, resume, remove_break and
 * wait_break), for tests.  Each acts on @bs or, if it is no blkdebug node,
 * the first one below it through "file" children.  A request that reaches a
 * breakpoint's event blocks until resume; a breakpoint fires once.  Thread
 * safe.
 */
/* @event: a QEMU BlkdebugEvent name ("l2_update", "write_aio", ...). */
bool bdrv_debug_breakpoint(BlockNode *bs, const char *event, const char *tag,
                           GError **errp);
/* Removes the breakpoints of @tag and resumes the requests held there. */
bool bdrv_debug_remove_breakpoint(BlockNode *bs, const char *tag,
                                  GError **errp);
/* Resumes one request held at @tag. */
bool bdrv_debug_resume(BlockNode *bs, const char *tag, GError **errp);
/* Waits up to @timeout_ms until a request is held at @tag. */
bool bdrv_debug_wait_break(BlockNode *bs, const char *tag,
                           int64_t timeout_ms, GError **errp);
/* Is a request held at @tag? */
bool bdrv_debug_is_suspended(BlockNode *bs, const char *tag);
/* At shutdown: resumes every held request; breakpoints hold none from now
 * on, so that every request can finish. */
void bdrv_debug_release_all(void);

/* --- throttle groups (block/throttle.c) ----------------------------------- */

/*
 * QEMU's throttle-group objects, which "throttle" nodes name: limits
 * shared by every node of the group.  @props are the object's properties
 * with QEMU's names ("limits.iops-total", or the legacy "x-iops-total"),
 * consumed; an unknown one is an error.  Thread safe.
 */
bool throttle_group_create(const char *id, GHashTable *props, GError **errp);
bool throttle_group_exists(const char *id);
/* Refused while a node uses the group, as QEMU's object-del. */
bool throttle_group_delete(const char *id, GError **errp);
/* At exit, after the nodes: drops every group of the table. */
void throttle_group_delete_all(void);
/* At shutdown: no request waits for its budget any more. */
void throttle_release_all(void);
/* At shutdown: no guest write waits for room in a bounded fleecing store
 * any more (x-on-store-full=wait): the point in time gives way
 * (block/copy-before-write.c). */
void bdrv_cbw_release_all(void);

/* --- op blockers (block/blocker.c) -------------------------------------- */

/*
 * While a node takes part in an operation (a job), the operations that would
 * conflict with it are blocked on the node, each with a reason that says who
 * blocks it and why ("in use by backup job 'job0' as its source").  Checks
 * and changes are thread safe.  The owner removes its blockers before it
 * drops its reference on the node.
 */
typedef enum {
    BDRV_OP_BACKUP_SOURCE,   /* being the source of a backup job */
    BDRV_OP_BACKUP_TARGET,   /* being the target of a backup job */
    BDRV_OP_DELETE,          /* blockdev-del */
    BDRV_OP_RESIZE,          /* block_resize */
    BDRV_OP_EXPORT_WRITABLE, /* a writable export (block-export-add, -A) */
    BDRV_OP_CHAIN_JOB,       /* a commit or stream over its backing chain */
    BDRV_OP__MAX,
} BdrvOpType;

/* Blocks @op on @bs for @owner (any pointer, the key to unblock with). */
void bdrv_op_block(BlockNode *bs, BdrvOpType op, const void *owner,
                   const char *reason);
/* Removes every blocker of @owner on @bs. */
void bdrv_op_unblock_all(BlockNode *bs, const void *owner);
/* Is @op blocked on @bs?  If so, says "Node 'NAME' is busy: REASON". */
bool bdrv_op_is_blocked(BlockNode *bs, BdrvOpType op, GError **errp);

#endif
