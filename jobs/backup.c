/*
 * backup.c - the backup job: a copy-before-write notifier on the source and
 * a background copy, both through one block-copy engine.
 *
 * Design notes.
 *
 * The job's thread is the coordinator: it decides what to copy next, when
 * (rate limit, pause, guest activity) and what an error means (the error
 * policies).  The copies themselves run on a pool of worker threads, each
 * copying one claimed run of chunks with blocking calls, so that several
 * are in flight at once.  Workers report back under the job lock
 * (inflight, the first error) and kick the coordinator.
 *
 * Guest writes come first: while the guest wrote within the last
 * GUEST_QUIET_NS, one background copy at most is in flight, of at most
 * max-chunk, on the coordinator's own thread (handing each copy to a
 * worker and back cost two wake-ups per copy: a third of the background's
 * throughput on 2 loaded cores), writing the target in short pieces (see
 * block_copy_claimed).  The copies take at most x-background-share
 * percent of one core: a budget of CPU time grows by share percent of the
 * wall time (up to BG_BURST_NS), each copy's CPU time
 * (CLOCK_THREAD_CPUTIME_ID) is drawn from it, and no copy starts while it
 * is negative.  CPU time, not wall time: on a loaded machine a copy's wall
 * time is mostly waiting for a CPU, and a pause as long as that starved
 * the background (235 MiB/s on 2 cores under a 4k QD32 guest).  A budget,
 * not a pause after each copy: a pause of a fraction of a millisecond
 * lasts milliseconds on a loaded machine, and the budget gives the
 * lateness back.
 * One copy at a time holds few chunks busy; the guest's own
 * copy-before-writes find the disk free.  The CPU time and bytes of the
 * background copies are counted (x-cbw's background-cpu-ns,
 * background-bytes and background-yielding-cpu-ns in query-jobs).
 *
 * Chunks are rate limited before they are claimed: a claimed chunk is busy,
 * and a guest write to it would wait out the sleep too.
 *
 * A bitmap is split before the notifier is added (the point in time), and
 * sync=bitmap copies the chunks dirty in the bitmap or in its successor as
 * it is just after that point.  A write that ended between the split and
 * the point in time is in the point in time but only in the successor:
 * it is copied from the source (and copied again by the next backup).
 * Writes after the point in time are copied before, as for any sync; a
 * write in flight across it may or may not be in the backup, as with a
 * power cut, and is in the successor either way, so no backup misses it.
 */
#include "jobs/backup.h"
#include "block/copy-before-write.h"

#include <errno.h>
#include <time.h>
#include <string.h>

#define DEFAULT_WORKERS 4
#define DEFAULT_CHUNK (1024 * 1024)
/* With a speed limit, one chunk is at most this much of a second's worth,
 * so that the limit holds within a few percent even over short runs. */
#define RATE_CHUNK_DIVISOR 20
#define RETRY_DELAY_NS (10 * 1000 * 1000)
/* The guest is active if it wrote within this time. */
#define GUEST_QUIET_NS (5 * 1000 * 1000)
/* While it is: the copies' share of one core, in percent (x-perf's
 * x-background-share; see the header comment).  Measured on 2 cores
 * (load 1-3), sync=full of 1 GiB qcow2 into a raw file on tmpfs under a
 * 4k QD32 guest, with the copies on the job's thread in 16 KiB pieces,
 * medians of 3, the guest's rate during/before and MiB/s: 15: 0.64, 351;
 * 50: 0.47-0.61, 766; 100: 0.44-0.52, 1042-1272 (qsd 7.2: 0.00, 992 on
 * the same machine).  The guest loses least in all at 100: what it loses
 * in rate it loses over a quarter of the time (per GiB, 0.5 s of its
 * writes at 100 against 1 s at 15).  At 100 the budget never binds (a
 * copy's CPU time is at most its wall time): the background is one
 * copy at a time on one thread, which the kernel's scheduler shares
 * with the guest's threads.
 * Not SCHED_IDLE (tried 2026-12-07, raw into raw, 6-12 runs each): copies
 * beyond the share at SCHED_IDLE kept the guest at 0.41-0.50 (share 50,
 * 960-1250 MiB/s) and 0.50-0.58 (25, 800-950) against 0.35-0.42 at 100
 * (1420-1490), no better per GiB; all copies there gave 0.69-0.83 at
 * 420-620 MiB/s.  And a SCHED_IDLE thread that holds a lock a guest write
 * needs (a qcow2 target's, a busy chunk) runs at 0.3% of a CPU when other
 * processes keep the CPUs busy: the guest write would wait that long. */
