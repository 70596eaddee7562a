/*
 * job.c - the job engine: QEMU's job state machine on threads.
 *
 * Design notes.
 *
 * One lock, job_mutex, guards the job list and every job's state (status,
 * pause count, cancel flags, result, speed).  It is never held across I/O
 * or driver callbacks other than kick(); drivers may take it (job_lock) to
 * wait for their own state with job_wait_locked.  Progress counters are
 * atomics, so copy threads update them without the lock.
 *
 * Each started job has a thread that calls the driver's run() and then
 * completes the job: success goes waiting -> pending -> (finalize) ->
 * concluded, failure and cancel go aborting -> concluded; with auto-dismiss
 * the job then goes to null and leaves the list.  Finalization (commit or
 * abort, then clean) runs without the lock, on the job's thread, or on the
 * thread that calls job-finalize or cancels a pending job; the finalizing
 * flag keeps it to one at a time.
 *
 * Events are queued under job_mutex, so their order is the order of the
 * state changes, and delivered to the hook after the lock is dropped, under
 * events_lock, by whichever thread unlocks first.  A verb therefore returns
 * only after its events went out, and a slow QMP client never stalls a
 * thread that holds job_mutex.
 */
#include "jobs/job.h"
#include "block/block.h"

#include <errno.h>
#include <string.h>

/* QEMU's JobSTT: may a job go from the row's status to the column's?
 *                   U, C, R, P, Y, S, W, D, X, E, N */
static const bool job_stt[JOB_STATUS__MAX][JOB_STATUS__MAX] = {
    [JOB_STATUS_UNDEFINED] = { 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0 },
    [JOB_STATUS_CREATED]   = { 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1 },
    [JOB_STATUS_RUNNING]   = { 0, 0, 0, 1, 1, 0, 1, 0, 1, 0, 0 },
    [JOB_STATUS_PAUSED]    = { 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0 },
    [JOB_STATUS_READY]     = { 0, 0, 0, 0, 0, 1, 1, 0, 1, 0, 0 },
    [JOB_STATUS_STANDBY]   = { 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0 },
    [JOB_STATUS_WAITING]   = { 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0 },
    [JOB_STATUS_PENDING]   = { 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0 },
    [JOB_STATUS_ABORTING]  = { 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0 },
    [JOB_STATUS_CONCLUDED] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 },
    [JOB_STATUS_NULL]      = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 },
};

/* QEMU's JobVerbTable: in which statuses is a verb accepted?
 *                   U, C, R, P, Y, S, W, D, X, E, N */
static const bool job_verb_table[JOB_VERB__MAX][JOB_STATUS__MAX] = {
    [JOB_VERB_CANCEL]    = { 0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0 },
    [JOB_VERB_PAUSE]     = { 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0 },
    [JOB_VERB_RESUME]    = { 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0 },
    [JOB_VERB_SET_SPEED] = { 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0 },
    [JOB_VERB_COMPLETE]  = { 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0 },
    [JOB_VERB_DISMISS]   = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0 },
    [JOB_VERB_FINALIZE]  = { 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0 },
};

static const char *const status_names[JOB_STATUS__MAX] = {
    "undefined", "created", "running", "paused", "ready", "standby",
    "waiting", "pending", "aborting", "concluded", "null",
};

static const char *const verb_names[JOB_VERB__MAX] = {
    "cancel", "pause", "resume", "set-speed", "complete", "dismiss",
    "finalize",
};

static GMutex job_mutex;
static GCond all_cond;       /* broadcast on every status change */
static GList *jobs;          /* of Job *, newest first (as QEMU), each ref'd */
static int live_threads;     /* job threads that have not ended yet */

typedef struct QueuedEvent {
    JobEvent ev;
    char *id;
    char *error;
} QueuedEvent;

static GMutex events_lock;   /* serialises delivery; taken after job_mutex */
static GQueue event_queue = G_QUEUE_INIT; /* guarded by job_mutex */
static JobEventFunc event_hook;

static void finalize_locked(Job *job);
static void cancel_locked(Job *job, bool force);

const char *job_status_str(JobStatus s)
{
    return s < JOB_STATUS__MAX ? status_names[s] : "undefined";
}

