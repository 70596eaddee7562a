/*
 * qmp-jobs.c - QMP commands, transaction actions and events of jobs:
 * drive-backup, blockdev-backup, query-jobs, query-block-jobs, the job-*
 * and block-job-* verbs, and JOB_STATUS_CHANGE / BLOCK_JOB_* events, with
 * QEMU's argument names, return shapes and messages.
 *
 * The handlers run on the QMP thread; the job engine (jobs/) does the
 * locking.  Events come from the engine through job_set_event_hook, on
 * whichever thread caused them, and go to qmp_emit_event, which is thread
 * safe and never blocks.
 */
#include "server/nbd/export.h"
#include "qmp-int.h"
#include "server/qmp/qmp-types-gen.h"
#include "jobs/backup.h"
#include "jobs/mirror.h"
#include "jobs/target.h"

#include <errno.h>
#include <string.h>



/* --- copy-before-write counters ------------------------------------------ */

JsonObject *qmp_cbw_stats_json(const BdrvCbwStats *st)
{
    JsonObject *o = json_object_new();
    const BlockCopyStats *c = &st->copy;

    json_object_set_int_member(o, "granularity", c->granularity);
    json_object_set_int_member(o, "store-bytes", c->store_bytes);
    json_object_set_int_member(o, "store-peak-bytes", c->store_peak_bytes);
    if (c->max_store_bytes)
        json_object_set_int_member(o, "max-store-bytes", c->max_store_bytes);
    json_object_set_int_member(o, "copies", c->copies);
    json_object_set_int_member(o, "copied-bytes", c->copied_bytes);
    json_object_set_int_member(o, "guest-waits", c->guest_waits);
    json_object_set_int_member(o, "guest-wait-ns", c->guest_wait_ns);
    json_object_set_int_member(o, "guest-wait-max-ns", c->guest_wait_max_ns);
    json_object_set_int_member(o, "store-full", c->store_full);
    if (st->has_background) {
        json_object_set_int_member(o, "background-cpu-ns",
                                   st->background_cpu_ns);
        json_object_set_int_member(o, "background-bytes",
                                   st->background_bytes);
        json_object_set_int_member(o, "background-yielding-cpu-ns",
                                   st->background_yielding_cpu_ns);
    }
    json_object_set_boolean_member(o, "snapshot-broken", st->broken);
    if (st->broken)
        json_object_set_string_member(
            o, "snapshot-error",
            st->break_error == -EDQUOT
                ? "the fleecing store is full (x-max-store-bytes)"
                : g_strerror(-st->break_error));
    return o;
}

/* "x-cbw" of a job with a copy-before-write (a backup). */
static void add_cbw_info(JsonObject *o, const char *id)
{
    Job *job = job_get(id);
    BdrvCbwStats st;

    if (job && job_cbw_stats(job, &st))
        json_object_set_object_member(o, "x-cbw", qmp_cbw_stats_json(&st));
    if (job)
        job_unref(job);
}

/* --- events ------------------------------------------------------------- */

static void set_progress(JsonObject *d, const JobEvent *ev)
{
    json_object_set_string_member(d, "type", ev->type);
    json_object_set_string_member(d, "device", ev->id);
    json_object_set_int_member(d, "len", ev->len);
    json_object_set_int_member(d, "offset", ev->offset);
    json_object_set_int_member(d, "speed", ev->speed);
}

/* A job's end event is QEMU's, unless the job was given snapnbd's
 * x-max-store-bytes: then its counters come with it as "x-cbw" (a job
 * that fails when its store fills up is gone from query-jobs by the time
 * anyone asks). */
static void add_cbw_event_info(JsonObject *d, const JobEvent *ev)
{
    if (ev->has_cbw && ev->cbw.copy.max_store_bytes > 0)
        json_object_set_object_member(d, "x-cbw",
                                      qmp_cbw_stats_json(&ev->cbw));
}