#define DEFAULT_BACKGROUND_SHARE 100
/* The most CPU time the background may save up while it waits or the
 * guest is quiet: a few copies back to back, no more. */
#define BG_BURST_NS (5 * 1000 * 1000)
#define ROUND_UP(n, a) ((((n) + (a) - 1) / (a)) * (a))

typedef struct BackupJob {
    Job common;
    BlockNode *source;        /* referenced; source_edge's node unless */
    BlockNode *target;        /* a switch moved the edge (target too) */
    BlockChild *source_edge;  /* the job as a user of its nodes */
    BlockChild *target_edge;
    BackupSync sync;
    BlockdevOnError on_source_error;
    BlockdevOnError on_target_error;
    BlockNode *cbw;           /* the copy-before-write filter node */
    BlockCopyState *bcs;      /* its copy engine */
    BdrvDirtyBitmap *sync_bitmap; /* split for the job, or NULL */
    BitmapSyncMode bitmap_mode;
    int max_workers;
    int64_t max_chunk;
    int64_t max_store_bytes;  /* x-max-store-bytes, 0: none */
    int background_share;     /* percent of a core while the guest writes */

    /* Guarded by the job lock. */
    int inflight;             /* background copies running */
    int64_t bg_credit_ns;     /* the CPU time budget, while the guest is on */
    int64_t bg_credit_at_ns;  /* when it last grew */
    /* Atomic: the CPU time of the background copies, their bytes. */
    int64_t bg_cpu_ns;
    int64_t bg_bytes;
    int64_t bg_yielding_cpu_ns; /* of bg_cpu_ns: copies while the guest wrote */
    int task_error;           /* first unhandled error of a copy, -errno */
    bool task_error_is_read;
    int64_t task_error_offset;

    /* Atomic: set from guest threads. */
    gint broken;              /* a copy-before-write failed */
    gint64 guest_write_ns;    /* when a guest write's copy last ended (the
                               * writes themselves: bdrv_cbw_source_written) */
    gint guest_copying;       /* guest writes in their copy-before-write */

    /* Set once, before broken is set. */
    int cbw_error;
    bool cbw_error_is_read;
    int64_t cbw_error_offset;

    /* The counters for queries and events: of stats_cbw while the job
     * holds it, then as they were when it let go.  Guarded by stats_lock,
     * as queries come from other threads than the job's end. */
    GMutex stats_lock;
    BlockNode *stats_cbw;
    BdrvCbwStats final_stats;
    bool has_final_stats;
} BackupJob;

typedef struct BackupTask {
    int64_t offset;
    int64_t bytes;
    bool budgeted;  /* started while the guest wrote: its CPU time counts */
} BackupTask;

typedef enum {
    STEP_COPY,   /* room for another copy */
    STEP_PAUSE,  /* asked to pause */
    STEP_DRAIN,  /* a drained section holds the nodes */
    STEP_ERROR,  /* a copy failed */
    STEP_STOP,   /* cancelled, or the point in time is lost */
} BackupStep;

static const char *const sync_names[] = { "full", "top", "none", "bitmap",
                                           "incremental" };
static const char *const bitmap_mode_names[] = { "on-success", "always",
                                                 "never" };

bool backup_sync_parse(const char *name, BackupSync *out, GError **errp)
{
    for (size_t i = 0; i < G_N_ELEMENTS(sync_names); i++) {
        if (strcmp(name, sync_names[i]) == 0) {
            *out = (BackupSync)i;
            return true;
        }
    }
    g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                "Parameter 'sync' does not accept value '%s'", name);
    return false;
}

const char *backup_sync_str(BackupSync sync)
{
    return sync_names[sync];
}

bool backup_bitmap_mode_parse(const char *name, BitmapSyncMode *out)
{
    for (size_t i = 0; i < G_N_ELEMENTS(bitmap_mode_names); i++) {
        if (strcmp(name, bitmap_mode_names[i]) == 0) {
            *out = (BitmapSyncMode)i;
            return true;
        }
    }
    return false;
}

const char *backup_bitmap_mode_str(BitmapSyncMode mode)
{
    return bitmap_mode_names[mode];
}

/* --- copy-before-write ---------------------------------------------------- */

