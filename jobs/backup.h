/*
 * backup.h - the point-in-time backup job (QEMU's "backup" job type).
 *
 * From the moment backup_job_create returns, every write, write-zeroes and
 * discard that reaches the source first has the old data of the chunks it
 * touches copied to the target (copy-before-write): the target receives
 * the disk as it was at that moment, whatever the guest writes afterwards.
 * job_start() then copies the rest in the background:
 *
 *   sync=full  everything (zero ranges become write-zeroes, or nothing when
 *              the target already reads as zero);
 *   sync=top   what is allocated in the source's top layer: the target
 *              shares the source's backing;
 *   sync=none  nothing: the target holds only the old data of what the
 *              guest overwrote, and reads the rest through its backing, the
 *              live source ("fleecing").  Runs until cancelled.
 *   sync=bitmap  the chunks that hold a dirty byte of a bitmap of the
 *              source (copy-before-writes copy only those too): the target,
 *              typically an overlay of the previous backup, gets what
 *              changed since the bitmap began.
 *
 * A bitmap (required by sync=bitmap, optional with full and top) is split
 * when the job is created, as in QEMU: it keeps its bits and is busy, and a
 * successor records the writes from then on.  When the job ends, the
 * bitmap-mode decides what the bitmap holds:
 *
 *   on-success  after success, only the successor's bits (what was copied
 *               is clean); after a failure or cancel, its own bits plus
 *               the successor's: nothing is lost.
 *   always      as on-success, but after a failure or cancel the bits of
 *               what was copied are cleared too (with full and top, what
 *               was not copied becomes dirty).
 *   never       its own bits plus the successor's, whatever happens.
 *
 * The copy-before-write is a "copy-before-write" filter node of the source
 * into the target (named filter-node-name, or automatically), which the
 * job inserts when it is created and removes when it ends; its copy engine
 * does the background copy too.  If a copy-before-write fails, the guest's
 * write still goes ahead (the source keeps serving) and the job fails: the
 * point in time is lost (on-cbw-error=break-snapshot).
 */
#ifndef SNAPNBD_BACKUP_H
#define SNAPNBD_BACKUP_H

#include "block/block.h"
#include "jobs/job.h"

typedef enum {
    BACKUP_SYNC_FULL,
    BACKUP_SYNC_TOP,
    BACKUP_SYNC_NONE,
    BACKUP_SYNC_BITMAP,
    BACKUP_SYNC_INCREMENTAL, /* bitmap with bitmap-mode on-success */
} BackupSync;

typedef enum {
    BITMAP_SYNC_ON_SUCCESS,
    BITMAP_SYNC_ALWAYS,
    BITMAP_SYNC_NEVER,
} BitmapSyncMode;

/* "full", "top", "none", "bitmap", "incremental". */
bool backup_sync_parse(const char *name, BackupSync *out, GError **errp);
const char *backup_sync_str(BackupSync sync);
/* "on-success", "always", "never"; false for anything else. */
bool backup_bitmap_mode_parse(const char *name, BitmapSyncMode *out);
const char *backup_bitmap_mode_str(BitmapSyncMode mode);

typedef struct BackupOptions {
    BackupSync sync;
    int64_t speed;                   /* bytes/s, 0 = unlimited */
    BlockdevOnError on_source_error;
    BlockdevOnError on_target_error;
    int job_flags;                   /* JOB_MANUAL_FINALIZE, ... */
    int max_workers;                 /* background copies in flight; 0: 4 */
    int64_t max_chunk;               /* bytes per copy; 0: 1 MiB */
    /* While the guest writes, the background copies' share of one core
     * in percent (1..100; 0: 15). */
    int background_share;
    BdrvDirtyBitmap *bitmap;         /* of the source, or NULL */
    BitmapSyncMode bitmap_mode;
    const char *filter_node_name;    /* of the copy-before-write node */
    /* x-max-store-bytes, sync=none only: the most the target may keep of
     * the point in time; a copy-before-write beyond fails the job (its
     * point in time is lost), the guest's write goes on.  0: no limit. */
    int64_t max_store_bytes;
} BackupOptions;

/*
 * A backup job of @source to @target in state "created", its
 * copy-before-write already active.  The job uses both nodes with
 * permissions (it reads the source, writes the target, and neither may be
 * resized), blocks conflicting operations on them (delete, the target as
 * another job's node, the source as a target, a writable export of the
 * target) until it ends, and keeps its bitmap busy.  A source may have
 * several backups at once.
 */
Job *backup_job_create(const char *id, BlockNode *source, BlockNode *target,
                       const BackupOptions *opts, GError **errp);

#endif