static void emit_job_event(const JobEvent *ev)
{
    JsonObject *d = json_object_new();
    const char *name = NULL;

    switch (ev->kind) {
    case JOB_EVENT_STATUS_CHANGE:
        name = "JOB_STATUS_CHANGE";
        json_object_set_string_member(d, "id", ev->id);
        json_object_set_string_member(d, "status",
                                      job_status_str(ev->status));
        break;
    case JOB_EVENT_COMPLETED:
        name = "BLOCK_JOB_COMPLETED";
        set_progress(d, ev);
        if (ev->error)
            json_object_set_string_member(d, "error", ev->error);
        add_cbw_event_info(d, ev);
        break;
    case JOB_EVENT_CANCELLED:
        name = "BLOCK_JOB_CANCELLED";
        set_progress(d, ev);
        add_cbw_event_info(d, ev);
        break;
    case JOB_EVENT_READY:
        name = "BLOCK_JOB_READY";
        set_progress(d, ev);
        break;
    case JOB_EVENT_ERROR:
        name = "BLOCK_JOB_ERROR";
        json_object_set_string_member(d, "device", ev->id);
        json_object_set_string_member(d, "operation",
                                      ev->is_read ? "read" : "write");
        json_object_set_string_member(d, "action",
                                      block_error_action_str(ev->action));
        break;
    case JOB_EVENT_PENDING:
        name = "BLOCK_JOB_PENDING";
        json_object_set_string_member(d, "type", ev->type);
        json_object_set_string_member(d, "id", ev->id);
        break;
    }
    qmp_emit_event(name, d);
}

/* --- argument parsing --------------------------------------------------- */

typedef struct BackupArgs {
    const char *job_id;
    const char *device;
    const char *target;
    const char *format;  /* drive-backup */
    bool existing;       /* drive-backup mode=existing */
    const char *bitmap;
    const char *bitmap_mode;
    BackupOptions opts;
} BackupArgs;

/* An optional BlockdevOnError member (@key): "auto", which the schema
 * has, is QEMU's for guest devices, not for jobs. */
static bool job_on_error(bool has, QmpBlockdevOnError v, const char *key,
                         BlockdevOnError *out, GError **errp)
{
    *out = BLOCKDEV_ON_ERROR_REPORT;
    if (!has)
        return true;
    if (v == QMP_BLOCKDEV_ON_ERROR_AUTO ||
        !blockdev_on_error_parse(qmp_blockdev_on_error_str[v], out)) {
        qmp_error(errp, "Parameter '%s' does not accept value '%s'", key,
                  qmp_blockdev_on_error_str[v]);
        return false;
    }
    return true;
}

/* x-perf: {"max-workers": N, "max-chunk": BYTES, "x-background-share":
 * PERCENT} (use-copy-range is accepted and ignored: snapnbd always copies
 * through a buffer). */
static bool backup_perf(const QmpBackupPerf *p, BackupOptions *o,
                        GError **errp)
{
    if (!p)
        return true;
    if (p->max_workers < 0 || p->max_workers > 64 || p->max_chunk < 0) {
        qmp_error(errp, "x-perf: max-workers must be 1..64 and max-chunk "
                        "positive");
        return false;
    }
    if (p->has_x_background_share &&
        (p->x_background_share < 1 || p->x_background_share > 100)) {
        qmp_error(errp, "x-perf: x-background-share must be 1..100");
        return false;
    }
    o->max_workers = p->max_workers;
    o->max_chunk = p->max_chunk;
    o->background_share = p->x_background_share;
    return true;
}

static int job_flags(bool has_finalize, bool finalize, bool has_dismiss,
                     bool dismiss)
{
    return (has_finalize && !finalize ? JOB_MANUAL_FINALIZE : 0) |
           (has_dismiss && !dismiss ? JOB_MANUAL_DISMISS : 0);
}

/* BackupCommon (the members drive-backup and blockdev-backup share) and
 * the target, in QEMU's order of checks. */
