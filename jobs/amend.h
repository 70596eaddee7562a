/*
 * amend.h - the "amend" job of QMP's x-blockdev-amend: changes an image's
 * format options in place, on a job thread.
 */
#ifndef SNAPNBD_AMEND_H
#define SNAPNBD_AMEND_H

#include "block/block.h"
#include "jobs/job.h"

/* A job in state "created", not dismissed automatically (as in QEMU),
 * that amends @node (referenced until the job ends) with @opts; start it
 * with job_start(). */
Job *amend_job_create(const char *id, BlockNode *node,
                      const BdrvAmendOptions *opts, GError **errp);

#endif
