/*
 * job.h - long-running background jobs, with QEMU's states, verbs and
 * events (qapi/job.json).
 *
 * Promises:
 *  - Every job runs its driver's run() on a thread of its own, with blocking
 *    calls like the rest of the block layer.  The verbs (pause, resume,
 *    cancel, complete, finalize, dismiss, set-speed) may be called from any
 *    thread; they are checked against QEMU's verb table and fail with QEMU's
 *    message ("Job 'x' in state 'running' cannot accept command verb
 *    'complete'").
 *  - Status changes follow QEMU's transition table, and every change and
 *    every job event reaches the hook installed with job_set_event_hook, in
 *    the order they happened, before the verb that caused it returns.
 *  - jobs/ never calls server/: the server turns events into QMP.
 *
 * Lifetime: a job is referenced by the job list (until it is dismissed, i.e.
 * reaches "null") and by its thread while it runs; job_get() hands out a
 * reference that the caller drops with job_unref().
 */
#ifndef SNAPNBD_JOB_H
#define SNAPNBD_JOB_H

#include "block/block.h"
#include "block/copy-before-write.h"

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

typedef enum {
    JOB_STATUS_UNDEFINED,
    JOB_STATUS_CREATED,
    JOB_STATUS_RUNNING,
    JOB_STATUS_PAUSED,
    JOB_STATUS_READY,
    JOB_STATUS_STANDBY,
    JOB_STATUS_WAITING,
    JOB_STATUS_PENDING,
    JOB_STATUS_ABORTING,
    JOB_STATUS_CONCLUDED,
    JOB_STATUS_NULL,
    JOB_STATUS__MAX,
} JobStatus;

typedef enum {
    JOB_VERB_CANCEL,
    JOB_VERB_PAUSE,
    JOB_VERB_RESUME,
    JOB_VERB_SET_SPEED,
    JOB_VERB_COMPLETE,
    JOB_VERB_DISMISS,
    JOB_VERB_FINALIZE,
    JOB_VERB__MAX,
} JobVerb;

/* on-source-error / on-target-error */
typedef enum {
    BLOCKDEV_ON_ERROR_REPORT,
    BLOCKDEV_ON_ERROR_IGNORE,
    BLOCKDEV_ON_ERROR_ENOSPC,
    BLOCKDEV_ON_ERROR_STOP,
} BlockdevOnError;

typedef enum {
    BLOCK_ERROR_ACTION_IGNORE,
    BLOCK_ERROR_ACTION_REPORT,
    BLOCK_ERROR_ACTION_STOP,
} BlockErrorAction;

typedef enum {
    JOB_IO_STATUS_OK,
    JOB_IO_STATUS_FAILED,
    JOB_IO_STATUS_NOSPACE,
} JobIoStatus;

typedef struct Job Job;
typedef struct JobTxn JobTxn;

typedef struct JobDriver {
    const char *type;     /* QEMU's job type: "backup", "create", ... */
    size_t instance_size; /* the driver's struct, which starts with Job */
    bool block_job;       /* listed by query-block-jobs */

    /* The work, on the job's thread.  Returns 0 or a negative errno (with
     * *errp set to say what failed, or not).  It calls job_pause_point()
     * and checks job_is_cancelled() regularly. */
    int (*run)(Job *job, GError **errp);
    /* A cancel: returns whether it is a forced one (QEMU's .cancel).  A
     * job cancelled without force ends as it chooses (a ready mirror:
     * completed, without its switch).  NULL: every cancel is forced. */
    bool (*cancel)(Job *job, bool force);
    /* job-complete, for jobs that reach "ready".  NULL: not completable. */
    void (*complete)(Job *job, GError **errp);
    /* Finalization, on whichever thread finalizes, without the job lock:
     * commit after success, abort after failure or cancel, then clean. */
    void (*commit)(Job *job);
    void (*abort)(Job *job);
    void (*clean)(Job *job);
    /* The job stops its own I/O in drained sections (job_drain_point)
     * instead of having it held back: its threads are drain-exempt. */
    bool drains_itself;
    /* Wakes the job from waits of its own (cancel, pause, speed change);
     * called with the job lock held: it must only signal. */
    void (*kick)(Job *job);
    void (*free)(Job *job);
    /* The counters of the job's copy-before-write, live or as they were
     * when it ended; false if it has none.  Called with or without the job
     * lock: it must take no lock of the engine. */
    bool (*cbw_stats)(Job *job, BdrvCbwStats *st);
} JobDriver;

