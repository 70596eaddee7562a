/*
 * create.h - the "create" job of QMP's blockdev-create: creates a file, or
 * writes a new image of a format over an open node, on a job thread.
 */
#ifndef SNAPNBD_CREATE_H
#define SNAPNBD_CREATE_H

#include "block/block.h"
#include "jobs/job.h"

typedef struct CreateJobSpec {
    const char *driver;   /* "file", or a format ("qcow2") */
    const char *filename; /* "file": the file to create */
    BlockNode *file;      /* a format: the node to format (referenced) */
    uint64_t size;
    GHashTable *options;  /* the driver's flat options (copied) */
} CreateJobSpec;

/* A job in state "created", not dismissed automatically (as in QEMU);
 * start it with job_start(). */
Job *create_job_create(const char *id, const CreateJobSpec *spec,
                       GError **errp);

#endif