const char *job_verb_str(JobVerb v)
{
    return v < JOB_VERB__MAX ? verb_names[v] : "unknown";
}

const char *block_error_action_str(BlockErrorAction a)
{
    return a == BLOCK_ERROR_ACTION_IGNORE ? "ignore"
           : a == BLOCK_ERROR_ACTION_STOP ? "stop"
                                          : "report";
}

const char *job_io_status_str(JobIoStatus s)
{
    return s == JOB_IO_STATUS_FAILED    ? "failed"
           : s == JOB_IO_STATUS_NOSPACE ? "nospace"
                                        : "ok";
}

bool blockdev_on_error_parse(const char *name, BlockdevOnError *out)
{
    static const char *const names[] = { "report", "ignore", "enospc",
                                         "stop" };

    for (size_t i = 0; i < G_N_ELEMENTS(names); i++) {
        if (strcmp(name, names[i]) == 0) {
            *out = (BlockdevOnError)i;
            return true;
        }
    }
    return false;
}

int64_t job_now_ns(void)
{
    return g_get_monotonic_time() * 1000;
}

/* --- events ------------------------------------------------------------ */

void job_set_event_hook(JobEventFunc fn)
{
    g_mutex_lock(&events_lock);
    event_hook = fn;
    g_mutex_unlock(&events_lock);
}

static QueuedEvent *event_new_locked(Job *job, JobEventKind kind)
{
    QueuedEvent *q = g_new0(QueuedEvent, 1);

    q->id = g_strdup(job->id);
    q->ev = (JobEvent){
        .kind = kind,
        .id = q->id,
        .type = job->driver->type,
        .block_job = job->driver->block_job,
        .status = job->status,
        .len = __atomic_load_n(&job->progress_total, __ATOMIC_RELAXED),
        .offset = __atomic_load_n(&job->progress_current, __ATOMIC_RELAXED),
        .speed = job->speed,
    };
    return q;
}

static void event_queue_locked(QueuedEvent *q)
{
    if (q->ev.kind != JOB_EVENT_STATUS_CHANGE && !q->ev.block_job) {
        g_free(q->id);
        g_free(q->error);
        g_free(q);
        return; /* the BLOCK_JOB_* events are for block jobs only */
    }
    g_queue_push_tail(&event_queue, q);
}

static void queue_simple_event_locked(Job *job, JobEventKind kind)
{
    event_queue_locked(event_new_locked(job, kind));
}

/* Delivers what is queued, in order; called without job_mutex. */
static void flush_events(void)
{
    QueuedEvent *q;

    g_mutex_lock(&events_lock);
    for (;;) {
        g_mutex_lock(&job_mutex);
        q = g_queue_pop_head(&event_queue);
        g_mutex_unlock(&job_mutex);
        if (!q)
            break;
        if (event_hook)
            event_hook(&q->ev);
        g_free(q->id);
        g_free(q->error);
        g_free(q);
    }
    g_mutex_unlock(&events_lock);
}

void job_lock(void)
{
    g_mutex_lock(&job_mutex);
}

void job_unlock(void)
{
    bool pending = !g_queue_is_empty(&event_queue);

    g_mutex_unlock(&job_mutex);
    if (pending)
        flush_events();
}

/* --- states and verbs ---------------------------------------------------- */

static void transition_locked(Job *job, JobStatus s1)
{
    JobStatus s0 = job->status;

    g_assert(job_stt[s0][s1]);
    job->status = s1;
    if (s1 != s0)
        queue_simple_event_locked(job, JOB_EVENT_STATUS_CHANGE);
    g_cond_broadcast(&all_cond);
}

static bool apply_verb_locked(Job *job, JobVerb verb, GError **errp)
{
    if (job_verb_table[verb][job->status])
        return true;
    g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                "Job '%s' in state '%s' cannot accept command verb '%s'",
                job->id, job_status_str(job->status), job_verb_str(verb));
    return false;
}

/* Before a wait: events queued under the lock go out first (nobody would
 * send them while this thread sleeps holding nothing).  True if the lock
 * was dropped, so that the caller looks at the state again. */