static void backup_break(BackupJob *b, int error, bool is_read,
                         int64_t offset)
{
    job_lock();
    if (!g_atomic_int_get(&b->broken)) {
        b->cbw_error = error;
        b->cbw_error_is_read = is_read;
        b->cbw_error_offset = offset;
        g_atomic_int_set(&b->broken, 1);
    }
    job_interrupt_locked(&b->common); /* even a paused job must fail now */
    job_unlock();
}

/* Copy-before-write hooks (copy-before-write.h). */
static void backup_before_copy(void *opaque)
{
    BackupJob *b = opaque;

    __atomic_add_fetch(&b->guest_copying, 1, __ATOMIC_RELAXED);
}

static void backup_after_copy(void *opaque)
{
    BackupJob *b = opaque;

    __atomic_store_n(&b->guest_write_ns, job_now_ns(), __ATOMIC_RELAXED);
    __atomic_sub_fetch(&b->guest_copying, 1, __ATOMIC_RELAXED);
}

static void backup_broken(void *opaque, int error, bool is_read,
                          int64_t offset)
{
    backup_break(opaque, error, is_read, offset); /* the write still goes on */
}

static void backup_progress(void *opaque, int64_t bytes)
{
    BackupJob *b = opaque;

    if (b->sync == BACKUP_SYNC_NONE)
        job_progress_increase_remaining(&b->common, bytes);
    job_progress_update(&b->common, bytes);
}

/* --- background copy ------------------------------------------------------ */

/* A guest write waiting for its copies counts as activity however long it
 * waits: else guest writes stuck behind busy background copies (waiting
 * for a CPU) look like a quiet guest, and the background, let loose,
 * starves the guest further (guest 4k QD32 at 0.12x of before, as often
 * as at 0.99x, on a loaded 2-core machine). */
static bool guest_active(BackupJob *b)
{
    int64_t wrote = MAX((b->cbw ? bdrv_cbw_source_written(b->cbw) : 0) * 1000,
                        __atomic_load_n(&b->guest_write_ns,
                                        __ATOMIC_RELAXED));
    int64_t quiet = job_now_ns() - wrote;

    return quiet < GUEST_QUIET_NS ||
           __atomic_load_n(&b->guest_copying, __ATOMIC_RELAXED) > 0;
}

static int64_t thread_cpu_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void refill_credit_locked(BackupJob *b, int64_t now)
{
    b->bg_credit_ns += (now - b->bg_credit_at_ns) * b->background_share / 100;
    b->bg_credit_ns = MIN(b->bg_credit_ns, BG_BURST_NS);
    b->bg_credit_at_ns = now;
}

static void backup_task_run(gpointer data, gpointer user_data)
{
    BackupTask *t = data;
    BackupJob *b = user_data;
    bool is_read = false;
    int64_t copied = 0, cpu0 = thread_cpu_ns(), cpu;
    int ret;

    /* A claimed chunk may hold up a guest write: its copy must not wait
     * at a drained section's entry (the job parks between copies). */
    bdrv_set_thread_drain_exempt(true);
    ret = block_copy_claimed(b->bcs, t->offset, t->bytes, t->budgeted,
                             &is_read, &copied);

    /* Only bytes really copied count against the speed limit. */
    job_ratelimit_refund(&b->common, t->bytes - copied);
    cpu = thread_cpu_ns() - cpu0;
    job_lock();
    b->inflight--;
    __atomic_add_fetch(&b->bg_cpu_ns, cpu, __ATOMIC_RELAXED);
    __atomic_add_fetch(&b->bg_bytes, copied, __ATOMIC_RELAXED);
    /* Copies of a quiet spell are not charged: else their debt would
     * hold the background back long after the guest came back. */
    if (t->budgeted) {
        refill_credit_locked(b, job_now_ns());
        b->bg_credit_ns -= cpu;
        __atomic_add_fetch(&b->bg_yielding_cpu_ns, cpu, __ATOMIC_RELAXED);
    }
    if (ret < 0 && b->task_error == 0) {
        b->task_error = ret;
        b->task_error_is_read = is_read;
        b->task_error_offset = t->offset;
    }
    job_kick_locked(&b->common);
    job_unlock();
    g_free(t);
}

static bool stop_requested_locked(BackupJob *b)
{
    return b->common.cancelled || g_atomic_int_get(&b->broken);
}

/* May another background copy start now?  Else *@wait_ns says how long
 * to wait before asking again (-1: until a copy ends). */
