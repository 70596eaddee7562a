/*
 * mirror.h - the mirror job (QEMU's blockdev-mirror).
 *
 * The job copies the source to the target in the background while the
 * source's users keep writing: a dirty bitmap of the source records every
 * write, and the job copies dirty ranges until none is left.  Then it is
 * "ready" (BLOCK_JOB_READY) and keeps the target in sync.  job-complete
 * drains the source, copies the last dirty ranges and switches: every user
 * of the source (of @replaces) uses the target from then on; a target
 * without a backing child gets the source's backing first (sync=top and
 * none), so that it reads what the source read.  A cancel once ready ends
 * the job without the switch, the target a consistent copy as of the
 * cancel (BLOCK_JOB_COMPLETED, as QEMU); a forced cancel, or any cancel
 * before ready, is a cancel.
 */
#ifndef SNAPNBD_MIRROR_H
#define SNAPNBD_MIRROR_H

#include "block/block.h"
#include "jobs/job.h"

typedef enum {
    MIRROR_SYNC_FULL,
    MIRROR_SYNC_TOP,
    MIRROR_SYNC_NONE,
} MirrorSync;

typedef struct MirrorOptions {
    MirrorSync sync;
    int64_t speed;            /* bytes/s, 0 = unlimited */
    int64_t granularity;      /* of the dirty bitmap; 0: 64 KiB */
    int64_t buf_size;         /* bytes per copy; 0: 1 MiB */
    BlockNode *replaces;      /* whose users move; NULL: the source */
    int job_flags;            /* JOB_MANUAL_FINALIZE, ... */
    /* QEMU's active commit (a "commit" job): @target is a layer of
     * @source's backing chain; only what lies above it is copied, and
     * the switch moves the users to it as it is. */
    bool active_commit;
    /* The target was made writable for the job: read-only again unless
     * the switch made it the users' node. */
    bool target_was_read_only;
} MirrorOptions;

/* "full", "top", "none" (QEMU's MirrorSyncMode for mirrors). */
bool mirror_sync_parse(const char *name, MirrorSync *out, GError **errp);

/* A mirror job of @source to @target in state "created". */
Job *mirror_job_create(const char *id, BlockNode *source, BlockNode *target,
                       const MirrorOptions *opts, GError **errp);

#endif