static bool parse_backup_args(const QmpBackupCommon *c, const char *target,
                              BackupArgs *a, GError **errp)
{
    *a = (BackupArgs){ 0 };
    a->device = c->device;
    a->target = target;
    a->job_id = c->job_id ? c->job_id : c->device; /* as QEMU */
    if (!backup_sync_parse(qmp_mirror_sync_mode_str[c->sync], &a->opts.sync,
                           errp))
        return false;
    a->opts.speed = c->speed;
    a->opts.max_store_bytes = c->x_max_store_bytes;
    a->bitmap = c->bitmap;
    a->opts.filter_node_name = c->filter_node_name;
    if (c->has_bitmap_mode)
        a->bitmap_mode = qmp_bitmap_sync_mode_str[c->bitmap_mode];
    a->opts.job_flags = job_flags(c->has_auto_finalize, c->auto_finalize,
                                  c->has_auto_dismiss, c->auto_dismiss);
    if (!job_on_error(c->has_on_source_error, c->on_source_error,
                      "on-source-error", &a->opts.on_source_error, errp) ||
        !job_on_error(c->has_on_target_error, c->on_target_error,
                      "on-target-error", &a->opts.on_target_error, errp) ||
        !backup_perf(c->x_perf, &a->opts, errp))
        return false;
    /* Arguments snapnbd does not implement are refused, never ignored. */
    if (c->compress) {
        qmp_error(errp, "compress and discard-source are not supported yet");
        return false;
    }
    return true;
}

static bool parse_drive_backup_args(const QmpDriveBackup *d, BackupArgs *a,
                                    GError **errp)
{
    QmpBackupCommon c;

    qmp_drive_backup_base(d, &c);
    if (!parse_backup_args(&c, d->target, a, errp))
        return false;
    a->format = d->format;
    a->existing = d->has_mode && d->mode == QMP_NEW_IMAGE_MODE_EXISTING;
    return true;
}

/* --- creating backups --------------------------------------------------- */

static BlockNode *lookup_node(const char *name, GError **errp)
{
    BlockNode *bs = qmp_find_node(name);

    if (!bs)
        qmp_error(errp, "Cannot find device='%s' nor node-name='%s'", name,
                  name);
    return bs;
}

/* bitmap and bitmap-mode, with the checks and messages of QEMU's
 * do_backup_common: sync=incremental is sync=bitmap with on-success. */
static bool resolve_bitmap(BackupArgs *a, BlockNode *source, GError **errp)
{
    BackupOptions *o = &a->opts;
    BdrvDirtyBitmap *bm;
    GError *err = NULL;

    if ((o->sync == BACKUP_SYNC_BITMAP ||
         o->sync == BACKUP_SYNC_INCREMENTAL) && !a->bitmap) {
        qmp_error(errp, "must provide a valid bitmap name for '%s' sync mode",
                  backup_sync_str(o->sync));
        return false;
    }
    if (o->sync == BACKUP_SYNC_INCREMENTAL) {
        if (a->bitmap_mode && strcmp(a->bitmap_mode, "on-success") != 0) {
            qmp_error(errp, "Bitmap sync mode must be 'on-success' when "
                      "using sync mode 'incremental'");
            return false;
        }
        o->sync = BACKUP_SYNC_BITMAP;
        a->bitmap_mode = "on-success";
    }
    if (!a->bitmap) {
        if (a->bitmap_mode) {
            qmp_error(errp, "Cannot specify bitmap sync mode without a "
                      "bitmap");
            return false;
        }
        return true;
    }
    bm = bdrv_find_dirty_bitmap(source, a->bitmap);
    if (!bm) {
        qmp_error(errp, "Bitmap '%s' could not be found", a->bitmap);
        return false;
    }
    if (!a->bitmap_mode) {
        qmp_error(errp, "Bitmap sync mode must be given when providing a "
                  "bitmap");
        return false;
    }
    backup_bitmap_mode_parse(a->bitmap_mode, &o->bitmap_mode);
    if (!bdrv_dirty_bitmap_check(bm, false, &err)) {
        qmp_error(errp, "%s", err->message);
        g_error_free(err);
        return false;
    }
    if (o->sync == BACKUP_SYNC_NONE) {
        qmp_error(errp, "sync mode 'none' does not produce meaningful bitmap "
                  "outputs");
        return false;
    }
    if (o->bitmap_mode == BITMAP_SYNC_NEVER && o->sync != BACKUP_SYNC_BITMAP) {
        qmp_error(errp, "Bitmap sync mode 'never' has no meaningful effect "
                  "when combined with sync mode '%s'",
                  backup_sync_str(o->sync));
        return false;
    }
    o->bitmap = bm;
    return true;
}