static bool copy_allowed_locked(BackupJob *b, int64_t *wait_ns)
{
    int64_t now = job_now_ns();

    if (!guest_active(b)) {
        *wait_ns = -1;
        return b->inflight < b->max_workers;
    }
    /* The guest may go quiet meanwhile: look again then. */
    *wait_ns = GUEST_QUIET_NS;
    if (b->inflight > 0)
        return false;
    refill_credit_locked(b, now);
    if (b->bg_credit_ns < 0) {
        *wait_ns = -b->bg_credit_ns * 100 / b->background_share;
        return false;
    }
    return true;
}

/* Waits until the coordinator has something to do. */
static BackupStep next_step(BackupJob *b)
{
    BackupStep step;
    int64_t wait_ns;

    job_lock();
    for (;;) {
        if (stop_requested_locked(b)) {
            step = STEP_STOP;
        } else if (b->task_error) {
            step = STEP_ERROR;
        } else if (job_should_pause_locked(&b->common)) {
            step = STEP_PAUSE;
        } else if (job_drain_requested_locked(&b->common)) {
            step = STEP_DRAIN;
        } else if (copy_allowed_locked(b, &wait_ns)) {
            step = STEP_COPY;
        } else {
            job_wait_locked(&b->common, wait_ns);
            continue;
        }
        break;
    }
    job_unlock();
    return step;
}

static void wait_idle(BackupJob *b)
{
    job_lock();
    while (b->inflight > 0)
        job_wait_locked(&b->common, -1);
    job_unlock();
}

/* Applies the error policy to the first failed copy.  Returns the error if
 * the job must fail, else 0 (the chunks are retried later). */
static int handle_task_error(BackupJob *b)
{
    BlockErrorAction action;
    int error;
    bool is_read;

    job_lock();
    error = b->task_error;
    is_read = b->task_error_is_read;
    job_unlock();
    action = job_error_action(&b->common,
                              is_read ? b->on_source_error
                                      : b->on_target_error,
                              is_read, -error);
    if (action == BLOCK_ERROR_ACTION_REPORT)
        return error; /* task_error stays: the job's message names it */
    /* Copies in flight with the failed one likely fail alike: their errors
     * are this one's (one event, one stop); their chunks are retried. */
    wait_idle(b);
    job_lock();
    b->task_error = 0;
    job_unlock();
    return 0;
}

/* Waits out the speed limit; false if a stop or pause came meanwhile. */
static bool rate_limit(BackupJob *b, int64_t bytes)
{
    int64_t delay;

    while ((delay = job_ratelimit_delay_ns(&b->common, bytes)) > 0) {
        job_sleep_ns(&b->common, delay);
        if (next_step(b) != STEP_COPY)
            return false;
    }
    return true;
}

static int64_t chunk_limit(BackupJob *b)
{
    int64_t cluster = block_copy_cluster_size(b->bcs);
    int64_t max = b->max_chunk;
    int64_t speed;

    job_lock();
    speed = b->common.speed;
    job_unlock();

    if (speed > 0)
        return MAX(cluster, MIN(max, speed / RATE_CHUNK_DIVISOR));
    return MAX(cluster, max);
}

static void submit(BackupJob *b, GThreadPool *pool, int64_t *from,
                   int64_t limit)
{
    BackupTask *t = g_new0(BackupTask, 1);

    if (!block_copy_claim(b->bcs, *from, limit, &t->offset, &t->bytes)) {
        job_ratelimit_refund(&b->common, limit);
        *from = INT64_MAX;
        g_free(t);
        return;
    }
    job_ratelimit_refund(&b->common, limit - t->bytes);
    *from = t->offset + t->bytes;
    t->budgeted = guest_active(b);
    job_lock();
    b->inflight++;
    job_unlock();
    if (t->budgeted)
        backup_task_run(t, b); /* the one copy in flight: no thread hop */
    else
        g_thread_pool_push(pool, t, NULL);
}

/* One pass over the disk.  Returns 0 when everything is copied, 1 when
 * something is left (failed and ignored, or busy elsewhere), or -errno. */
static int backup_pass(BackupJob *b, GThreadPool *pool)
{
    int64_t from = 0;
    int ret = 0;

    while (ret == 0 && from < INT64_MAX) {
        int64_t limit;
        switch (next_step(b)) {
        case STEP_STOP:
            from = INT64_MAX;
            break;
        case STEP_ERROR:
            ret = handle_task_error(b);
            break;
        case STEP_PAUSE:
            wait_idle(b);
            job_pause_point(&b->common);
            break;
        case STEP_DRAIN:
            wait_idle(b);
            job_drain_point(&b->common);
            break;
        case STEP_COPY:
            limit = chunk_limit(b);
            if (rate_limit(b, limit))
                submit(b, pool, &from, limit);
            break;
        }
    }
    wait_idle(b);
    if (ret == 0 && b->task_error)
        ret = handle_task_error(b);
    if (ret == 0 && block_copy_remaining(b->bcs) > 0)
        ret = 1;
    return ret;
}