static bool flush_before_wait_locked(void)
{
    if (g_queue_is_empty(&event_queue))
        return false;
    g_mutex_unlock(&job_mutex);
    flush_events();
    g_mutex_lock(&job_mutex);
    return true;
}

void job_kick_locked(Job *job)
{
    g_cond_broadcast(&job->cond);
    if (job->driver->kick)
        job->driver->kick(job);
}

void job_wait_locked(Job *job, int64_t ns)
{
    if (flush_before_wait_locked())
        return; /* as a spurious wake-up: callers wait in a loop */
    if (ns < 0)
        g_cond_wait(&job->cond, &job_mutex);
    else
        g_cond_wait_until(&job->cond, &job_mutex,
                          g_get_monotonic_time() + ns / 1000 + 1);
}

bool job_should_pause_locked(Job *job)
{
    return job->pause_count > 0 && !job->cancelled && !job->interrupted;
}

void job_interrupt_locked(Job *job)
{
    job->interrupted = true;
    job_kick_locked(job);
}

/* --- lifetime ------------------------------------------------------------ */

static Job *find_locked(const char *id)
{
    for (GList *l = jobs; l; l = l->next) {
        Job *job = l->data;
        if (strcmp(job->id, id) == 0)
            return job;
    }
    return NULL;
}

void *job_create(const char *id, const JobDriver *driver, int flags,
                 GError **errp)
{
    Job *job;

    if (!bdrv_id_wellformed(id)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Invalid job ID '%s'", id);
        return NULL;
    }
    g_assert(driver->instance_size >= sizeof(Job));
    job = g_malloc0(driver->instance_size);
    job->id = g_strdup(id);
    job->driver = driver;
    job->refcnt = 1; /* the list's */
    job->pause_count = 1; /* until job_start, as in QEMU */
    job->auto_finalize = !(flags & JOB_MANUAL_FINALIZE);
    job->auto_dismiss = !(flags & JOB_MANUAL_DISMISS);
    g_cond_init(&job->cond);

    job_lock();
    if (find_locked(id)) {
        job_unlock();
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_EXISTS,
                    "Job ID '%s' already in use", id);
        g_cond_clear(&job->cond);
        g_free(job->id);
        g_free(job);
        return NULL;
    }
    jobs = g_list_prepend(jobs, job);
    transition_locked(job, JOB_STATUS_CREATED);
    job_unlock();
    return job;
}

struct JobTxn {
    GList *jobs;     /* guarded by the job lock */
    int refcnt;      /* its jobs and its creator */
};

static void txn_unref_locked(JobTxn *txn)
{
    if (txn && --txn->refcnt == 0) {
        g_list_free(txn->jobs);
        g_free(txn);
    }
}

JobTxn *job_txn_new(void)
{
    JobTxn *txn = g_new0(JobTxn, 1);

    txn->refcnt = 1;
    return txn;
}

void job_txn_add(JobTxn *txn, Job *job)
{
    job_lock();
    g_assert(!job->txn && !job->started);
    job->txn = txn;
    txn->refcnt++;
    txn->jobs = g_list_append(txn->jobs, job);
    job_unlock();
}

void job_txn_unref(JobTxn *txn)
{
    job_lock();
    txn_unref_locked(txn);
    job_unlock();
}

static void unref_locked(Job *job)
{
    g_assert(job->refcnt > 0);
    if (--job->refcnt > 0)
        return;
    g_assert(job->status == JOB_STATUS_NULL);
    if (job->txn) {
        job->txn->jobs = g_list_remove(job->txn->jobs, job);
        txn_unref_locked(job->txn);
    }
    if (job->driver->free)
        job->driver->free(job);
    g_clear_error(&job->err);
    g_cond_clear(&job->cond);
    g_free(job->id);
    g_free(job);
}

void job_ref(Job *job)
{
    job_lock();
    job->refcnt++;
    job_unlock();
}

void job_unref(Job *job)
{
    job_lock();
    unref_locked(job);
    job_unlock();
}

bool job_cbw_stats(Job *job, BdrvCbwStats *st)
{
    return job->driver->cbw_stats && job->driver->cbw_stats(job, st);
}