static Job *create_backup(const BackupArgs *a, BlockNode *source,
                          BlockNode *target, GError **errp)
{
    return backup_job_create(a->job_id, source, target, &a->opts, errp);
}

/* drive-backup up to a job in state "created"; NULL + errp on failure. */
static Job *drive_backup_prepare(const QmpDriveBackup *d, GError **errp)
{
    BackupArgs a;
    BlockNode *source, *target;
    Job *job;

    if (!parse_drive_backup_args(d, &a, errp) ||
        !(source = lookup_node(a.device, errp)))
        return NULL;
    if (a.opts.sync == BACKUP_SYNC_TOP && !bdrv_child(source, "backing"))
        a.opts.sync = BACKUP_SYNC_FULL;
    if (!resolve_bitmap(&a, source, errp))
        return NULL;
    target = drive_target_open(source, &(DriveTargetSpec){
        .job = DRIVE_TARGET_BACKUP,
        .filename = a.target,
        .format = a.format,
        .existing = a.existing,
        .base = drive_target_backup_base(source, a.opts.sync),
    }, errp);
    if (!target)
        return NULL;
    job = create_backup(&a, source, target, errp);
    bdrv_unref(target); /* the job holds it now, or nobody */
    return job;
}

static Job *blockdev_backup_prepare(const QmpBlockdevBackup *b, GError **errp)
{
    QmpBackupCommon c;
    BackupArgs a;
    BlockNode *source, *target;

    qmp_blockdev_backup_base(b, &c);
    if (!parse_backup_args(&c, b->target, &a, errp) ||
        !(source = lookup_node(a.device, errp)) ||
        !(target = lookup_node(a.target, errp)) ||
        !resolve_bitmap(&a, source, errp))
        return NULL;
    return create_backup(&a, source, target, errp);
}

static JsonNode *cmd_drive_backup(const QmpDriveBackup *a, GError **errp)
{
    Job *job = drive_backup_prepare(a, errp);

    if (job)
        job_start(job);
    return NULL;
}

static JsonNode *cmd_blockdev_backup(const QmpBlockdevBackup *a,
                                     GError **errp)
{
    Job *job = blockdev_backup_prepare(a, errp);

    if (job)
        job_start(job);
    return NULL;
}

/* --- transaction actions: the job is created in prepare (the point in
 * time), started in commit, and cancelled unstarted in abort. ------------- */

/* The group of the jobs of the transaction running now (completion-mode
 * grouped): a new one for each transaction, which its jobs keep alive. */
static JobTxn *transaction_group(void)
{
    static JobTxn *group;
    static unsigned group_serial;

    if (!group || group_serial != qmp_transaction_serial()) {
        if (group)
            job_txn_unref(group);
        group = job_txn_new();
        group_serial = qmp_transaction_serial();
    }
    return group;
}

/* drive-backup's or blockdev-backup's (the other NULL) decoded data. */
static bool tx_backup_prepare(const QmpDriveBackup *d,
                              const QmpBlockdevBackup *b, void **state,
                              GError **errp)
{
    Job *job = d ? drive_backup_prepare(d, errp)
                 : blockdev_backup_prepare(b, errp);

    if (job) {
        job_ref(job);
        if (strcmp(qmp_transaction_completion_mode(), "grouped") == 0)
            job_txn_add(transaction_group(), job);
    }
    *state = job;
    return job != NULL;
}

