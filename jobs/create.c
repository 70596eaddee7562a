/*
 * create.c - the "create" job (QMP blockdev-create).
 *
 * The work is one call into the block layer: bdrv_create for a file,
 * bdrv_format for a format over an open node.  It runs on the job's thread
 * like any job, so that a slow creation (preallocation) does not hold the
 * control socket, and its failure is the job's error, as in QEMU.
 */
#include "jobs/create.h"

typedef struct CreateJob {
    Job common;
    char *driver;
    char *filename;
    BlockNode *file;      /* referenced: user's node, unless a mirror's
                           * switch moved the edge on; or NULL */
    BlockChild *user;     /* writes and resizes the node it formats */
    uint64_t size;
    GHashTable *options;
} CreateJob;

/* Progress is one step, as QEMU reports it (0/1, then 1/1). */
static int create_run(Job *job, GError **errp)
{
    CreateJob *c = (CreateJob *)job;
    int ret;

    job_progress_set_total(job, 1);
    if (c->file)
        ret = bdrv_format(c->driver, c->file, c->size, c->options, errp);
    else
        ret = bdrv_create(c->driver, c->filename, c->size, c->options, errp);
    job_progress_update(job, 1);
    return ret;
}

/* Without the job lock: dropping the node may close it (I/O). */
static void create_clean(Job *job)
{
    CreateJob *c = (CreateJob *)job;

    g_clear_pointer(&c->user, bdrv_user_detach);
    g_clear_pointer(&c->file, bdrv_unref);
}

static void create_free(Job *job)
{
    CreateJob *c = (CreateJob *)job;

    g_free(c->driver);
    g_free(c->filename);
    if (c->options)
        g_hash_table_unref(c->options);
}

static const JobDriver create_driver = {
    .type = "create",
    .instance_size = sizeof(CreateJob),
    .run = create_run,
    .clean = create_clean,
    .free = create_free,
};

Job *create_job_create(const char *id, const CreateJobSpec *spec,
                       GError **errp)
{
    CreateJob *c = job_create(id, &create_driver, JOB_MANUAL_DISMISS, errp);

    if (!c)
        return NULL;
    c->driver = g_strdup(spec->driver);
    c->filename = g_strdup(spec->filename);
    if (spec->file) {
        g_autofree char *holder = g_strdup_printf("create job '%s'", id);
        /* As QEMU's blockdev-create: all of it, sharing everything. */
        c->user = bdrv_user_attach(spec->file, holder, "root",
                                   BDRV_PERM_WRITE | BDRV_PERM_RESIZE,
                                   BDRV_PERM_ALL, NULL, NULL, errp);
        if (!c->user) {
            job_cancel_created(&c->common);
            return NULL;
        }
        bdrv_ref(spec->file);
        c->file = spec->file;
    }
    c->size = spec->size;
    c->options = spec->options ? g_hash_table_ref(spec->options) : NULL;
    return &c->common;
}
