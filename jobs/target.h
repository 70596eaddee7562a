/*
 * target.h - the target image of drive-backup and drive-mirror, named by
 * a file name: its format, size and backing for the sync mode, created
 * (mode absolute-paths) or opened as it is (mode existing), by the rules
 * of QEMU 7.2's qmp_drive_backup and qmp_drive_mirror, for every caller.
 */
#ifndef SNAPNBD_TARGET_H
#define SNAPNBD_TARGET_H

#include "block/block.h"
#include "jobs/backup.h"
#include "jobs/mirror.h"

/* The job the target is for: QEMU words the errors of each its own way. */
typedef enum {
    DRIVE_TARGET_BACKUP,
    DRIVE_TARGET_MIRROR,
} DriveTargetJob;

typedef struct DriveTargetSpec {
    DriveTargetJob job;
    const char *filename;
    const char *format;    /* NULL: probed (existing), else the source's */
    bool existing;         /* mode existing; else created (absolute-paths) */
    const char *node_name; /* of the target node; NULL: automatic */
    /* The node whose data the target shares, as its backing: the source
     * (sync=none), the source's backing (top), or NULL (a whole copy);
     * see drive_target_backup_base and drive_target_mirror_base. */
    BlockNode *base;
} DriveTargetSpec;

/* The base of a drive-backup / drive-mirror target of @source. */
BlockNode *drive_target_backup_base(BlockNode *source, BackupSync sync);
BlockNode *drive_target_mirror_base(BlockNode *source, MirrorSync sync);

/* The target node of a job copying @source (the caller owns the
 * reference), or NULL with @errp set. */
BlockNode *drive_target_open(BlockNode *source, const DriveTargetSpec *spec,
                             GError **errp);

#endif