static bool tx_drive_backup_prepare(const QmpTransactionAction *t,
                                    void **state, GError **errp)
{
    return tx_backup_prepare(t->u.drive_backup->data, NULL, state, errp);
}

static bool tx_blockdev_backup_prepare(const QmpTransactionAction *t,
                                       void **state, GError **errp)
{
    return tx_backup_prepare(NULL, t->u.blockdev_backup->data, state, errp);
}

static void tx_backup_commit(void *state)
{
    job_start(state);
}

static void tx_backup_abort(void *state)
{
    job_cancel_created(state);
}

static void tx_backup_clean(void *state)
{
    if (state)
        job_unref(state);
}

static const QmpTransactionOps drive_backup_ops = {
    .prepare = tx_drive_backup_prepare,
    .commit = tx_backup_commit,
    .abort = tx_backup_abort,
    .clean = tx_backup_clean,
};

static const QmpTransactionOps blockdev_backup_ops = {
    .prepare = tx_blockdev_backup_prepare,
    .commit = tx_backup_commit,
    .abort = tx_backup_abort,
    .clean = tx_backup_clean,
};

/* --- queries ------------------------------------------------------------ */

static JsonNode *job_info_json(const JobInfo *i)
{
    JsonObject *o = json_object_new();
    JsonNode *n = json_node_new(JSON_NODE_OBJECT);

    json_object_set_string_member(o, "id", i->id);
    json_object_set_string_member(o, "type", i->type);
    json_object_set_string_member(o, "status", job_status_str(i->status));
    json_object_set_int_member(o, "current-progress", i->current);
    json_object_set_int_member(o, "total-progress", i->total);
    if (i->error)
        json_object_set_string_member(o, "error", i->error);
    add_cbw_info(o, i->id);
    json_node_take_object(n, o);
    return n;
}

/* A mirror's copy mode: "actively-synced" as QEMU 8.2; "x-copy-mode" (the
 * mode now) and "x-auto-write-blocking" (it switched because it did not
 * converge) are snapnbd's. */
static void add_mirror_info(JsonObject *o, const char *id)
{
    Job *job = job_get(id);
    MirrorJobInfo mi;

    if (job && mirror_job_info(job, &mi)) {
        json_object_set_boolean_member(o, "actively-synced",
                                       mi.actively_synced);
        json_object_set_string_member(
            o, "x-copy-mode",
            mi.copy_mode == MIRROR_COPY_MODE_WRITE_BLOCKING ? "write-blocking"
                                                            : "background");
        json_object_set_boolean_member(o, "x-auto-write-blocking",
                                       mi.auto_write_blocking);
    }
    if (job)
        job_unref(job);
}

static JsonNode *block_job_info_json(const JobInfo *i)
{
    JsonObject *o = json_object_new();
    JsonNode *n = json_node_new(JSON_NODE_OBJECT);

    json_object_set_string_member(o, "type", i->type);
    json_object_set_string_member(o, "device", i->id);
    json_object_set_int_member(o, "len", i->total);
    json_object_set_int_member(o, "offset", i->current);
    json_object_set_boolean_member(o, "busy", i->busy);
    json_object_set_boolean_member(o, "paused", i->paused);
    json_object_set_int_member(o, "speed", i->speed);
    json_object_set_string_member(o, "io-status",
                                  job_io_status_str(i->iostatus));
    json_object_set_boolean_member(o, "ready", i->ready);
    json_object_set_string_member(o, "status", job_status_str(i->status));
    json_object_set_boolean_member(o, "auto-finalize", i->auto_finalize);
    json_object_set_boolean_member(o, "auto-dismiss", i->auto_dismiss);
    if (i->error)
        json_object_set_string_member(o, "error", i->error);
    add_mirror_info(o, i->id);
    add_cbw_info(o, i->id);
    json_node_take_object(n, o);
    return n;
}