enum {
    JOB_MANUAL_FINALIZE = 1 << 0, /* auto-finalize: false */
    JOB_MANUAL_DISMISS = 1 << 1,  /* auto-dismiss: false */
};

/* The fields are the engine's; drivers use the functions below. */
struct Job {
    char *id;
    const JobDriver *driver;
    bool auto_finalize;
    bool auto_dismiss;

    /* Guarded by the job lock. */
    int refcnt;
    JobStatus status;
    int pause_count;      /* > 0: pause at the next pause point */
    bool user_paused;
    bool paused;          /* parked at a pause point */
    bool started;
    bool cancelled;
    bool force_cancel;
    bool finalizing;      /* commit/abort/clean are running */
    bool interrupted;     /* the driver must end run() now, paused or not */
    bool in_run;          /* run() is running */
    GThread *thread;      /* the job's thread, while it runs */
    JobTxn *txn;          /* completion-mode grouped, or NULL */
    int drain_count;      /* drained sections holding the job's nodes */
    bool drain_parked;    /* parked at job_drain_point */
    int ret;
    GError *err;
    JobIoStatus iostatus;
    int64_t speed;        /* bytes per second, 0 = unlimited */
    int64_t rl_next_ns;   /* rate limit: when the next bytes may go */
    GCond cond;           /* the job's thread sleeps here */

    /* Atomic: updated from copy threads without the lock. */
    uint64_t progress_current;
    uint64_t progress_total;
};

/* --- events ------------------------------------------------------------ */

typedef enum {
    JOB_EVENT_STATUS_CHANGE, /* JOB_STATUS_CHANGE */
    JOB_EVENT_COMPLETED,     /* BLOCK_JOB_COMPLETED */
    JOB_EVENT_CANCELLED,     /* BLOCK_JOB_CANCELLED */
    JOB_EVENT_ERROR,         /* BLOCK_JOB_ERROR */
    JOB_EVENT_READY,         /* BLOCK_JOB_READY */
    JOB_EVENT_PENDING,       /* BLOCK_JOB_PENDING */
} JobEventKind;

/* A snapshot of what the event says; valid during the hook call only. */
typedef struct JobEvent {
    JobEventKind kind;
    const char *id;
    const char *type;
    bool block_job;      /* the BLOCK_JOB_* events are for block jobs only */
    JobStatus status;    /* STATUS_CHANGE */
    uint64_t len;        /* progress total */
    uint64_t offset;     /* progress current */
    int64_t speed;
    const char *error;   /* COMPLETED after a failure, else NULL */
    bool is_read;        /* ERROR: the failed operation was a read */
    BlockErrorAction action; /* ERROR */
    bool has_cbw;        /* COMPLETED, CANCELLED: the job's cbw counters */
    BdrvCbwStats cbw;
} JobEvent;

/* Called in event order, from the thread that caused the event, without
 * the job lock held.  It must not call back into the job engine. */
typedef void (*JobEventFunc)(const JobEvent *ev);
void job_set_event_hook(JobEventFunc fn);

/* @job's copy-before-write counters (JobDriver.cbw_stats); false if it
 * has none. */
bool job_cbw_stats(Job *job, BdrvCbwStats *st);

const char *job_status_str(JobStatus s);
const char *job_verb_str(JobVerb v);
const char *block_error_action_str(BlockErrorAction a);
const char *job_io_status_str(JobIoStatus s);
/* "report", "ignore", "enospc", "stop": false if @name is none of them. */
bool blockdev_on_error_parse(const char *name, BlockdevOnError *out);

/* --- creating and running ------------------------------------------------ */

/* A new job in state "created", in the job list.  @id must be well formed
 * (a letter, then letters, digits, '-', '.', '_') and unused. */
void *job_create(const char *id, const JobDriver *driver, int flags,
                 GError **errp);
/*
 * completion-mode "grouped" (QEMU's JobTxn): the jobs of a group finish
 * together.  One that succeeds waits ("waiting") until every other has
 * succeeded too, then all become "pending" and are finalized together
 * (auto-finalize, or job-finalize of any of them); if one fails or is
 * cancelled, the others are cancelled and every job of the group aborts.
 * Add jobs before starting them.  The group lives as long as its jobs and
 * the creator's reference.
 */
JobTxn *job_txn_new(void);
void job_txn_add(JobTxn *txn, Job *job);
void job_txn_unref(JobTxn *txn);

/* Starts the job's thread: "created" -> "running". */
void job_start(Job *job);
/* Ends a job that never started: "created" -> "aborting" -> "concluded"
 * -> "null", running abort and clean. */
