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
 *
 * If a copy-before-write fails, the guest's write still goes ahead (the
 * source keeps serving) and the job fails: the point in time is lost.
 */
#ifndef SNAPNBD_BACKUP_H
#define SNAPNBD_BACKUP_H

#include "block/block.h"
#include "jobs/job.h"

typedef enum {
    BACKUP_SYNC_FULL,
    BACKUP_SYNC_TOP,
    BACKUP_SYNC_NONE,
} BackupSync;

/* "full", "top", "none"; "incremental" and "bitmap" are refused as not
 * supported yet. */
bool backup_sync_parse(const char *name, BackupSync *out, GError **errp);
const char *backup_sync_str(BackupSync sync);

typedef struct BackupOptions {
    BackupSync sync;
    int64_t speed;                   /* bytes/s, 0 = unlimited */
    BlockdevOnError on_source_error;
    BlockdevOnError on_target_error;
    int job_flags;                   /* JOB_MANUAL_FINALIZE, ... */
    int max_workers;                 /* background copies in flight; 0: 4 */
    int64_t max_chunk;               /* bytes per copy; 0: 1 MiB */
} BackupOptions;

/*
 * A backup job of @source to @target in state "created", its
 * copy-before-write already active.  The job takes references on both
 * nodes and blocks conflicting operations on them (a second backup, delete,
 * resize, a writable export of the target) until it ends.
 */
Job *backup_job_create(const char *id, BlockNode *source, BlockNode *target,
                       const BackupOptions *opts, GError **errp);

#endif