static JsonNode *query(bool block_jobs_only)
{
    g_autoptr(GPtrArray) all = job_query_all();
    JsonArray *arr = json_array_new();
    JsonNode *n = json_node_new(JSON_NODE_ARRAY);

    for (guint k = 0; k < all->len; k++) {
        const JobInfo *i = all->pdata[k];
        if (block_jobs_only && i->block_job)
            json_array_add_element(arr, block_job_info_json(i));
        else if (!block_jobs_only)
            json_array_add_element(arr, job_info_json(i));
    }
    json_node_take_array(n, arr);
    return n;
}

static JsonNode *cmd_query_jobs(GError **errp)
{
    return query(false);
}

static JsonNode *cmd_query_block_jobs(GError **errp)
{
    return query(true);
}

/* --- verbs -------------------------------------------------------------- */

/* job-*: by "id"; QEMU says "Job not found". */
static Job *find_job(const char *id, GError **errp)
{
    Job *job = job_get(id);

    if (!job)
        qmp_error(errp, "Job not found");
    return job;
}

/* block-job-*: by "device" or "id", block jobs only, DeviceNotActive if
 * there is none (QEMU 7.2's find_block_job). */
static Job *find_block_job(const char *id, GError **errp)
{
    Job *job = job_get(id);

    if (job && !job->driver->block_job) {
        job_unref(job);
        job = NULL;
    }
    if (!job)
        g_set_error(errp, QMP_ERROR, QMP_ERROR_DEVICE_NOT_ACTIVE,
                    "Block job '%s' not found", id);
    return job;
}

typedef bool (*JobVerbFunc)(Job *job, GError **errp);

static JsonNode *run_verb(Job *job, JobVerbFunc fn, GError **errp)
{
    if (job) {
        fn(job, errp);
        job_unref(job);
    }
    return NULL;
}

/* job-cancel always forces, as in QEMU. */
static bool cancel_forced(Job *job, GError **errp)
{
    return job_user_cancel(job, true, errp);
}

/* A verb on the job that member @key of QmpT names (@find: find_job or
 * find_block_job). */