Job *job_get(const char *id)
{
    Job *job;

    job_lock();
    job = find_locked(id);
    if (job)
        job->refcnt++;
    job_unlock();
    return job;
}

static void do_dismiss_locked(Job *job)
{
    transition_locked(job, JOB_STATUS_NULL);
    jobs = g_list_remove(jobs, job);
    unref_locked(job);
}

static void conclude_locked(Job *job)
{
    transition_locked(job, JOB_STATUS_CONCLUDED);
    if (job->auto_dismiss || !job->started)
        do_dismiss_locked(job);
}

/* A failure (or a cancel) moves the job to "aborting", as QEMU's
 * job_update_rc. */
static void update_rc_locked(Job *job)
{
    if (job->ret == 0 && job->cancelled && job->force_cancel)
        job->ret = -ECANCELED;
    if (job->ret == 0)
        return;
    if (!job->err)
        job->err = g_error_new(BDRV_ERROR, BDRV_ERROR_FAILED, "%s",
                               g_strerror(-job->ret));
    if (job->status != JOB_STATUS_ABORTING)
        transition_locked(job, JOB_STATUS_ABORTING);
}

static void finalize_event_locked(Job *job)
{
    QueuedEvent *q;

    if (!job->started)
        return; /* as QEMU: no completion event for a job never started */
    q = event_new_locked(job, job->cancelled && job->force_cancel
                                  ? JOB_EVENT_CANCELLED
                                  : JOB_EVENT_COMPLETED);
    if (!(job->cancelled && job->force_cancel) && job->ret < 0) {
        q->error = g_strdup(job->err->message);
        q->ev.error = q->error;
    }
    q->ev.has_cbw = job_cbw_stats(job, &q->ev.cbw);
    event_queue_locked(q);
}

/* Commit or abort, clean, then conclude.  The callbacks run unlocked: they
 * may wait for I/O that updates the job's progress. */
static void finalize_locked(Job *job)
{
    job->finalizing = true;
    job->refcnt++;
    update_rc_locked(job);
    job_unlock();
    if (job->ret == 0 && job->driver->commit)
        job->driver->commit(job);
    else if (job->ret != 0 && job->driver->abort)
        job->driver->abort(job);
    if (job->driver->clean)
        job->driver->clean(job);
    job_lock();
    finalize_event_locked(job);
    job->finalizing = false;
    conclude_locked(job);
    unref_locked(job);
}

/* The jobs of @job's group (or @job alone), each with a reference that
 * the caller drops: finalizing drops the lock, the list may change. */
static GList *group_locked(Job *job)
{
    GList *group = job->txn ? g_list_copy(job->txn->jobs)
                           : g_list_prepend(NULL, job);

    for (GList *l = group; l; l = l->next)
        ((Job *)l->data)->refcnt++;
    return group;
}

static void group_free_locked(GList *group)
{
    for (GList *l = group; l; l = l->next)
        unref_locked(l->data);
    g_list_free(group);
}

/* A job of a group failed: the others are cancelled, those that already
 * succeeded (waiting or pending) abort now, and so does @failed. */
static void group_abort_locked(Job *failed)
{
    GList *group = group_locked(failed);

    for (GList *l = group; l; l = l->next) {
        Job *job = l->data;
        if (job == failed || job->finalizing ||
            job->status == JOB_STATUS_CONCLUDED ||
            job->status == JOB_STATUS_NULL)
            continue;
        if (job->status == JOB_STATUS_WAITING ||
            job->status == JOB_STATUS_PENDING) {
            job->cancelled = job->force_cancel = true;
            finalize_locked(job);
        } else if (!job->cancelled) {
            cancel_locked(job, true); /* it aborts when it completes */
        }
    }
    finalize_locked(failed);
    group_free_locked(group);
}

static bool group_all_waiting_locked(Job *job)
{
    for (GList *l = job->txn ? job->txn->jobs : NULL; l; l = l->next)
        if (((Job *)l->data)->status != JOB_STATUS_WAITING)
            return false;
    return true;
}