static int backup_copy_all(BackupJob *b)
{
    /* Not exclusive: threads start as tasks come and go back to glib's
     * shared idle set (hundreds of jobs held thousands of idle ones). */
    GThreadPool *pool = g_thread_pool_new(backup_task_run, b,
                                          b->max_workers, FALSE, NULL);
    int ret;

    for (;;) {
        ret = backup_pass(b, pool);
        if (ret <= 0 || next_step(b) == STEP_STOP)
            break;
        job_sleep_ns(&b->common, RETRY_DELAY_NS);
    }
    g_thread_pool_free(pool, FALSE, TRUE);
    return ret < 0 ? ret : 0;
}

/* sync=none: nothing to copy in the background; the notifier does it all
 * until the job is cancelled. */
static void backup_wait_cancel(BackupJob *b)
{
    for (;;) {
        BackupStep step = next_step(b);
        if (step == STEP_STOP)
            return;
        if (step == STEP_PAUSE)
            job_pause_point(&b->common);
        else if (step == STEP_DRAIN)
            job_drain_point(&b->common);
        else
            job_sleep_ns(&b->common, -1);
    }
}

static int backup_fail(BackupJob *b, int ret, GError **errp)
{
    g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                "Backup of '%s' failed %s '%s' at offset %" G_GINT64_FORMAT
                ": %s", bdrv_node_name(b->source),
                b->task_error_is_read ? "reading" : "writing",
                bdrv_node_name(b->task_error_is_read ? b->source : b->target),
                b->task_error_offset, g_strerror(-ret));
    return ret;
}

static int backup_run(Job *job, GError **errp)
{
    BackupJob *b = (BackupJob *)job;
    int ret = 0;

    if (b->sync == BACKUP_SYNC_NONE)
        backup_wait_cancel(b);
    else
        ret = backup_copy_all(b);
    if (g_atomic_int_get(&b->broken) && b->cbw_error == -EDQUOT) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "Copy-before-write to '%s' at offset %" G_GINT64_FORMAT
                    " found the fleecing store full (x-max-store-bytes "
                    "%" G_GINT64_FORMAT "); the point in time is lost",
                    bdrv_node_name(b->target), b->cbw_error_offset,
                    b->max_store_bytes);
        return -ENOSPC;
    }
    if (g_atomic_int_get(&b->broken)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "Copy-before-write failed %s '%s' at offset %"
                    G_GINT64_FORMAT ": %s; the point in time is lost",
                    b->cbw_error_is_read ? "reading" : "writing",
                    bdrv_node_name(b->cbw_error_is_read ? b->source
                                                        : b->target),
                    b->cbw_error_offset, g_strerror(-b->cbw_error));
        return b->cbw_error;
    }
    if (ret < 0)
        return backup_fail(b, ret, errp);
    if (!job_is_cancelled(job) && (ret = bdrv_flush(b->target)) < 0)
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "Could not flush the backup target '%s': %s",
                    bdrv_node_name(b->target), g_strerror(-ret));
    return ret;
}

/* --- dirty bitmap (sync=bitmap, bitmap-mode) ----------------------------- */

/* The checks of QEMU's backup_job_create. */
static bool check_bitmap(const BackupOptions *opts, BlockNode *source,
                         GError **errp)
{
    BdrvDirtyBitmap *bm = opts->bitmap;

    if (!bm) {
        if (opts->sync != BACKUP_SYNC_BITMAP &&
            opts->sync != BACKUP_SYNC_INCREMENTAL)
            return true;
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "must provide a valid bitmap name for '%s' sync mode",
                    backup_sync_str(opts->sync));
        return false;
    }
    if (bdrv_dirty_bitmap_node(bm) != source) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Bitmap '%s' is not a bitmap of the source '%s'",
                    bdrv_dirty_bitmap_name(bm), bdrv_node_name(source));
        return false;
    }
    if (opts->sync == BACKUP_SYNC_NONE) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "sync mode 'none' does not produce meaningful bitmap "
                    "outputs");
        return false;
    }
    if (!bdrv_dirty_bitmap_check(bm, false, errp))
        return false;
    /* A bitmap the job will change must be writable. */
    if (opts->bitmap_mode != BITMAP_SYNC_NEVER &&
        bdrv_dirty_bitmap_persistent(bm) && bdrv_is_read_only(source)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_READ_ONLY,
                    "Bitmap '%s' is readonly and cannot be modified",
                    bdrv_dirty_bitmap_name(bm));
        return false;
    }
    return true;
}

