/*
 * amend.c - the "amend" job (QMP x-blockdev-amend).
 *
 * The work is one call into the block layer, bdrv_amend, which drains the
 * node while the driver rewrites its metadata.  As QEMU's amend job it
 * takes no permissions on the node and reports one step of progress; its
 * failure is the job's error.
 */
#include "jobs/amend.h"

typedef struct AmendJob {
    Job common;
    BlockNode *node;          /* referenced */
    BdrvAmendOptions opts;
} AmendJob;

static int amend_run(Job *job, GError **errp)
{
    AmendJob *a = (AmendJob *)job;
    int ret;

    job_progress_set_total(job, 1);
    ret = bdrv_amend(a->node, &a->opts, errp);
    job_progress_update(job, 1);
    return ret;
}

/* Without the job lock: dropping the node may close it (I/O). */
static void amend_clean(Job *job)
{
    AmendJob *a = (AmendJob *)job;

    g_clear_pointer(&a->node, bdrv_unref);
}

static const JobDriver amend_driver = {
    .type = "amend",
    .instance_size = sizeof(AmendJob),
    .run = amend_run,
    .clean = amend_clean,
};

Job *amend_job_create(const char *id, BlockNode *node,
                      const BdrvAmendOptions *opts, GError **errp)
{
    AmendJob *a = job_create(id, &amend_driver, JOB_MANUAL_DISMISS, errp);

    if (!a)
        return NULL;
    bdrv_ref(node);
    a->node = node;
    a->opts = *opts;
    return &a->common;
}