#define JOB_VERB_CMD(cname, T, key, find, fn)                               \
    static JsonNode *cname(const Qmp##T *a, GError **errp)                  \
    {                                                                       \
        return run_verb(find(a->key, errp), fn, errp);                      \
    }
JOB_VERB_CMD(cmd_job_pause, JobPauseArgs, id, find_job, job_user_pause)
JOB_VERB_CMD(cmd_job_resume, JobResumeArgs, id, find_job, job_user_resume)
JOB_VERB_CMD(cmd_job_cancel, JobCancelArgs, id, find_job, cancel_forced)
JOB_VERB_CMD(cmd_job_complete, JobCompleteArgs, id, find_job, job_complete)
JOB_VERB_CMD(cmd_job_finalize, JobFinalizeArgs, id, find_job, job_finalize)
JOB_VERB_CMD(cmd_job_dismiss, JobDismissArgs, id, find_job, job_dismiss)
JOB_VERB_CMD(cmd_block_job_pause, BlockJobPauseArgs, device, find_block_job,
             job_user_pause)
JOB_VERB_CMD(cmd_block_job_resume, BlockJobResumeArgs, device,
             find_block_job, job_user_resume)
JOB_VERB_CMD(cmd_block_job_complete, BlockJobCompleteArgs, device,
             find_block_job, job_complete)
JOB_VERB_CMD(cmd_block_job_finalize, BlockJobFinalizeArgs, id,
             find_block_job, job_finalize)
JOB_VERB_CMD(cmd_block_job_dismiss, BlockJobDismissArgs, id, find_block_job,
             job_dismiss)

static JsonNode *cmd_block_job_cancel(const QmpBlockJobCancelArgs *a,
                                      GError **errp)
{
    bool force = a->force;
    Job *job = find_block_job(a->device, errp);

    if (!job)
        return NULL;
    /* As QEMU: a paused job is only cancelled with force. */
    if (!force && job_user_paused(job))
        qmp_error(errp, "The block job for device '%s' is currently paused",
                  job->id);
    else
        job_user_cancel(job, force, errp);
    job_unref(job);
    return NULL;
}

static JsonNode *cmd_block_job_set_speed(const QmpBlockJobSetSpeedArgs *a,
                                         GError **errp)
{
    Job *job = find_block_job(a->device, errp);

    if (job) {
        job_set_speed(job, a->speed, errp);
        job_unref(job);
    }
    return NULL;
}

/* --- blockdev-mirror and drive-mirror ------------------------------------ */

/* unmap is drive-mirror's in QEMU 7.2; blockdev-mirror takes it too (as
 * later QEMUs do).  x-auto-write-blocking: false keeps a background
 * mirror background even when it does not converge (snapnbd's). */

typedef struct MirrorArgs {
    const char *job_id;
    const char *device;
    const char *target;
    const char *replaces;
    const char *format;     /* drive-mirror */
    const char *node_name;  /* drive-mirror */
    bool existing;          /* drive-mirror mode=existing */
    /* the enums, as the schema gave them, until mirror_enums() */
    QmpMirrorSyncMode sync;
    bool has_copy_mode;
    QmpMirrorCopyMode copy_mode;
    bool has_on_source_error, has_on_target_error;
    QmpBlockdevOnError on_source_error, on_target_error;
    MirrorOptions opts;
} MirrorArgs;

/* What blockdev-mirror's arguments and DriveMirror share: the same
 * members, in two generated types. */
#define MIRROR_ARGS(m)                                                      \
    (MirrorArgs){                                                           \
        .job_id = (m)->job_id ? (m)->job_id : (m)->device,                  \
        .device = (m)->device,                                              \
        .target = (m)->target,                                              \
        .replaces = (m)->replaces,                                          \
        .sync = (m)->sync,                                                  \
        .has_copy_mode = (m)->has_copy_mode,                                \
        .copy_mode = (m)->copy_mode,                                        \
        .has_on_source_error = (m)->has_on_source_error,                    \
        .on_source_error = (m)->on_source_error,                            \
        .has_on_target_error = (m)->has_on_target_error,                    \
        .on_target_error = (m)->on_target_error,                            \
        .opts = {                                                           \
            .speed = (m)->speed,                                            \
            .granularity = (m)->granularity,                                \
            .buf_size = (m)->buf_size,                                      \
            .no_unmap = (m)->has_unmap && !(m)->unmap,                      \
            .no_auto_write_blocking = (m)->has_x_auto_write_blocking &&     \
                                      !(m)->x_auto_write_blocking,          \
            .job_flags = job_flags((m)->has_auto_finalize,                  \
                                   (m)->auto_finalize,                      \
                                   (m)->has_auto_dismiss,                   \
                                   (m)->auto_dismiss),                      \
        },                                                                  \
    }

/* The enums the mirror takes a part of, in QEMU's order of checks. */
static bool mirror_enums(MirrorArgs *a, GError **errp)
{
    return mirror_sync_parse(qmp_mirror_sync_mode_str[a->sync],
                             &a->opts.sync, errp) &&
           (!a->has_copy_mode ||
            mirror_copy_mode_parse(qmp_mirror_copy_mode_str[a->copy_mode],
                                   &a->opts.copy_mode, errp)) &&
           job_on_error(a->has_on_source_error, a->on_source_error,
                        "on-source-error", &a->opts.on_source_error, errp) &&
           job_on_error(a->has_on_target_error, a->on_target_error,
                        "on-target-error", &a->opts.on_target_error, errp);
}

/* The source and replaces nodes, and QEMU's sync=top without a backing:
 * full. */
static BlockNode *resolve_mirror_source(MirrorArgs *a, GError **errp)
{
    BlockNode *source = lookup_node(a->device, errp);

    if (!source)
        return NULL;
    if (a->replaces && !(a->opts.replaces = qmp_find_node(a->replaces))) {
        qmp_error(errp, "Failed to find node with node-name='%s'",
                  a->replaces);
        return NULL;
    }
    if (a->opts.sync == MIRROR_SYNC_TOP && !bdrv_child(source, "backing"))
        a->opts.sync = MIRROR_SYNC_FULL;
    return source;
}

static JsonNode *cmd_blockdev_mirror(const QmpBlockdevMirrorArgs *m,
                                     GError **errp)
{
    MirrorArgs a = MIRROR_ARGS(m);
    BlockNode *source, *target;
    Job *job;

    if (!mirror_enums(&a, errp))
        return NULL;
    a.opts.filter_node_name = m->filter_node_name;
    if (!(source = resolve_mirror_source(&a, errp)) ||
        !(target = lookup_node(a.target, errp)))
        return NULL;
    job = mirror_job_create(a.job_id, source, target, &a.opts, errp);
    if (job)
        job_start(job);
    return NULL;
}

static bool parse_drive_mirror_args(const QmpDriveMirror *m, MirrorArgs *a,
                                    GError **errp)
{
    *a = MIRROR_ARGS(m);
    if (!mirror_enums(a, errp))
        return false;
    a->format = m->format;
    a->node_name = m->node_name;
    a->existing = m->has_mode && m->mode == QMP_NEW_IMAGE_MODE_EXISTING;
    if (a->replaces && !a->node_name) {
        qmp_error(errp, "a node-name must be provided when replacing a "
                        "named node of the graph");
        return false;
    }
    return true;
}

static JsonNode *cmd_drive_mirror(const QmpDriveMirror *m, GError **errp)
{
    MirrorArgs a;
    BlockNode *source, *target;
    Job *job;

    if (!parse_drive_mirror_args(m, &a, errp) ||
        !(source = resolve_mirror_source(&a, errp)))
        return NULL;
    target = drive_target_open(source, &(DriveTargetSpec){
        .job = DRIVE_TARGET_MIRROR,
        .filename = a.target,
        .format = a.format,
        .existing = a.existing,
        .node_name = a.node_name,
        .base = drive_target_mirror_base(source, a.opts.sync),
    }, errp);
    if (!target)
        return NULL;
    job = mirror_job_create(a.job_id, source, target, &a.opts, errp);
    bdrv_unref(target); /* the job holds it now, or nobody */
    if (job)
        job_start(job);
    return NULL;
}

void qmp_register_job_commands(void)
{
    job_set_event_hook(emit_job_event);
    qmp_register_typed_drive_backup(cmd_drive_backup);
    qmp_register_typed_blockdev_backup(cmd_blockdev_backup);
    qmp_register_typed_blockdev_mirror(cmd_blockdev_mirror);
    qmp_register_typed_drive_mirror(cmd_drive_mirror);
    qmp_register_typed_query_jobs(cmd_query_jobs);
    qmp_register_typed_query_block_jobs(cmd_query_block_jobs);
    qmp_register_typed_job_pause(cmd_job_pause);
    qmp_register_typed_job_resume(cmd_job_resume);
    qmp_register_typed_job_cancel(cmd_job_cancel);
    qmp_register_typed_job_complete(cmd_job_complete);
    qmp_register_typed_job_finalize(cmd_job_finalize);
    qmp_register_typed_job_dismiss(cmd_job_dismiss);
    qmp_register_typed_block_job_pause(cmd_block_job_pause);
    qmp_register_typed_block_job_resume(cmd_block_job_resume);
    qmp_register_typed_block_job_cancel(cmd_block_job_cancel);
    qmp_register_typed_block_job_complete(cmd_block_job_complete);
    qmp_register_typed_block_job_finalize(cmd_block_job_finalize);
    qmp_register_typed_block_job_dismiss(cmd_block_job_dismiss);
    qmp_register_typed_block_job_set_speed(cmd_block_job_set_speed);
    qmp_register_transaction_action("drive-backup", &drive_backup_ops);
    qmp_register_transaction_action("blockdev-backup", &blockdev_backup_ops);
}

void qmp_jobs_cleanup(void)
{
    job_cancel_sync_all();
}