static bool split_bitmap(BackupJob *b, BdrvDirtyBitmap *bm, GError **errp)
{
    g_autofree char *why = g_strdup_printf("backup job '%s'", b->common.id);

    if (!bdrv_dirty_bitmap_create_successor(bm, why, errp))
        return false;
    b->sync_bitmap = bm;
    return true;
}

/* sync=bitmap, just after the point in time: only the chunks dirty in the
 * bitmap or its successor are to be copied. */
static void limit_to_bitmap(BackupJob *b)
{
    int64_t left_out = block_copy_limit_to_dirty(
        b->bcs, b->sync_bitmap, bdrv_dirty_bitmap_successor(b->sync_bitmap));

    job_progress_set_total(&b->common, bdrv_getlength(b->source) - left_out);
}

/* bitmap-mode=always after a failure or cancel: what was copied is clean.
 * With sync=bitmap the whole granules inside copied chunks are cleared (a
 * granule partly copied stays dirty); with full and top the bitmap becomes
 * what was not copied. */
static void forget_copied(BackupJob *b, BdrvDirtyBitmap *bm)
{
    int64_t len = bdrv_getlength(b->source);
    int64_t gran = bdrv_dirty_bitmap_granularity(bm);
    int64_t pos = 0, off, n;

    if (b->sync != BACKUP_SYNC_BITMAP) {
        bdrv_dirty_bitmap_clear(bm);
        for (; block_copy_next_pending(b->bcs, pos, &off, &n); pos = off + n)
            bdrv_dirty_bitmap_set(bm, off, n, true);
        return;
    }
    for (;;) {
        bool more = block_copy_next_pending(b->bcs, pos, &off, &n);
        int64_t end = more ? off : len;    /* [pos, end) is done */
        int64_t first = ROUND_UP(pos, gran);
        int64_t last = end == len ? len : end / gran * gran;

        if (last > first)
            bdrv_dirty_bitmap_set(bm, first, last - first, false);
        if (!more)
            break;
        pos = off + n;
    }
}

/* Ends the split as the bitmap-mode says (see backup.h). */
static void finish_bitmap(BackupJob *b, bool success)
{
    BdrvDirtyBitmap *bm = g_steal_pointer(&b->sync_bitmap);

    if (!bm)
        return;
    if (success && b->bitmap_mode != BITMAP_SYNC_NEVER) {
        bdrv_dirty_bitmap_abdicate(bm);
        return;
    }
    if (!success && b->bitmap_mode == BITMAP_SYNC_ALWAYS)
        forget_copied(b, bm);
    bdrv_dirty_bitmap_reclaim(bm);
}

/* --- life cycle --------------------------------------------------------- */

static void backup_commit(Job *job)
{
    finish_bitmap((BackupJob *)job, true);
}

static void backup_abort(Job *job)
{
    finish_bitmap((BackupJob *)job, false);
}

static void backup_clean(Job *job)
{
    BackupJob *b = (BackupJob *)job;
    BdrvDrain *drain = b->source ? bdrv_drained_begin(b->source) : NULL;

    /* In a drained section of the source, the job's graph change: no
     * guest write is in flight while the copy-before-write node goes (and
     * with it the copy engine) and the job lets go of its nodes. */
    b->bcs = NULL;
    g_mutex_lock(&b->stats_lock);
    if (b->stats_cbw)
        b->has_final_stats = bdrv_cbw_stats(b->stats_cbw, &b->final_stats);
    b->stats_cbw = NULL;
    g_mutex_unlock(&b->stats_lock);
    if (b->cbw)
        bdrv_cbw_deactivate(b->cbw);
    g_clear_pointer(&b->cbw, bdrv_unref);
    if (b->source)
        bdrv_op_unblock_all(b->source, b);
    if (b->target)
        bdrv_op_unblock_all(b->target, b);
    g_clear_pointer(&b->source_edge, bdrv_user_detach);
    g_clear_pointer(&b->target_edge, bdrv_user_detach);
    if (drain)
        bdrv_drained_end(drain);
    g_clear_pointer(&b->source, bdrv_unref);
    g_clear_pointer(&b->target, bdrv_unref);
}