static void completed_locked(Job *job)
{
    GList *group;
    bool auto_finalize = true;

    update_rc_locked(job);
    if (job->ret != 0) {
        if (job->txn)
            group_abort_locked(job);
        else
            finalize_locked(job);
        return;
    }
    transition_locked(job, JOB_STATUS_WAITING);
    if (!group_all_waiting_locked(job))
        return; /* the last of the group to succeed goes on */
    group = group_locked(job);
    for (GList *l = group; l; l = l->next) {
        transition_locked(l->data, JOB_STATUS_PENDING);
        auto_finalize &= ((Job *)l->data)->auto_finalize;
    }
    for (GList *l = group; l; l = l->next) {
        if (auto_finalize)
            finalize_locked(l->data);
        else
            queue_simple_event_locked(l->data, JOB_EVENT_PENDING);
    }
    group_free_locked(group);
}

static gpointer job_thread(gpointer opaque)
{
    Job *job = opaque;
    GError *err = NULL;
    int ret;

    if (job->driver->drains_itself)
        bdrv_set_thread_drain_exempt(true);
    job_pause_point(job);
    job_lock();
    job->in_run = true;
    job->thread = g_thread_self();
    job_unlock();
    ret = job->driver->run(job, &err);
    job_lock();
    job->in_run = false;
    job->thread = NULL;
    job->ret = ret;
    if (ret < 0 && err) {
        g_clear_error(&job->err);
        job->err = err;
    } else {
        g_clear_error(&err);
    }
    completed_locked(job);
    unref_locked(job); /* the thread's */
    live_threads--;
    g_cond_broadcast(&all_cond);
    job_unlock();
    return NULL;
}

void job_start(Job *job)
{
    g_autofree char *name = g_strdup_printf("job-%s", job->id);

    job_lock();
    g_assert(!job->started && job->status == JOB_STATUS_CREATED);
    job->started = true;
    job->pause_count--;
    job->refcnt++; /* the thread's */
    live_threads++;
    transition_locked(job, JOB_STATUS_RUNNING);
    job_unlock();
    g_thread_unref(g_thread_new(name, job_thread, job));
}

static void cancel_locked(Job *job, bool force)
{
    if (job->user_paused) {
        job->user_paused = false;
        job->iostatus = JOB_IO_STATUS_OK;
        job->pause_count--;
    }
    if (job->driver->cancel)
        force = job->driver->cancel(job, force);
    else
        force = true;
    job->cancelled = true;
    job->force_cancel |= force;
    if (!job->started) {
        job->ret = -ECANCELED;
        finalize_locked(job);
    } else if (job->status == JOB_STATUS_PENDING && !job->finalizing) {
        if (job->txn)
            group_abort_locked(job);
        else
            finalize_locked(job);
    } else if (job->status == JOB_STATUS_WAITING && !job->finalizing) {
        group_abort_locked(job); /* its group goes with it */
    } else {
        job_kick_locked(job);
    }
}

void job_early_fail(Job *job)
{
    job_lock();
    g_assert(!job->started && job->status == JOB_STATUS_CREATED);
    job->cancelled = true;
    job->force_cancel = true;
    job->ret = -ECANCELED;
    job->refcnt++;
    job_unlock();
    if (job->driver->abort)
        job->driver->abort(job);
    if (job->driver->clean)
        job->driver->clean(job);
    job_lock();
    do_dismiss_locked(job);
    unref_locked(job);
    job_unlock();
}

void job_cancel_created(Job *job)
{
    job_lock();
    g_assert(!job->started);
    if (job->status == JOB_STATUS_CREATED)
        cancel_locked(job, true);
    job_unlock();
}

/* --- verbs --------------------------------------------------------------- */

bool job_user_pause(Job *job, GError **errp)
{
    bool ok;

    job_lock();
    ok = apply_verb_locked(job, JOB_VERB_PAUSE, errp);
    if (ok && job->user_paused) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "Job is already paused");
        ok = false;
    }
    if (ok) {
        job->user_paused = true;
        job->pause_count++;
        job_kick_locked(job);
    }
    job_unlock();
    return ok;
}

bool job_user_paused(Job *job)
{
    bool paused;

    job_lock();
    paused = job->user_paused;
    job_unlock();
    return paused;
}

