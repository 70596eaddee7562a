/*
 * mirror.h - the mirror job (QEMU's blockdev-mirror and drive-mirror).
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
 *
 * copy-mode write-blocking (active mirroring): each write of the source is
 * also written to the target before it is reported done, so once ready
 * the two are identical whenever no write is in flight.  A background
 * mirror whose dirty set stops shrinking switches to write-blocking by
 * itself (unless MirrorOptions.no_auto_write_blocking), so that it
 * reaches "ready" under any write load.
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

typedef enum {
    MIRROR_COPY_MODE_BACKGROUND,
    MIRROR_COPY_MODE_WRITE_BLOCKING,
} MirrorCopyMode;

/* Zero is the default of every field. */
typedef struct MirrorOptions {
    MirrorSync sync;
    MirrorCopyMode copy_mode;
    int64_t speed;            /* bytes/s, 0 = unlimited */
    int64_t granularity;      /* of the dirty bitmap; 0: 64 KiB */
    int64_t buf_size;         /* bytes of copies in flight; 0: 16 MiB */
    BlockNode *replaces;      /* whose users move; NULL: the source */
    /* A "mirror_top" filter of this name goes above @replaces while the
     * job runs (QEMU's filter-node-name); NULL: none. */
    const char *filter_node_name;
    BlockdevOnError on_source_error;
    BlockdevOnError on_target_error;
    bool no_unmap;            /* unmap: false: zeroes stay allocated */
    bool no_auto_write_blocking; /* never switch to write-blocking alone */
    /* QEMU's job type: NULL is "mirror"; "commit" for an active commit
     * built on this engine (same job, its own type in events). */
    const char *job_type;
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
/* "background", "write-blocking". */
bool mirror_copy_mode_parse(const char *name, MirrorCopyMode *out,
                            GError **errp);

/* A mirror job of @source to @target in state "created". */
Job *mirror_job_create(const char *id, BlockNode *source, BlockNode *target,
                       const MirrorOptions *opts, GError **errp);

/* What query-block-jobs says of a job on the mirror engine. */
typedef struct MirrorJobInfo {
    MirrorCopyMode copy_mode;  /* now: write-blocking after a switch too */
    bool auto_write_blocking;  /* switched because it did not converge */
    bool actively_synced;      /* write-blocking, ready and nothing dirty */
} MirrorJobInfo;

/* false if @job is no job of the mirror engine. */
bool mirror_job_info(Job *job, MirrorJobInfo *info);

#endif