static bool backup_cbw_stats(Job *job, BdrvCbwStats *st)
{
    BackupJob *b = (BackupJob *)job;
    bool ok;

    g_mutex_lock(&b->stats_lock);
    if (b->stats_cbw) {
        ok = bdrv_cbw_stats(b->stats_cbw, st);
    } else {
        ok = b->has_final_stats;
        *st = b->final_stats;
    }
    g_mutex_unlock(&b->stats_lock);
    if (ok) {
        /* Atomics, not the job lock: events call this under it. */
        st->has_background = true;
        st->background_cpu_ns = __atomic_load_n(&b->bg_cpu_ns,
                                                __ATOMIC_RELAXED);
        st->background_bytes = __atomic_load_n(&b->bg_bytes,
                                               __ATOMIC_RELAXED);
        st->background_yielding_cpu_ns =
            __atomic_load_n(&b->bg_yielding_cpu_ns, __ATOMIC_RELAXED);
    }
    return ok;
}

static void backup_free(Job *job)
{
    g_mutex_clear(&((BackupJob *)job)->stats_lock);
}

static const JobDriver backup_driver = {
    .type = "backup",
    .instance_size = sizeof(BackupJob),
    .block_job = true,
    .drains_itself = true,
    .run = backup_run,
    .commit = backup_commit,
    .abort = backup_abort,
    .clean = backup_clean,
    .cbw_stats = backup_cbw_stats,
    .free = backup_free,
};

/* What would make the target not a copy of the source: the target being
 * read by the source (writing it would change the source), or both made of
 * one node's data (the job would write into the source).  A target may
 * read the source through a backing link: that is fleecing. */
static bool check_graph(BlockNode *source, BlockNode *target, GError **errp)
{
    BlockNode *common;

    if (bdrv_reaches(source, target, true)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Cannot back up node '%s' into '%s': the source reads "
                    "the target", bdrv_node_name(source),
                    bdrv_node_name(target));
        return false;
    }
    common = bdrv_common_storage(source, target);
    if (!common && bdrv_filename(source)[0] == '/' &&
        strcmp(bdrv_filename(source), bdrv_filename(target)) == 0)
        common = source; /* one image file, opened twice */
    if (common) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Cannot back up node '%s' into '%s': both store their "
                    "data in '%s'", bdrv_node_name(source),
                    bdrv_node_name(target), bdrv_filename(common));
        return false;
    }
    return true;
}

static bool check_nodes(BlockNode *source, BlockNode *target,
                        GError **errp)
{
    g_autofree char *writer = NULL;

    if (source == target) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Source and target cannot be the same");
        return false;
    }
    if (bdrv_op_is_blocked(source, BDRV_OP_BACKUP_SOURCE, errp) ||
        bdrv_op_is_blocked(target, BDRV_OP_BACKUP_TARGET, errp))
        return false;
    if (bdrv_is_read_only(target)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_READ_ONLY,
                    "Cannot write to the backup target '%s': it is "
                    "read-only", bdrv_node_name(target));
        return false;
    }
    if (!check_graph(source, target, errp))
        return false;
    /* Others writing the target would mix their data into the backup.
     * (Write is still shared at the permission level: a fleecing
     * target's backing, the live source, is written all the time.) */
    writer = bdrv_find_writer(target, NULL);
    if (writer) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_BUSY,
                    "Node '%s' is busy: written by %s; it cannot be a "
                    "backup target", bdrv_node_name(target), writer);
        return false;
    }
    if (bdrv_getlength(source) != bdrv_getlength(target)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Source and target image have different sizes");
        return false;
    }
    return true;
}

/* The job reads the source and writes the target; nobody may resize
 * either (the sizes were checked once). */
static bool attach_nodes(BackupJob *b, BlockNode *source, BlockNode *target,
                         GError **errp)
{
    if (!job_attach_copy_nodes(&b->common, source, target,
                               &b->source_edge, &b->target_edge, errp))
        return false;
    /* Our own references: another job's switch may move the edges to
     * other nodes, and this job still reads, writes and unblocks these. */
    bdrv_ref(source);
    bdrv_ref(target);
    b->source = source;
    b->target = target;
    return true;
}

/* As in QEMU, the target is the job's alone; the source may have more
 * backups (each with its copy-before-write) but cannot become a target. */
