/*
 * copy-before-write.h - the copy-before-write filter node, as jobs and the
 * snapshot-access driver use it.
 *
 * Promises:
 *  - From the moment a copy-before-write node opens (its "file" child is
 *    the source, its "target" child the store), every write, write-zeroes
 *    and discard that reaches the source, through this node or any other
 *    parent of the source, first has the old data of the chunks it touches
 *    copied to the target: the node keeps the source's point in time.
 *  - on-cbw-error=break-guest-write (QEMU's default): a failed copy fails
 *    the guest's write and the point in time holds.  break-snapshot: the
 *    guest's write goes on, the point in time is lost (snapshot reads fail
 *    with EACCES from then on) and the break is reported.
 *  - x-max-store-bytes: the target keeps at most that many bytes (copied,
 *    not yet discarded through snapshot-access).  A guest write that needs
 *    more breaks the point in time (x-on-store-full=break-snapshot, the
 *    default, whatever on-cbw-error says: the write goes on) or waits for
 *    a reader's discards (wait; cbw-timeout bounds it, then on-cbw-error
 *    decides) while a snapshot-access node may discard (see
 *    block_copy_set_store_limit for when it gives up).
 *  - Readers of the point in time (snapshot-access) go through
 *    bdrv_cbw_copy_state and block-copy's snapshot functions.
 */
#ifndef SNAPNBD_COPY_BEFORE_WRITE_H
#define SNAPNBD_COPY_BEFORE_WRITE_H

#include "block/block-copy.h"

typedef struct CbwConfig {
    bool skip_unallocated;   /* sync=top: copy what the top layer holds */
    bool break_snapshot;     /* on-cbw-error=break-snapshot */
    int64_t max_store_bytes; /* x-max-store-bytes, 0: no limit */
    bool store_full_wait;    /* x-on-store-full=wait */
    int64_t timeout_ns;      /* cbw-timeout, 0: none */
    BlockCopyProgressFunc progress;
    /* A guest write is about to be copied before (the backup's pacing;
     * bdrv_cbw_source_written says when writes last came). */
    void (*before_copy)(void *opaque);
    /* And its copies are done (or failed): it may go on. */
    void (*after_copy)(void *opaque);
    /* The point in time is lost: a copy failed with @error. */
    void (*broken)(void *opaque, int error, bool is_read, int64_t offset);
    void *opaque;
} CbwConfig;

/* A copy-before-write node of @source into @target, named @node_name (or
 * automatically), set up with @cfg before it starts copying: what a job
 * inserts (QEMU's bdrv_cbw_append).  NULL and *errp on failure. */
BlockNode *bdrv_cbw_append(BlockNode *source, BlockNode *target,
                           const char *node_name, const CbwConfig *cfg,
                           GError **errp);

/* Stops copying before writes now, whoever still holds the node (a
 * drained section may keep it a moment longer): a job that ends calls it
 * before it goes, so that no copy calls back into it afterwards. */
void bdrv_cbw_deactivate(BlockNode *cbw);

/* The copy engine of a copy-before-write node, or NULL for another node. */
BlockCopyState *bdrv_cbw_copy_state(BlockNode *cbw);
/* Has the node lost its point in time (break-snapshot after a failed
 * copy)?  Then *@error says why. */
bool bdrv_cbw_broken(BlockNode *cbw, int *error);

/* Does @bs hold a point in time for readers: the store (the "target"
 * child) of a copy-before-write node, or a snapshot-access node?  Its
 * readers are backup clients, which the NBD server runs at background
 * priority by default (block-export-add's x-priority). */
bool bdrv_is_point_in_time(BlockNode *bs);

/* When a write last reached the source of copy-before-write node @cbw
 * (monotonic µs, up to CBW_WRITE_STAMP_US stale; 0: none yet). */
#define CBW_WRITE_STAMP_US 500
int64_t bdrv_cbw_source_written(BlockNode *cbw);

/* Was the source of point-in-time node @bs (see bdrv_is_point_in_time)
 * written within the last @us microseconds?  False for other nodes.  The
 * NBD server paces the readers of a point in time while the guest writes
 * its disk. */
bool bdrv_point_in_time_source_busy(BlockNode *bs, int64_t us);

/* The live counters of a copy-before-write node (query-named-block-nodes,
 * the backup job's queries and events). */
typedef struct BdrvCbwStats {
    BlockCopyStats copy;
    bool broken;             /* the point in time is lost */
    int break_error;         /* why, if broken: -errno */
    /* A backup job's background copies (not the node's): CPU time spent
     * and bytes copied; of that CPU time, the copies' made while the
     * guest wrote (drawn from x-background-share's budget). */
    bool has_background;
    int64_t background_cpu_ns;
    int64_t background_bytes;
    int64_t background_yielding_cpu_ns;
} BdrvCbwStats;
/* False if @cbw is no (active) copy-before-write node. */
bool bdrv_cbw_stats(BlockNode *cbw, BdrvCbwStats *st);

#endif