bool job_user_resume(Job *job, GError **errp)
{
    bool ok = true;

    job_lock();
    if (!job->user_paused || job->pause_count <= 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "Can't resume a job that was not paused");
        ok = false;
    }
    if (ok)
        ok = apply_verb_locked(job, JOB_VERB_RESUME, errp);
    if (ok) {
        job->user_paused = false;
        job->iostatus = JOB_IO_STATUS_OK;
        job->pause_count--;
        job_kick_locked(job);
    }
    job_unlock();
    return ok;
}

bool job_user_cancel(Job *job, bool force, GError **errp)
{
    bool ok;

    job_lock();
    ok = apply_verb_locked(job, JOB_VERB_CANCEL, errp);
    if (ok)
        cancel_locked(job, force);
    job_unlock();
    return ok;
}

bool job_complete(Job *job, GError **errp)
{
    bool ok;

    job_lock();
    ok = apply_verb_locked(job, JOB_VERB_COMPLETE, errp);
    if (ok && (job->pause_count > 0 || job->cancelled ||
               !job->driver->complete)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "The active block job '%s' cannot be completed",
                    job->id);
        ok = false;
    }
    job_unlock();
    if (ok)
        job->driver->complete(job, errp);
    return ok;
}

bool job_finalize(Job *job, GError **errp)
{
    bool ok;

    job_lock();
    ok = apply_verb_locked(job, JOB_VERB_FINALIZE, errp);
    if (ok && job->finalizing) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_BUSY,
                    "Job '%s' is already being finalized", job->id);
        ok = false;
    }
    if (ok) {
        GList *group = group_locked(job);
        for (GList *l = group; l; l = l->next)
            if (((Job *)l->data)->status == JOB_STATUS_PENDING &&
                !((Job *)l->data)->finalizing)
                finalize_locked(l->data); /* a group goes together */
        group_free_locked(group);
    }
    job_unlock();
    return ok;
}

bool job_dismiss(Job *job, GError **errp)
{
    bool ok;

    job_lock();
    ok = apply_verb_locked(job, JOB_VERB_DISMISS, errp);
    if (ok)
        do_dismiss_locked(job);
    job_unlock();
    return ok;
}

bool job_set_speed(Job *job, int64_t speed, GError **errp)
{
    bool ok;

    if (speed < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Invalid parameter 'speed'");
        return false;
    }
    job_lock();
    ok = apply_verb_locked(job, JOB_VERB_SET_SPEED, errp);
    if (ok) {
        job->speed = speed;
        job->rl_next_ns = job_now_ns();
        job_kick_locked(job);
    }
    job_unlock();
    return ok;
}

/* One step towards ending @job; true if the lock was dropped meanwhile
 * (the list may have changed). */
static bool shutdown_step_locked(Job *job)
{
    if (job->finalizing)
        return false;
    if (job->status == JOB_STATUS_CONCLUDED) {
        do_dismiss_locked(job);
        return true;
    }
    if (job->status == JOB_STATUS_PENDING) {
        job->cancelled = job->force_cancel = true;
        finalize_locked(job);
        return true;
    }
    if (!job->cancelled && job_verb_table[JOB_VERB_CANCEL][job->status]) {
        cancel_locked(job, true);
        return true;
    }
    return false;
}

void job_cancel_sync_all(void)
{
    job_lock();
    while (jobs || live_threads > 0) {
        bool again = false;
        for (GList *l = jobs; l && !again; l = l->next)
            again = shutdown_step_locked(l->data);
        if (!again && !flush_before_wait_locked())
            g_cond_wait(&all_cond, &job_mutex);
    }
    job_unlock();
}

int job_wait_concluded(Job *job)
{
    int ret;

    job_lock();
    while (job->status != JOB_STATUS_CONCLUDED &&
           job->status != JOB_STATUS_NULL)
        if (!flush_before_wait_locked())
            g_cond_wait(&all_cond, &job_mutex);
    ret = job->ret;
    job_unlock();
    return ret;
}

/* --- queries ------------------------------------------------------------- */

