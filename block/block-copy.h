/*
 * block-copy.h - copies a source node to a target node in chunks, once.
 *
 * Promises:
 *  - The disk is cut into chunks of the copy's cluster size: the target's
 *    allocation granularity (a qcow2 target's cluster size; 4 KiB for a raw
 *    file), at least 4 KiB, and coarser only on disks of more than 2^24
 *    chunks.  A copy-before-write of a 4 KiB guest write on a raw store
 *    copies 4 KiB, never a neighbour it does not overwrite.  Each chunk is copied at
 *    most once, by whoever gets to it first: a background worker or a
 *    copy-before-write; anyone else who needs the same chunk waits for that
 *    copy instead of doing it again.  A bitmap of its own records which
 *    chunks are done.
 *  - Ranges that block status reports as zero are not read: the target gets
 *    write-zeroes, or nothing at all when it is known to read as zero.  With
 *    skip_unallocated (sync=top), ranges not allocated in the source's top
 *    layer are not copied either: the target shares the source's backing.
 *    Such chunks are done without taking room in the store (nor counting
 *    as kept or copied).
 *    With block_copy_limit_to_dirty (sync=bitmap), only the chunks that
 *    hold a dirty byte of a bitmap are copied.
 *  - All calls are blocking and thread safe.
 */
#ifndef SNAPNBD_BLOCK_COPY_H
#define SNAPNBD_BLOCK_COPY_H

#include "block/block.h"

typedef struct BlockCopyState BlockCopyState;

/* How a copy-before-write failed (block_copy). */
typedef struct BlockCopyError {
    bool is_read;      /* reading the source, else writing the target */
    bool store_full;   /* -EDQUOT: the store reached its limit */
    bool timed_out;    /* -ETIMEDOUT: waited longer than the timeout */
} BlockCopyError;

/* x-on-store-full: what a copy-before-write does when the store is full. */
typedef enum {
    BLOCK_COPY_STORE_FULL_BREAK, /* fail with store_full (break-snapshot) */
    BLOCK_COPY_STORE_FULL_WAIT,  /* wait until a reader frees room */
} BlockCopyStoreFull;

/* Live counters (block_copy_get_stats). */
typedef struct BlockCopyStats {
    int64_t granularity;       /* the chunk size */
    int64_t store_bytes;       /* chunks copied and kept (not those
                                * skipped), copy-before-writes in flight */
    int64_t store_peak_bytes;  /* the most store_bytes ever was */
    int64_t max_store_bytes;   /* the limit, 0: none */
    int64_t copies;            /* runs of chunks copied */
    int64_t copied_bytes;      /* their bytes, skipped chunks aside */
    int64_t guest_waits;       /* guest writes that copied or waited */
    int64_t guest_wait_ns;     /* the time they spent so, in total */
    int64_t guest_wait_max_ns; /* and at most */
    int64_t store_full;        /* guest writes that found the store full */
} BlockCopyStats;

/* Called for every chunk that becomes done (copied or skipped), from the
 * thread that did it. */
typedef void (*BlockCopyProgressFunc)(void *opaque, int64_t bytes);

BlockCopyState *block_copy_state_new(BlockNode *source, BlockNode *target,
                                     bool skip_unallocated, GError **errp);
void block_copy_state_free(BlockCopyState *s);
void block_copy_set_progress(BlockCopyState *s, BlockCopyProgressFunc fn,
                             void *opaque);

int64_t block_copy_cluster_size(BlockCopyState *s);
/* Bytes not copied yet (whole chunks). */
int64_t block_copy_remaining(BlockCopyState *s);
/* Does the target read as zeroes where nothing was copied? */
bool block_copy_target_is_zero(BlockCopyState *s);

/*
 * sync=bitmap: leaves out of the copy every chunk that holds no dirty byte
 * of @bm (nor of @also, if not NULL): such a chunk counts as done, without
 * being copied or reported as progress.  Chunks already done or in flight
 * stay as they are.  Returns the bytes left out.
 */
int64_t block_copy_limit_to_dirty(BlockCopyState *s, BdrvDirtyBitmap *bm,
                                  BdrvDirtyBitmap *also);