static void block_ops(BackupJob *b)
{
    static const BdrvOpType source_ops[] = {
        BDRV_OP_BACKUP_TARGET, BDRV_OP_DELETE, BDRV_OP_RESIZE,
    };
    g_autofree char *as_source = g_strdup_printf(
        "in use by backup job '%s' as its source", b->common.id);
    g_autofree char *as_target = g_strdup_printf(
        "in use by backup job '%s' as its target", b->common.id);

    for (size_t i = 0; i < G_N_ELEMENTS(source_ops); i++)
        bdrv_op_block(b->source, source_ops[i], b, as_source);
    /* Only the job may write the target; it may be read (fleecing). */
    for (int op = 0; op < BDRV_OP__MAX; op++)
        bdrv_op_block(b->target, op, b, as_target);
}

static void backup_init(BackupJob *b, BlockNode *source,
                        const BackupOptions *opts)
{
    b->sync = opts->sync;
    /* Without a backing file, "top" is the whole disk, as in QEMU. */
    if (b->sync == BACKUP_SYNC_TOP && !bdrv_child(source, "backing"))
        b->sync = BACKUP_SYNC_FULL;
    b->bitmap_mode = opts->bitmap_mode;
    if (b->sync == BACKUP_SYNC_INCREMENTAL) {
        b->sync = BACKUP_SYNC_BITMAP;
        b->bitmap_mode = BITMAP_SYNC_ON_SUCCESS;
    }
    b->on_source_error = opts->on_source_error;
    b->on_target_error = opts->on_target_error;
    b->max_workers = opts->max_workers > 0 ? opts->max_workers
                                           : DEFAULT_WORKERS;
    b->max_chunk = opts->max_chunk > 0 ? opts->max_chunk : DEFAULT_CHUNK;
    b->max_store_bytes = opts->max_store_bytes;
    b->background_share = opts->background_share > 0
                          ? opts->background_share : DEFAULT_BACKGROUND_SHARE;
    job_lock();
    b->common.speed = opts->speed;
    job_unlock();
    block_ops(b);
}

/* The copy-before-write filter node: the point in time from now on.  A
 * failed copy-before-write lets the guest's write go on and fails the job
 * (break-snapshot), as QEMU's backup does. */
static bool insert_filter(BackupJob *b, const char *node_name, GError **errp)
{
    const CbwConfig cfg = {
        .skip_unallocated = b->sync == BACKUP_SYNC_TOP,
        .break_snapshot = true,
        .max_store_bytes = b->max_store_bytes,
        .progress = backup_progress,
        .before_copy = backup_before_copy,
        .after_copy = backup_after_copy,
        .broken = backup_broken,
        .opaque = b,
    };

    b->cbw = bdrv_cbw_append(b->source, b->target, node_name, &cfg, errp);
    if (!b->cbw)
        return false;
    b->bcs = bdrv_cbw_copy_state(b->cbw);
    g_mutex_lock(&b->stats_lock);
    b->stats_cbw = b->cbw;
    g_mutex_unlock(&b->stats_lock);
    return true;
}

Job *backup_job_create(const char *id, BlockNode *source, BlockNode *target,
                       const BackupOptions *opts, GError **errp)
{
    BackupJob *b;

    if (opts->speed < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Invalid parameter 'speed'");
        return NULL;
    }
    if (opts->max_store_bytes < 0 ||
        (opts->max_store_bytes && opts->sync != BACKUP_SYNC_NONE)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "x-max-store-bytes must be positive and needs sync "
                    "mode 'none' (a fleecing store)");
        return NULL;
    }
    if (!check_nodes(source, target, errp) ||
        !check_bitmap(opts, source, errp))
        return NULL;
    b = job_create(id, &backup_driver, opts->job_flags, errp);
    if (!b)
        return NULL;
    g_mutex_init(&b->stats_lock);
    if (!attach_nodes(b, source, target, errp)) {
        job_cancel_created(&b->common);
        return NULL;
    }
    backup_init(b, source, opts);
    if (opts->bitmap && !split_bitmap(b, opts->bitmap, errp)) {
        job_cancel_created(&b->common);
        return NULL;
    }
    if (b->sync == BACKUP_SYNC_FULL || b->sync == BACKUP_SYNC_TOP)
        job_progress_set_total(&b->common, bdrv_getlength(source));
    /* From here on the target receives the point in time. */
    if (!insert_filter(b, opts->filter_node_name, errp)) {
        job_cancel_created(&b->common);
        return NULL;
    }
    if (b->sync == BACKUP_SYNC_BITMAP)
        limit_to_bitmap(b);
    return &b->common;
}