JobInfo *job_query(Job *job)
{
    JobInfo *info = g_new0(JobInfo, 1);

    job_lock();
    info->id = g_strdup(job->id);
    info->type = job->driver->type;
    info->block_job = job->driver->block_job;
    info->status = job->status;
    info->current = __atomic_load_n(&job->progress_current, __ATOMIC_RELAXED);
    info->total = __atomic_load_n(&job->progress_total, __ATOMIC_RELAXED);
    info->speed = job->speed;
    info->paused = job->pause_count > 0;
    info->busy = job->started && !job->paused &&
                 (job->status == JOB_STATUS_RUNNING ||
                  job->status == JOB_STATUS_READY);
    info->ready = job->status == JOB_STATUS_READY ||
                  job->status == JOB_STATUS_STANDBY;
    info->auto_finalize = job->auto_finalize;
    info->auto_dismiss = job->auto_dismiss;
    info->iostatus = job->iostatus;
    if (job->ret != 0 && job->err)
        info->error = g_strdup(job->err->message);
    job_unlock();
    return info;
}

void job_info_free(JobInfo *info)
{
    if (!info)
        return;
    g_free(info->id);
    g_free(info->error);
    g_free(info);
}

GPtrArray *job_query_all(void)
{
    GPtrArray *all = g_ptr_array_new_with_free_func(
        (GDestroyNotify)job_info_free);
    GPtrArray *refs = g_ptr_array_new();

    job_lock();
    for (GList *l = jobs; l; l = l->next) {
        Job *job = l->data;
        job->refcnt++;
        g_ptr_array_add(refs, job);
    }
    job_unlock();
    for (guint i = 0; i < refs->len; i++) {
        g_ptr_array_add(all, job_query(refs->pdata[i]));
        job_unref(refs->pdata[i]);
    }
    g_ptr_array_free(refs, TRUE);
    return all;
}

/* --- for drivers --------------------------------------------------------- */

void job_pause_point(Job *job)
{
    job_lock();
    if (job_should_pause_locked(job)) {
        JobStatus s = job->status;
        transition_locked(job, s == JOB_STATUS_READY ? JOB_STATUS_STANDBY
                                                     : JOB_STATUS_PAUSED);
        job->paused = true;
        while (job_should_pause_locked(job))
            if (!flush_before_wait_locked())
                g_cond_wait(&job->cond, &job_mutex);
        job->paused = false;
        transition_locked(job, s);
    }
    job_unlock();
}

/* --- drained sections ------------------------------------------------- */

bool job_drain_requested_locked(Job *job)
{
    return job->drain_count > 0 && !job->cancelled && !job->interrupted;
}

void job_drain_point(Job *job)
{
    job_lock();
    if (job_drain_requested_locked(job)) {
        job->drain_parked = true;
        while (job_drain_requested_locked(job))
            g_cond_wait(&job->cond, &job_mutex);
        job->drain_parked = false;
    }
    job_unlock();
}

static void job_drained_begin(void *opaque)
{
    Job *job = opaque;

    job_lock();
    job->drain_count++;
    job_kick_locked(job);
    job_unlock();
}

/* Busy while run() may still issue I/O: not parked, not paused. */
static bool job_drained_poll(void *opaque)
{
    Job *job = opaque;
    bool busy;

    job_lock();
    /* A job draining its own nodes (a mirror's switch) is the drainer;
     * one waiting for its turn to drain does no I/O. */
    busy = job->in_run && !job->drain_parked && !job->paused &&
           job->thread != g_thread_self() &&
           !bdrv_thread_waits_to_drain(job->thread);
    job_unlock();
    return busy;
}

static void job_drained_end(void *opaque)
{
    Job *job = opaque;

    job_lock();
    job->drain_count--;
    job_kick_locked(job);
    job_unlock();
}

const BdrvUserOps job_user_ops = {
    .drained_begin = job_drained_begin,
    .drained_poll = job_drained_poll,
    .drained_end = job_drained_end,
};