/* The first run of chunks at or after @from that is not done (neither
 * copied nor left out); false if there is none. */
bool block_copy_next_pending(BlockCopyState *s, int64_t from,
                             int64_t *offset, int64_t *bytes);

/* Is every chunk of [offset, offset + bytes) done already?  Lock-free (a
 * chunk never stops being done): what most guest writes of a long job or
 * fleecing find, and then they need nothing else here. */
bool block_copy_all_done(BlockCopyState *s, int64_t offset, int64_t bytes);

/*
 * Copy-before-write: makes sure every chunk of [offset, offset + bytes) is
 * done, copying the ones nobody copied yet and waiting for the ones in
 * flight.  Returns 0, or a negative errno with *err saying what failed
 * (the chunks that failed stay to be copied): a read or a write,
 * -EDQUOT with store_full when the store limit is reached (see
 * block_copy_set_store_limit), -ETIMEDOUT with timed_out when a wait took
 * longer than the timeout.  The time spent in calls that copied or waited
 * is counted (BlockCopyStats).
 */
int block_copy(BlockCopyState *s, int64_t offset, int64_t bytes,
               BlockCopyError *err);

/*
 * The store: the target keeps the bytes of every chunk copied, until
 * block_copy_forget drops them.  With @max_bytes > 0, a copy-before-write
 * that would keep more fails (BREAK) or waits until a reader forgets
 * enough (WAIT); whatever does not fit waits, what fits is copied.  With
 * @timeout_ns > 0 no copy-before-write waits longer than that for its
 * own copies (they run on copier threads and go on when it gives up,
 * their chunks busy until they end), chunks in flight, chunks frozen by a
 * reader, or room.  A WAIT gives up (store_full) while a drained
 * section holds the source, when no reader is attached (block_copy_reader),
 * or after block_copy_stop_waiting.  Background
 * copies (block_copy_claim) are never limited, only counted.
 */
void block_copy_set_store_limit(BlockCopyState *s, int64_t max_bytes,
                                BlockCopyStoreFull on_full,
                                int64_t timeout_ns);
/* A reader that may free room (snapshot-access) comes or goes: WAIT waits
 * only while one is there. */
void block_copy_reader(BlockCopyState *s, bool attach);
/* Waiting copy-before-writes give up now, and later ones do not wait. */
void block_copy_stop_waiting(BlockCopyState *s);
void block_copy_get_stats(BlockCopyState *s, BlockCopyStats *st);

/*
 * Background copy: claims the first run of chunks at or after @from that is
 * neither done nor in flight, at most @max_bytes long (at least one chunk).
 * False if there is none.  The caller then copies it with
 * block_copy_claimed, which also releases it.
 */
bool block_copy_claim(BlockCopyState *s, int64_t from, int64_t max_bytes,
                      int64_t *offset, int64_t *bytes);
/* *@copied: the bytes really read and written (not skipped).
 * @yield_to_guest: the guest is writing; the copy holds the target's file
 * lock for short stretches only, as guest copy-before-writes wait for it. */
int block_copy_claimed(BlockCopyState *s, int64_t offset, int64_t bytes,
                       bool yield_to_guest, bool *error_is_read,
                       int64_t *copied);
/* sync=top: set before anything is copied. */
void block_copy_set_skip_unallocated(BlockCopyState *s, bool skip);

/*
 * The point in time, for readers (snapshot-access): chunks done come from
 * the target, the others from the source, which cannot change under the
 * read (a copy-before-write of those chunks waits for it).  -EACCES for a
 * range block_copy_forget dropped.
 */
int block_copy_snapshot_read(BlockCopyState *s, int64_t offset,
                             int64_t bytes, void *buf);
/* Block status of the point in time at @offset, for *@pnum bytes. */
int block_copy_snapshot_status(BlockCopyState *s, int64_t offset,
                               int64_t bytes, int64_t *pnum);
/*
 * The reader no longer needs the whole chunks of [offset, offset + bytes):
 * they are never copied from now on and no longer readable.  Returns the
 * bytes of those chunks (from *@start), which the target may drop.
 */
int64_t block_copy_forget(BlockCopyState *s, int64_t offset, int64_t bytes,
                          int64_t *start);

#endif