void job_cancel_created(Job *job);
/* A creation that failed once the job was made: QEMU's job_early_fail,
 * "created" -> "null" with no other event (nor completion event); abort
 * and clean still release what the creator took. */
void job_early_fail(Job *job);

/* A new reference to the job named @id, or NULL. */
Job *job_get(const char *id);
void job_ref(Job *job);
void job_unref(Job *job);

/* --- verbs (QMP) ------------------------------------------------------- */

bool job_user_pause(Job *job, GError **errp);
/* Paused by the user (or by an error with the stop policy)? */
bool job_user_paused(Job *job);
bool job_user_resume(Job *job, GError **errp);
bool job_user_cancel(Job *job, bool force, GError **errp);
bool job_complete(Job *job, GError **errp);
bool job_finalize(Job *job, GError **errp);
bool job_dismiss(Job *job, GError **errp);
bool job_set_speed(Job *job, int64_t speed, GError **errp);

/* Cancels every job and waits until all are gone (shutdown, quit). */
void job_cancel_sync_all(void);
/* Waits until @job is concluded or dismissed; returns its ret. */
int job_wait_concluded(Job *job);

/* --- queries ----------------------------------------------------------- */

typedef struct JobInfo {
    char *id;
    const char *type;
    bool block_job;
    JobStatus status;
    uint64_t current;
    uint64_t total;
    int64_t speed;
    bool busy;
    bool paused;
    bool ready;
    bool auto_finalize;
    bool auto_dismiss;
    JobIoStatus iostatus;
    char *error;         /* after a failure or cancel, else NULL */
} JobInfo;

/* Snapshots of every job, newest first as in QEMU; free with
 * g_ptr_array_unref. */
GPtrArray *job_query_all(void);
JobInfo *job_query(Job *job);
void job_info_free(JobInfo *info);

/* --- for drivers, on the job's thread ---------------------------------- */

/* Parks the job while it is asked to pause ("paused", or "standby" when
 * ready); returns at once otherwise or when cancelled. */
void job_pause_point(Job *job);
bool job_is_cancelled(Job *job);
/* Cancelled with force (or by a driver without a cancel hook)? */
bool job_is_force_cancelled(Job *job);
/* Sleeps up to @ns nanoseconds (-1: until kicked); wakes early on cancel,
 * pause, resume and speed changes. */
void job_sleep_ns(Job *job, int64_t ns);
/* "running" -> "ready", with BLOCK_JOB_READY. */
void job_transition_to_ready(Job *job);

void job_progress_update(Job *job, uint64_t done);
void job_progress_increase_remaining(Job *job, uint64_t delta);
void job_progress_set_total(Job *job, uint64_t total);

/* Rate limit: how long to wait before @bytes may be copied (0: go now, and
 * the bytes are accounted).  job_ratelimit_refund gives back bytes that were
 * accounted but turned out not to need copying. */
int64_t job_ratelimit_delay_ns(Job *job, uint64_t bytes);
void job_ratelimit_refund(Job *job, uint64_t bytes);

/* Decides what an I/O error means under @policy, records it in the job's
 * io-status and sends BLOCK_JOB_ERROR.  STOP pauses the job as if by the
 * user (resume retries). */
BlockErrorAction job_error_action(Job *job, BlockdevOnError policy,
                                  bool is_read, int error);

/* Drained sections: a job's nodes' user edges take job_user_ops with the
 * job as opaque.  While a section holds them, the driver parks at its next
 * job_drain_point (no status change, unlike a pause); the section waits
 * for that.  job_drain_requested_locked tells the driver to go there. */
extern const BdrvUserOps job_user_ops;
/* A copying job's edges ("<type> job 'ID'"): it reads @source and writes
 * @target, shares everything else but resize (sizes are checked once). */
bool job_attach_copy_nodes(Job *job, BlockNode *source, BlockNode *target,
                           BlockChild **source_edge, BlockChild **target_edge,
                           GError **errp);
bool job_drain_requested_locked(Job *job);
void job_drain_point(Job *job);

/* The job lock, for drivers whose own state is waited on with
 * job_wait_locked (woken by job_kick_locked or any verb). */
void job_lock(void);
void job_unlock(void);
void job_wait_locked(Job *job, int64_t ns);
void job_kick_locked(Job *job);
bool job_should_pause_locked(Job *job);
/* The job met a failure it cannot recover from: it leaves any pause (or
 * never enters one) so that run() returns the error now. */
void job_interrupt_locked(Job *job);

int64_t job_now_ns(void);

#endif