bool job_attach_copy_nodes(Job *job, BlockNode *source, BlockNode *target,
                           BlockChild **source_edge, BlockChild **target_edge,
                           GError **errp)
{
    g_autofree char *holder = g_strdup_printf("%s job '%s'",
                                              job->driver->type, job->id);
    const uint32_t shared = BDRV_PERM_ALL & ~BDRV_PERM_RESIZE;

    *source_edge = bdrv_user_attach(source, holder, "source",
                                    BDRV_PERM_CONSISTENT_READ, shared,
                                    &job_user_ops, job, errp);
    if (*source_edge)
        *target_edge = bdrv_user_attach(target, holder, "target",
                                        BDRV_PERM_WRITE, shared,
                                        &job_user_ops, job, errp);
    return *target_edge != NULL;
}

bool job_is_force_cancelled(Job *job)
{
    bool c;

    job_lock();
    c = job->cancelled && job->force_cancel;
    job_unlock();
    return c;
}

bool job_is_cancelled(Job *job)
{
    bool c;

    job_lock();
    c = job->cancelled;
    job_unlock();
    return c;
}

/* A drain (or an interrupt) asked for since the caller last looked is a
 * reason not to sleep, as a pause is: its kick may have come just before
 * the wait (the caller looked without holding the lock across), and a job
 * asleep with no timeout then never parked, so its drainer (a job's
 * clean, a transaction) hung: unit-backup's op-blockers once in a full
 * check, and QMP fuzzer seed 716623922 (a sync=none backup asleep in
 * backup_wait_cancel). */
void job_sleep_ns(Job *job, int64_t ns)
{
    job_lock();
    if (!job->cancelled && !job->interrupted &&
        !job_should_pause_locked(job) && !job_drain_requested_locked(job))
        job_wait_locked(job, ns);
    job_unlock();
}

void job_transition_to_ready(Job *job)
{
    job_lock();
    transition_locked(job, JOB_STATUS_READY);
    queue_simple_event_locked(job, JOB_EVENT_READY);
    job_unlock();
}

void job_progress_update(Job *job, uint64_t done)
{
    __atomic_add_fetch(&job->progress_current, done, __ATOMIC_RELAXED);
}

void job_progress_increase_remaining(Job *job, uint64_t delta)
{
    __atomic_add_fetch(&job->progress_total, delta, __ATOMIC_RELAXED);
}

void job_progress_set_total(Job *job, uint64_t total)
{
    __atomic_store_n(&job->progress_total, total, __ATOMIC_RELAXED);
}

static int64_t bytes_to_ns(uint64_t bytes, int64_t speed)
{
    return (int64_t)((double)bytes * 1e9 / (double)speed);
}

int64_t job_ratelimit_delay_ns(Job *job, uint64_t bytes)
{
    int64_t now = job_now_ns(), delay = 0;

    job_lock();
    if (job->speed > 0) {
        if (job->rl_next_ns > now)
            delay = job->rl_next_ns - now;
        else
            job->rl_next_ns = now + bytes_to_ns(bytes, job->speed);
    }
    job_unlock();
    return delay;
}

void job_ratelimit_refund(Job *job, uint64_t bytes)
{
    job_lock();
    if (job->speed > 0)
        job->rl_next_ns -= bytes_to_ns(bytes, job->speed);
    job_unlock();
}

BlockErrorAction job_error_action(Job *job, BlockdevOnError policy,
                                  bool is_read, int error)
{
    BlockErrorAction action = BLOCK_ERROR_ACTION_REPORT;
    QueuedEvent *q;

    if (policy == BLOCKDEV_ON_ERROR_IGNORE)
        action = BLOCK_ERROR_ACTION_IGNORE;
    else if (policy == BLOCKDEV_ON_ERROR_STOP ||
             (policy == BLOCKDEV_ON_ERROR_ENOSPC && error == ENOSPC))
        action = BLOCK_ERROR_ACTION_STOP;
    job_lock();
    q = event_new_locked(job, JOB_EVENT_ERROR);
    q->ev.is_read = is_read;
    q->ev.action = action;
    event_queue_locked(q);
    if (action == BLOCK_ERROR_ACTION_STOP) {
        if (!job->user_paused) {
            job->user_paused = true;
            job->pause_count++;
        }
        if (job->iostatus == JOB_IO_STATUS_OK)
            job->iostatus = error == ENOSPC ? JOB_IO_STATUS_NOSPACE
                                            : JOB_IO_STATUS_FAILED;
    }
    job_unlock();
    return action;
}
