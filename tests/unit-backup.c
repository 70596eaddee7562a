/*
 * unit-backup.c - the job engine and the backup job without a server.
 *
 * The oracle is the disk as it was when the job was created: every test
 * that lets writers loose on the source compares the target with that
 * snapshot.  Writers pick random ranges (some unaligned, some write-zeroes
 * and discards) from a seed printed at the start; SNAPNBD_SEED=N replays a
 * run.  Faults on the target come from a vetoing before-write notifier on
 * the target node: its writes fail with the chosen errno in a chosen range
 * until the fault is cleared.  The fleecing test reads a qcow2 overlay
 * backed by the live source while guest writes race with its reads.
 */
#include "jobs/backup.h"
#include "block/block-copy.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KiB 1024
#define MiB (1024 * 1024)
#define DISK (32 * MiB)
/* The copy granularity of a raw file target (block-copy.h). */
#define CHUNK (4 * KiB)
/* The data and holes of a source image come in extents of this size. */
#define EXTENT (64 * KiB)

static char *tmpdir;
static guint32 seed;

/* --- events ------------------------------------------------------------ */

static GMutex ev_lock;
static GPtrArray *events; /* of char *: "status:running", "completed", ... */

static char *event_str(const JobEvent *ev)
{
    switch (ev->kind) {
    case JOB_EVENT_STATUS_CHANGE:
        return g_strdup_printf("status:%s", job_status_str(ev->status));
    case JOB_EVENT_COMPLETED:
        return ev->error ? g_strdup_printf("completed-error:%s", ev->error)
                         : g_strdup("completed");
    case JOB_EVENT_CANCELLED:
        return g_strdup("cancelled");
    case JOB_EVENT_ERROR:
        return g_strdup_printf("error:%s:%s", ev->is_read ? "read" : "write",
                               block_error_action_str(ev->action));
    case JOB_EVENT_READY:
        return g_strdup("ready");
    case JOB_EVENT_PENDING:
        return g_strdup("pending");
    }
    return g_strdup("?");
}

static void event_hook(const JobEvent *ev)
{
    g_mutex_lock(&ev_lock);
    g_ptr_array_add(events, event_str(ev));
    g_mutex_unlock(&ev_lock);
}

static void events_reset(void)
{
    g_mutex_lock(&ev_lock);
    g_ptr_array_set_size(events, 0);
    g_mutex_unlock(&ev_lock);
}

/* Index of the first event starting with @prefix at or after @from, or -1. */
static int event_find(const char *prefix, int from)
{
    int found = -1;

    g_mutex_lock(&ev_lock);
    for (guint i = from; i < events->len && found < 0; i++)
        if (g_str_has_prefix(events->pdata[i], prefix))
            found = i;
    g_mutex_unlock(&ev_lock);
    return found;
}

static int event_count(const char *prefix)
{
    int n = 0;

    for (int i = event_find(prefix, 0); i >= 0; i = event_find(prefix, i + 1))
        n++;
    return n;
}

/* Do the events contain @seq (NULL-terminated) in this order? */
static void assert_event_order(const char *first, ...)
{
    va_list ap;
    int at = 0;

    va_start(ap, first);
    for (const char *e = first; e; e = va_arg(ap, const char *)) {
        at = event_find(e, at);
        if (at < 0) {
            g_mutex_lock(&ev_lock);
            g_ptr_array_add(events, NULL);
            g_autofree char *all = g_strjoinv(" ", (char **)events->pdata);
            g_ptr_array_set_size(events, events->len - 1);
            g_mutex_unlock(&ev_lock);
            g_error("event '%s' missing or out of order in: %s (seed %u)", e,
                    all, seed);
        }
        at++;
    }
    va_end(ap);
}

/* --- images and nodes ---------------------------------------------------- */

static void fill_random(GRand *r, uint8_t *buf, size_t len)
{
    for (size_t i = 0; i + 4 <= len; i += 4) {
        guint32 v = g_rand_int(r);
        memcpy(buf + i, &v, 4);
    }
    for (size_t i = len & ~(size_t)3; i < len; i++)
        buf[i] = g_rand_int(r);
}

/* A sparse image of @size bytes: a quarter of its extents are holes, the
 * rest random data (the chunks from 8 MiB to 9 MiB are always data).
 * Returns the path; *snapshot gets its contents. */
static char *make_source(const char *name, int64_t size, uint8_t **snapshot)
{
    char *path = g_build_filename(tmpdir, name, NULL);
    g_autoptr(GRand) r = g_rand_new_with_seed(seed ^ g_str_hash(name));
    uint8_t *data = g_malloc0(size);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);

    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(ftruncate(fd, size), ==, 0);
    for (int64_t off = 0; off < size; off += EXTENT) {
        bool forced = off >= 8 * MiB && off < 9 * MiB;
        if (!forced && g_rand_int_range(r, 0, 4) == 0)
            continue;
        fill_random(r, data + off, MIN(EXTENT, size - off));
        g_assert_cmpint(pwrite(fd, data + off, MIN(EXTENT, size - off), off),
                        ==, MIN(EXTENT, size - off));
    }
    g_assert_cmpint(fsync(fd), ==, 0);
    close(fd);
    *snapshot = data;
    return path;
}

static char *make_empty(const char *name, int64_t size)
{
    char *path = g_build_filename(tmpdir, name, NULL);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);

    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(ftruncate(fd, size), ==, 0);
    close(fd);
    return path;
}

/* Opens "driver=raw,file.driver=file,file.filename=PATH,discard=unmap"
 * plus NULL-terminated key/value pairs. */
static BlockNode *open_node(const char *path, const char *name, ...)
{
    g_autoptr(GHashTable) o =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_autoptr(GError) err = NULL;
    BlockNode *bs;
    va_list ap;

    g_hash_table_insert(o, g_strdup("driver"), g_strdup("raw"));
    g_hash_table_insert(o, g_strdup("node-name"), g_strdup(name));
    g_hash_table_insert(o, g_strdup("discard"), g_strdup("unmap"));
    g_hash_table_insert(o, g_strdup("file.driver"), g_strdup("file"));
    g_hash_table_insert(o, g_strdup("file.filename"), g_strdup(path));
    va_start(ap, name);
    for (const char *k; (k = va_arg(ap, const char *));)
        g_hash_table_insert(o, g_strdup(k),
                            g_strdup(va_arg(ap, const char *)));
    va_end(ap);
    bs = bdrv_open(o, &err);
    if (!bs)
        g_error("open %s: %s", path, err->message);
    return bs;
}

static BlockNode *open_null(const char *name, int64_t size)
{
    g_autoptr(GHashTable) o =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_autoptr(GError) err = NULL;
    BlockNode *bs;

    g_hash_table_insert(o, g_strdup("driver"), g_strdup("null-co"));
    g_hash_table_insert(o, g_strdup("node-name"), g_strdup(name));
    g_hash_table_insert(o, g_strdup("size"),
                        g_strdup_printf("%" G_GINT64_FORMAT, size));
    g_hash_table_insert(o, g_strdup("read-zeroes"), g_strdup("off"));
    bs = bdrv_open(o, &err);
    g_assert_nonnull(bs);
    return bs;
}

static void assert_node_equals(BlockNode *bs, const uint8_t *expect,
                               int64_t len)
{
    uint8_t *got = g_malloc(len);

    g_assert_cmpint(bdrv_pread(bs, 0, len, got), ==, 0);
    for (int64_t off = 0; off < len; off += CHUNK) {
        int64_t n = MIN(CHUNK, len - off);
        if (memcmp(got + off, expect + off, n) != 0)
            g_error("%s differs from the point in time in the chunk at %"
                    G_GINT64_FORMAT " (seed %u)", bdrv_node_name(bs), off,
                    seed);
    }
    g_free(got);
}

/* --- jobs --------------------------------------------------------------- */

static BackupOptions options(BackupSync sync, int64_t speed)
{
    return (BackupOptions){
        .sync = sync,
        .speed = speed,
        .on_source_error = BLOCKDEV_ON_ERROR_REPORT,
        .on_target_error = BLOCKDEV_ON_ERROR_REPORT,
    };
}

/* Creates and starts a backup; the caller owns a reference. */
static Job *start_backup(const char *id, BlockNode *src, BlockNode *tgt,
                         const BackupOptions *o)
{
    g_autoptr(GError) err = NULL;
    Job *job = backup_job_create(id, src, tgt, o, &err);

    if (!job)
        g_error("backup_job_create: %s", err->message);
    job_ref(job);
    job_start(job);
    return job;
}

static JobStatus job_status_now(Job *job)
{
    JobInfo *info = job_query(job);
    JobStatus s = info->status;

    job_info_free(info);
    return s;
}

static void wait_status(Job *job, JobStatus want)
{
    for (int i = 0; i < 1000 && job_status_now(job) != want; i++)
        g_usleep(10 * 1000);
    g_assert_cmpstr(job_status_str(job_status_now(job)), ==,
                    job_status_str(want));
}

static uint64_t job_current(Job *job)
{
    JobInfo *info = job_query(job);
    uint64_t c = info->current;

    job_info_free(info);
    return c;
}

/* --- writers ------------------------------------------------------------ */

typedef struct Writer {
    BlockNode *bs;
    GRand *rng;
    int64_t lo, hi;       /* the range it writes in */
    int64_t max_len;
    gint *stop;
    int ops;
    GThread *thread;
    uint64_t *touched;    /* chunks written, if not NULL (atomic words) */
} Writer;

static void mark_touched(Writer *w, int64_t off, int64_t len)
{
    if (!w->touched)
        return;
    for (int64_t c = off / CHUNK; c <= (off + len - 1) / CHUNK; c++)
        __atomic_or_fetch(&w->touched[c / 64], 1ULL << (c % 64),
                          __ATOMIC_RELAXED);
}

static gpointer writer_thread(gpointer opaque)
{
    Writer *w = opaque;
    uint8_t *buf = g_malloc(w->max_len);

    while (!g_atomic_int_get(w->stop)) {
        int64_t len = g_rand_int_range(w->rng, 1, w->max_len + 1);
        int64_t off = g_rand_int_range(w->rng, w->lo, w->hi - len + 1);
        int op = g_rand_int_range(w->rng, 0, 10);
        int ret;

        if (op < 7) {
            memset(buf, g_rand_int_range(w->rng, 1, 256), len);
            ret = bdrv_pwrite(w->bs, off, len, buf, 0);
        } else if (op < 9) {
            ret = bdrv_pwrite_zeroes(w->bs, off, len, BDRV_REQ_MAY_UNMAP);
        } else {
            ret = bdrv_pdiscard(w->bs, off, len);
        }
        if (ret < 0)
            g_error("guest write at %" G_GINT64_FORMAT "+%" G_GINT64_FORMAT
                    " failed: %s (seed %u)", off, len, g_strerror(-ret),
                    seed);
        mark_touched(w, off, len);
        w->ops++;
    }
    g_free(buf);
    return NULL;
}

static Writer *writers_start(BlockNode *bs, int n, int64_t lo, int64_t hi,
                             int64_t max_len, gint *stop, uint64_t *touched)
{
    Writer *w = g_new0(Writer, n);

    g_atomic_int_set(stop, 0);
    for (int i = 0; i < n; i++) {
        w[i] = (Writer){ .bs = bs, .lo = lo, .hi = hi, .max_len = max_len,
                         .stop = stop, .touched = touched };
        w[i].rng = g_rand_new_with_seed(seed + 1000 * (i + 1));
        w[i].thread = g_thread_new("writer", writer_thread, &w[i]);
    }
    return w;
}

static int writers_stop(Writer *w, int n)
{
    int ops = 0;

    g_atomic_int_set(w[0].stop, 1);
    for (int i = 0; i < n; i++) {
        g_thread_join(w[i].thread);
        g_rand_free(w[i].rng);
        ops += w[i].ops;
    }
    g_free(w);
    return ops;
}

/* --- target faults ------------------------------------------------------ */

typedef struct Fault {
    int64_t start, end;
    gint error;     /* errno to fail with, 0 = healthy */
    gint hits;
} Fault;

static int fault_notifier(BlockNode *bs, BdrvWriteKind kind, int64_t offset,
                          int64_t bytes, void *opaque)
{
    Fault *f = opaque;
    int error = g_atomic_int_get(&f->error);

    if (error && offset < f->end && f->start < offset + bytes) {
        g_atomic_int_inc(&f->hits);
        return -error;
    }
    return 0;
}

/* --- tests -------------------------------------------------------------- */

/* sync=full while four threads write anywhere on the source: the target is
 * the disk as it was when the job was created, and the events are QEMU's. */
static void run_full_under_load(const char *tag, const char *direct)
{
    g_autofree char *sname = g_strdup_printf("full-%s-src.img", tag);
    g_autofree char *tname = g_strdup_printf("full-%s-tgt.img", tag);
    uint8_t *snap;
    g_autofree char *spath = make_source(sname, DISK, &snap);
    g_autofree char *tpath = make_empty(tname, DISK);
    BlockNode *src = open_node(spath, "src", "cache.direct", direct, NULL);
    BlockNode *tgt = open_node(tpath, "tgt", NULL);
    BackupOptions o = options(BACKUP_SYNC_FULL, 24 * MiB);
    gint stop;
    Writer *w;
    Job *job;
    JobInfo *info;
    int ops;

    events_reset();
    job = start_backup("full0", src, tgt, &o);
    w = writers_start(src, 4, 0, DISK, 256 * KiB, &stop, NULL);
    g_assert_cmpint(job_wait_concluded(job), ==, 0);
    ops = writers_stop(w, 4);
    g_test_message("%d guest writes during the backup", ops);
    g_assert_cmpint(ops, >, 50);
    assert_event_order("status:created", "status:running", "status:waiting",
                       "status:pending", "completed", "status:concluded",
                       "status:null", NULL);
    info = job_query(job);
    g_assert_cmpuint(info->current, ==, DISK);
    g_assert_cmpuint(info->total, ==, DISK);
    g_assert_null(info->error);
    job_info_free(info);
    job_unref(job);
    assert_node_equals(tgt, snap, DISK);
    bdrv_unref(src);
    bdrv_unref(tgt);
    g_free(snap);
}

static void test_full_under_load(void)
{
    run_full_under_load("cached", "off");
}

/* O_DIRECT: unaligned guest writes become serialising read-modify-writes
 * that overlap each other and the job's chunks. */
static void test_full_under_load_direct(void)
{
    g_autofree char *probe = g_build_filename(tmpdir, "direct-probe", NULL);
    int fd = open(probe, O_RDWR | O_CREAT | O_DIRECT, 0644);

    if (fd < 0) {
        g_test_skip("no O_DIRECT in the temporary directory");
        return;
    }
    close(fd);
    run_full_under_load("direct", "on");
}

/* Eight threads hammer one megabyte with overlapping, unaligned writes
 * while the job copies it in 64 KiB chunks: nobody deadlocks, and the
 * point in time holds. */
static void test_overlapping_writers(void)
{
    uint8_t *snap;
    g_autofree char *spath = make_source("overlap-src.img", DISK, &snap);
    g_autofree char *tpath = make_empty("overlap-tgt.img", DISK);
    BlockNode *src = open_node(spath, "src", NULL);
    BlockNode *tgt = open_node(tpath, "tgt", NULL);
    BackupOptions o = options(BACKUP_SYNC_FULL, 16 * MiB);
    gint stop;
    Writer *w;
    Job *job;

    o.max_chunk = 64 * KiB;
    events_reset();
    job = start_backup("overlap0", src, tgt, &o);
    w = writers_start(src, 8, 8 * MiB, 9 * MiB, 128 * KiB, &stop, NULL);
    g_assert_cmpint(job_wait_concluded(job), ==, 0);
    g_assert_cmpint(writers_stop(w, 8), >, 50);
    job_unref(job);
    assert_node_equals(tgt, snap, DISK);
    bdrv_unref(src);
    bdrv_unref(tgt);
    g_free(snap);
}

/* Every chunk of the target is either untouched (zero) or the point in
 * time. */
static void assert_partial_copy(BlockNode *tgt, const uint8_t *snap,
                                int64_t len, int64_t *copied_chunks)
{
    uint8_t *got = g_malloc(len);

    *copied_chunks = 0;
    g_assert_cmpint(bdrv_pread(tgt, 0, len, got), ==, 0);
    for (int64_t off = 0; off < len; off += CHUNK) {
        bool same = memcmp(got + off, snap + off, CHUNK) == 0;
        if (!same && !buffer_is_zero(got + off, CHUNK))
            g_error("chunk at %" G_GINT64_FORMAT " is neither empty nor the "
                    "point in time (seed %u)", off, seed);
        if (same && !buffer_is_zero(snap + off, CHUNK))
            (*copied_chunks)++;
    }
    g_free(got);
}

static void test_cancel(void)
{
    uint8_t *snap;
    g_autofree char *spath = make_source("cancel-src.img", DISK, &snap);
    g_autofree char *tpath = make_empty("cancel-tgt.img", DISK);
    BlockNode *src = open_node(spath, "src", NULL);
    BlockNode *tgt = open_node(tpath, "tgt", NULL);
    BackupOptions o = options(BACKUP_SYNC_FULL, 4 * MiB);
    g_autoptr(GError) err = NULL;
    uint8_t before[CHUNK], after[CHUNK], data[CHUNK];
    int64_t copied;
    gint stop;
    Writer *w;
    Job *job;

    events_reset();
    job = start_backup("cancel0", src, tgt, &o);
    /* Writers in the first 4 MiB only: copy-before-writes must not copy
     * the whole disk before the cancel. */
    w = writers_start(src, 2, 0, 4 * MiB, 64 * KiB, &stop, NULL);
    g_usleep(300 * 1000);
    g_assert_true(job_user_cancel(job, false, &err));
    g_assert_cmpint(job_wait_concluded(job), ==, -ECANCELED);
    writers_stop(w, 2);
    g_assert_cmpuint(job_current(job), <, DISK);
    assert_event_order("status:running", "status:aborting", "cancelled",
                       "status:concluded", "status:null", NULL);
    g_assert_cmpint(event_find("completed", 0), <, 0);
    /* A cancelled job can be cancelled no more. */
    g_assert_false(job_user_cancel(job, false, &err));
    job_unref(job);

    /* What was copied before the cancel is the point in time... */
    assert_partial_copy(tgt, snap, DISK, &copied);
    g_assert_cmpint(copied, >, 0);
    /* ... and the job is gone: writes no longer reach the target. */
    g_assert_cmpint(bdrv_pread(tgt, 31 * MiB, CHUNK, before), ==, 0);
    memset(data, 0x5a, sizeof(data));
    g_assert_cmpint(bdrv_pwrite(src, 31 * MiB, CHUNK, data, 0), ==, 0);
    g_assert_cmpint(bdrv_pread(tgt, 31 * MiB, CHUNK, after), ==, 0);
    g_assert_cmpint(memcmp(before, after, CHUNK), ==, 0);
    bdrv_unref(src);
    bdrv_unref(tgt);
    g_free(snap);
}

static void test_pause_resume(void)
{
    uint8_t *snap;
    g_autofree char *spath = make_source("pause-src.img", DISK, &snap);
    g_autofree char *tpath = make_empty("pause-tgt.img", DISK);
    BlockNode *src = open_node(spath, "src", NULL);
    BlockNode *tgt = open_node(tpath, "tgt", NULL);
    BackupOptions o = options(BACKUP_SYNC_FULL, 8 * MiB);
    GError *err = NULL;
    uint64_t p1;
    Job *job;

    events_reset();
    job = start_backup("pause0", src, tgt, &o);
    g_assert_false(job_user_resume(job, &err));
    g_assert_cmpstr(err->message, ==, "Can't resume a job that was not paused");
    g_clear_error(&err);
    g_usleep(200 * 1000);
    g_assert_true(job_user_pause(job, &err));
    g_assert_false(job_user_pause(job, &err));
    g_assert_cmpstr(err->message, ==, "Job is already paused");
    g_clear_error(&err);
    wait_status(job, JOB_STATUS_PAUSED);
    /* The event goes out while the job is paused, not on resume. */
    for (int i = 0; i < 100 && event_find("status:paused", 0) < 0; i++)
        g_usleep(10 * 1000);
    g_assert_cmpint(event_find("status:paused", 0), >=, 0);
    p1 = job_current(job);
    g_assert_cmpuint(p1, >, 0);
    g_usleep(300 * 1000);
    g_assert_cmpuint(job_current(job), ==, p1); /* nothing copied */
    /* Verbs a running or paused backup refuses, with QEMU's words. */
    g_assert_false(job_complete(job, &err));
    g_assert_cmpstr(err->message, ==, "Job 'pause0' in state 'paused' cannot "
                    "accept command verb 'complete'");
    g_clear_error(&err);
    g_assert_false(job_finalize(job, &err));
    g_clear_error(&err);
    g_assert_false(job_dismiss(job, &err));
    g_clear_error(&err);
    g_assert_true(job_set_speed(job, 0, &err));
    g_assert_true(job_user_resume(job, &err));
    g_assert_cmpint(job_wait_concluded(job), ==, 0);
    assert_event_order("status:running", "status:paused", "status:running",
                       "completed", "status:concluded", NULL);
    job_unref(job);
    assert_node_equals(tgt, snap, DISK);
    bdrv_unref(src);
    bdrv_unref(tgt);
    g_free(snap);
}

typedef struct {
    BlockNode *bs;
    gint done;
} GuestWrite;

static gpointer guest_write_thread(gpointer data)
{
    GuestWrite *g = data;
    char buf[4096];

    memset(buf, 0x77, sizeof(buf));
    g_assert_cmpint(bdrv_pwrite(g->bs, 3 * MiB, sizeof(buf), buf, 0), ==, 0);
    g_atomic_int_set(&g->done, 1);
    return NULL;
}

/* A drained section on the target holds the job (it parks between copies,
 * quietly: no status change) and the source's guests (the job's
 * copy-before-write would write the target), and both go on after it. */
static void test_drained_job(void)
{
    uint8_t *snap;
    g_autofree char *spath = make_source("drain-src.img", DISK, &snap);
    g_autofree char *tpath = make_empty("drain-tgt.img", DISK);
    BlockNode *src = open_node(spath, "src", NULL);
    BlockNode *tgt = open_node(tpath, "tgt", NULL);
    BackupOptions o = options(BACKUP_SYNC_FULL, 8 * MiB);
    GuestWrite g = { .bs = src };
    GError *err = NULL;
    BdrvDrain *d;
    GThread *t;
    uint64_t p1;
    Job *job;

    events_reset();
    job = start_backup("drain0", src, tgt, &o);
    g_usleep(200 * 1000);
    d = bdrv_drained_begin(tgt);
    p1 = job_current(job);
    t = g_thread_new("guest", guest_write_thread, &g);
    g_usleep(300 * 1000);
    g_assert_cmpuint(job_current(job), ==, p1);
    g_assert_false(g_atomic_int_get(&g.done));
    g_assert_cmpint(event_find("status:paused", 0), <, 0);
    bdrv_drained_end(d);
    g_thread_join(t);
    g_assert_true(job_set_speed(job, 0, &err));
    g_assert_cmpint(job_wait_concluded(job), ==, 0);
    job_unref(job);
    assert_node_equals(tgt, snap, DISK);
    bdrv_unref(src);
    bdrv_unref(tgt);
    g_free(snap);
}

/* 16 MiB at 8 MiB/s takes two seconds (never 10 % less); then unlimited. */
static void test_speed(void)
{
    BlockNode *src = open_null("nsrc", 16 * MiB);
    BlockNode *tgt = open_null("ntgt", 16 * MiB);
    BackupOptions o = options(BACKUP_SYNC_FULL, 8 * MiB);
    gint64 t0 = g_get_monotonic_time();
    double secs, rate;
    Job *job;

    events_reset();
    job = start_backup("speed0", src, tgt, &o);
    g_assert_cmpint(job_wait_concluded(job), ==, 0);
    secs = (g_get_monotonic_time() - t0) / 1e6;
    rate = 16.0 / secs;
    g_test_message("16 MiB at a limit of 8 MiB/s: %.3f s (%.2f MiB/s)",
                   secs, rate);
    /* A ceiling: never 10 % above; below only by what a loaded machine
     * costs, not by half. */
    if (rate < 8 * 0.5 || rate > 8 * 1.1)
        g_error("speed limit 8 MiB/s not honoured: %.2f MiB/s", rate);
    job_unref(job);
    bdrv_unref(src);
    bdrv_unref(tgt);
}

/* The background copy of a file to a file, unlimited: prints the rate. */
static void test_throughput(void)
{
    const int64_t size = 128 * MiB;
    uint8_t *snap;
    g_autofree char *spath = make_source("tput-src.img", size, &snap);
    g_autofree char *tpath = make_empty("tput-tgt.img", size);
    BlockNode *src = open_node(spath, "src", NULL);
    BlockNode *tgt = open_node(tpath, "tgt", NULL);
    BackupOptions o = options(BACKUP_SYNC_FULL, 0);
    gint64 t0 = g_get_monotonic_time();
    Job *job;

    job = start_backup("tput0", src, tgt, &o);
    g_assert_cmpint(job_wait_concluded(job), ==, 0);
    g_test_message("backup throughput (file to file, 3/4 data): %.0f MiB/s",
                   size / MiB / ((g_get_monotonic_time() - t0) / 1e6));
    job_unref(job);
    assert_node_equals(tgt, snap, size);
    bdrv_unref(src);
    bdrv_unref(tgt);
    g_free(snap);
}

/* A target that fails writes in [8 MiB, 8 MiB + 64 KiB) with @error. */
typedef struct FaultRig {
    uint8_t *snap;
    BlockNode *src, *tgt;
    Fault fault;
    BlockNotifier *n;
    Job *job;
} FaultRig;

static void rig_start(FaultRig *r, const char *tag, int error,
                      BlockdevOnError policy, int64_t speed)
{
    g_autofree char *sname = g_strdup_printf("fault-%s-src.img", tag);
    g_autofree char *tname = g_strdup_printf("fault-%s-tgt.img", tag);
    g_autofree char *id = g_strdup_printf("fault-%s", tag);
    g_autofree char *spath = make_source(sname, DISK, &r->snap);
    g_autofree char *tpath = make_empty(tname, DISK);
    BackupOptions o = options(BACKUP_SYNC_FULL, speed);

    r->src = open_node(spath, "src", NULL);
    r->tgt = open_node(tpath, "tgt", NULL);
    r->fault = (Fault){ .start = 8 * MiB, .end = 8 * MiB + 64 * KiB,
                        .error = error };
    r->n = bdrv_add_before_write_notifier(r->tgt, fault_notifier, &r->fault);
    o.on_target_error = policy;
    events_reset();
    r->job = start_backup(id, r->src, r->tgt, &o);
}

static void rig_free(FaultRig *r)
{
    bdrv_remove_before_write_notifier(r->tgt, r->n);
    job_unref(r->job);
    bdrv_unref(r->src);
    bdrv_unref(r->tgt);
    g_free(r->snap);
}

/* The source keeps serving: a write lands and reads back. */
static void assert_source_serves(BlockNode *src, int64_t off)
{
    uint8_t data[4096], back[4096];

    memset(data, 0xc3, sizeof(data));
    g_assert_cmpint(bdrv_pwrite(src, off, sizeof(data), data, 0), ==, 0);
    g_assert_cmpint(bdrv_pread(src, off, sizeof(back), back), ==, 0);
    g_assert_cmpint(memcmp(data, back, sizeof(data)), ==, 0);
}

static void test_error_report(void)
{
    FaultRig r;
    JobInfo *info;

    rig_start(&r, "report", ENOSPC, BLOCKDEV_ON_ERROR_REPORT, 0);
    g_assert_cmpint(job_wait_concluded(r.job), ==, -ENOSPC);
    assert_event_order("status:running", "error:write:report",
                       "status:aborting", "completed-error:", NULL);
    g_assert_cmpint(event_find("completed-error:Backup of 'src' failed "
                               "writing 'tgt' at offset 8388608: No space "
                               "left on device", 0), >=, 0);
    info = job_query(r.job);
    g_assert_nonnull(strstr(info->error, "No space left on device"));
    job_info_free(info);
    assert_source_serves(r.src, 20 * MiB);
    rig_free(&r);
}

static void test_error_ignore(void)
{
    FaultRig r;

    rig_start(&r, "ignore", ENOSPC, BLOCKDEV_ON_ERROR_IGNORE, 0);
    while (event_count("error:write:ignore") < 3)
        g_usleep(10 * 1000);
    g_assert_cmpstr(job_status_str(job_status_now(r.job)), ==, "running");
    assert_source_serves(r.src, 20 * MiB);
    g_atomic_int_set(&r.fault.error, 0); /* space freed */
    g_assert_cmpint(job_wait_concluded(r.job), ==, 0);
    g_assert_cmpint(event_find("completed", 0), >=, 0);
    assert_node_equals(r.tgt, r.snap, DISK);
    rig_free(&r);
}

/* stop, and enospc with ENOSPC: the job pauses with io-status nospace,
 * resuming retries; after the space is freed it completes. */
static void run_error_stop(const char *tag, BlockdevOnError policy)
{
    FaultRig r;
    JobInfo *info;
    GError *err = NULL;
    gint stop;
    Writer *w;

    rig_start(&r, tag, ENOSPC, policy, 0);
    wait_status(r.job, JOB_STATUS_PAUSED);
    g_assert_cmpint(event_find("error:write:stop", 0), >=, 0);
    info = job_query(r.job);
    g_assert_cmpint(info->iostatus, ==, JOB_IO_STATUS_NOSPACE);
    job_info_free(info);
    /* The guest keeps writing away from the failing chunk. */
    w = writers_start(r.src, 2, 16 * MiB, DISK, 64 * KiB, &stop, NULL);
    g_usleep(100 * 1000);
    /* Resumed with the disk still full: stops again. */
    g_assert_true(job_user_resume(r.job, &err));
    while (event_count("error:write:stop") < 2)
        g_usleep(10 * 1000);
    wait_status(r.job, JOB_STATUS_PAUSED);
    g_atomic_int_set(&r.fault.error, 0);
    g_assert_true(job_user_resume(r.job, &err));
    g_assert_cmpint(job_wait_concluded(r.job), ==, 0);
    g_assert_cmpint(writers_stop(w, 2), >, 0);
    assert_node_equals(r.tgt, r.snap, DISK);
    rig_free(&r);
}

static void test_error_stop(void)
{
    run_error_stop("stop", BLOCKDEV_ON_ERROR_STOP);
}

static void test_error_enospc(void)
{
    FaultRig r;

    run_error_stop("enospc", BLOCKDEV_ON_ERROR_ENOSPC);
    /* Any other error is reported. */
    rig_start(&r, "enospc-eio", EIO, BLOCKDEV_ON_ERROR_ENOSPC, 0);
    g_assert_cmpint(job_wait_concluded(r.job), ==, -EIO);
    g_assert_cmpint(event_find("error:write:report", 0), >=, 0);
    rig_free(&r);
}

/* A copy-before-write that fails lets the guest's write through and fails
 * the job: the point in time is lost, the guest's data is not. */
static void test_cbw_failure(void)
{
    FaultRig r;
    uint8_t data[4096], back[4096];

    rig_start(&r, "cbw", ENOSPC, BLOCKDEV_ON_ERROR_STOP, 1 * MiB);
    memset(data, 0x77, sizeof(data));
    g_assert_cmpint(bdrv_pwrite(r.src, 8 * MiB + 4096, 4096, data, 0), ==, 0);
    g_assert_cmpint(bdrv_pread(r.src, 8 * MiB + 4096, 4096, back), ==, 0);
    g_assert_cmpint(memcmp(data, back, 4096), ==, 0);
    g_assert_cmpint(job_wait_concluded(r.job), ==, -ENOSPC);
    g_assert_cmpint(event_find("completed-error:Copy-before-write failed "
                               "writing 'tgt' at offset 8392704: No space "
                               "left on device; the point in time is lost",
                               0), >=, 0);
    rig_free(&r);
}

/* The same while the job is stopped by the stop policy: the job must not
 * stay paused over a lost point in time. */
static void test_cbw_failure_while_stopped(void)
{
    FaultRig r;
    uint8_t data[4096];

    rig_start(&r, "cbw-stopped", ENOSPC, BLOCKDEV_ON_ERROR_STOP, 0);
    wait_status(r.job, JOB_STATUS_PAUSED);
    memset(data, 0x78, sizeof(data));
    g_assert_cmpint(bdrv_pwrite(r.src, 8 * MiB, 4096, data, 0), ==, 0);
    g_assert_cmpint(job_wait_concluded(r.job), ==, -ENOSPC);
    assert_event_order("error:write:stop", "status:paused", "status:running",
                       "status:aborting", "completed-error:Copy-before-write",
                       NULL);
    rig_free(&r);
}

/* sync=none: only what the guest overwrites is copied, each chunk once;
 * the job runs until cancelled. */
static void test_sync_none(void)
{
    uint8_t *snap;
    g_autofree char *spath = make_source("none-src.img", DISK, &snap);
    g_autofree char *tpath = make_empty("none-tgt.img", DISK);
    BlockNode *src = open_node(spath, "src", NULL);
    BlockNode *tgt = open_node(tpath, "tgt", NULL);
    BackupOptions o = options(BACKUP_SYNC_NONE, 0);
    uint64_t touched[DISK / CHUNK / 64] = { 0 };
    g_autoptr(GError) err = NULL;
    uint8_t *got = g_malloc(DISK);
    int64_t ntouched = 0;
    JobInfo *info;
    gint stop;
    Writer *w;
    Job *job;

    events_reset();
    job = start_backup("none0", src, tgt, &o);
    w = writers_start(src, 4, 0, DISK, 128 * KiB, &stop, touched);
    g_usleep(500 * 1000);
    writers_stop(w, 4);
    g_assert_cmpstr(job_status_str(job_status_now(job)), ==, "running");
    g_assert_true(job_user_cancel(job, false, &err));
    g_assert_cmpint(job_wait_concluded(job), ==, -ECANCELED);
    assert_event_order("status:running", "status:aborting", "cancelled",
                       "status:null", NULL);

    g_assert_cmpint(bdrv_pread(tgt, 0, DISK, got), ==, 0);
    for (int64_t c = 0; c < DISK / CHUNK; c++) {
        bool t = touched[c / 64] & (1ULL << (c % 64));
        const uint8_t *want = t ? snap + c * CHUNK : NULL;
        ntouched += t;
        if (want ? memcmp(got + c * CHUNK, want, CHUNK)
                 : !buffer_is_zero(got + c * CHUNK, CHUNK))
            g_error("sync=none: chunk %" G_GINT64_FORMAT " (%s) is wrong "
                    "(seed %u)", c, t ? "overwritten" : "untouched", seed);
    }
    /* Progress counts each overwritten chunk exactly once. */
    info = job_query(job);
    g_assert_cmpuint(info->current, ==, ntouched * CHUNK);
    g_assert_cmpuint(info->total, ==, ntouched * CHUNK);
    job_info_free(info);
    g_assert_cmpint(ntouched, >, 10);
    job_unref(job);
    bdrv_unref(src);
    bdrv_unref(tgt);
    g_free(got);
    g_free(snap);
}

/* Fleecing: the target is a qcow2 overlay whose backing is the live
 * source.  Readers of the target, racing with guest writes and their
 * copy-before-writes on the same chunks, always see the point in time:
 * a read that found a cluster unallocated and went on to the source must
 * finish before the old data lands in the target and the guest's write is
 * let through (the target's writes are serialising). */
typedef struct Reader {
    BlockNode *bs;
    const uint8_t *snap;
    GRand *rng;
    gint *stop;
    int reads;
    GThread *thread;
} Reader;

static gpointer reader_thread(gpointer opaque)
{
    Reader *r = opaque;
    uint8_t *buf = g_malloc(256 * KiB);

    while (!g_atomic_int_get(r->stop)) {
        int64_t len = g_rand_int_range(r->rng, 1, 256 * KiB + 1);
        int64_t off = g_rand_int_range(r->rng, 0, DISK - len + 1);
        g_assert_cmpint(bdrv_pread(r->bs, off, len, buf), ==, 0);
        if (memcmp(buf, r->snap + off, len) != 0)
            g_error("fleecing read at %" G_GINT64_FORMAT "+%" G_GINT64_FORMAT
                    " is not the point in time (seed %u)", off, len, seed);
        r->reads++;
    }
    g_free(buf);
    return NULL;
}

static BlockNode *make_overlay(const char *name, BlockNode *backing)
{
    g_autofree char *path = g_build_filename(tmpdir, name, NULL);
    g_autoptr(GHashTable) c =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_autoptr(GHashTable) o =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_autoptr(GError) err = NULL;
    BlockNode *bs;

    g_hash_table_insert(c, g_strdup("backing_file"),
                        g_strdup(bdrv_filename(backing)));
    g_hash_table_insert(c, g_strdup("backing_fmt"), g_strdup("raw"));
    if (bdrv_create("qcow2", path, DISK, c, &err) < 0)
        g_error("create %s: %s", path, err->message);
    g_hash_table_insert(o, g_strdup("driver"), g_strdup("qcow2"));
    g_hash_table_insert(o, g_strdup("node-name"), g_strdup("fleece"));
    g_hash_table_insert(o, g_strdup("backing"),
                        g_strdup(bdrv_node_name(backing)));
    g_hash_table_insert(o, g_strdup("file.driver"), g_strdup("file"));
    g_hash_table_insert(o, g_strdup("file.filename"), g_strdup(path));
    bs = bdrv_open(o, &err);
    if (!bs)
        g_error("open %s: %s", path, err->message);
    return bs;
}

static void test_fleecing_readers(void)
{
    uint8_t *snap;
    g_autofree char *spath = make_source("fleece-src.img", DISK, &snap);
    BlockNode *src = open_node(spath, "src", NULL);
    BlockNode *tgt = make_overlay("fleece.qcow2", src);
    BackupOptions o = options(BACKUP_SYNC_NONE, 0);
    g_autoptr(GError) err = NULL;
    Reader r[4];
    gint stop = 0, wstop;
    int reads = 0;
    Writer *w;
    Job *job;

    job = start_backup("fleece0", src, tgt, &o);
    for (int i = 0; i < 4; i++) {
        r[i] = (Reader){ .bs = tgt, .snap = snap, .stop = &stop,
                         .rng = g_rand_new_with_seed(seed + 77 * i) };
        r[i].thread = g_thread_new("reader", reader_thread, &r[i]);
    }
    w = writers_start(src, 4, 0, DISK, 64 * KiB, &wstop, NULL);
    g_usleep(1500 * 1000);
    g_assert_cmpint(writers_stop(w, 4), >, 100);
    g_atomic_int_set(&stop, 1);
    for (int i = 0; i < 4; i++) {
        g_thread_join(r[i].thread);
        g_rand_free(r[i].rng);
        reads += r[i].reads;
    }
    g_test_message("%d reads of the fleecing overlay", reads);
    g_assert_cmpint(reads, >, 100);
    assert_node_equals(tgt, snap, DISK);
    g_assert_true(job_user_cancel(job, false, &err));
    job_wait_concluded(job);
    job_unref(job);
    bdrv_unref(tgt);
    bdrv_unref(src);
    g_free(snap);
}

/* --- sync=top and the store --------------------------------------------- */

/* Copies, from a copy-before-write over the whole disk (@cbw) or from
 * background claims, a qcow2 overlay whose top layer holds MiB at 4 MiB,
 * with a store limit of that MiB (block-copy directly: the backup job
 * takes x-max-store-bytes only with sync=none).  Only that MiB is copied,
 * kept and counted; the chunks skipped take no room, so the store refuses
 * nothing. */
static void check_sync_top_store(bool cbw)
{
    uint8_t *snap;
    g_autofree char *bpath = make_source("top-base.img", DISK, &snap);
    g_autofree char *tpath = make_empty("top-target.img", DISK);
    BlockNode *base = open_node(bpath, "base", NULL);
    BlockNode *top = make_overlay("top.qcow2", base);
    BlockNode *tgt = open_node(tpath, "tgt", NULL);
    uint8_t *data = g_malloc(MiB), *got = g_malloc(MiB);
    g_autoptr(GError) err = NULL;
    BlockCopyState *s;
    BlockCopyStats st;
    BlockCopyError e;
    int64_t off, n, copied;
    bool is_read;

    memset(data, 0x5a, MiB);
    g_assert_cmpint(bdrv_pwrite(top, 4 * MiB, MiB, data, 0), ==, 0);
    s = block_copy_state_new(top, tgt, true, &err);
    g_assert_nonnull(s);
    block_copy_set_store_limit(s, MiB, BLOCK_COPY_STORE_FULL_BREAK, 0);
    if (cbw) {
        g_assert_cmpint(block_copy(s, 0, DISK, &e), ==, 0);
    } else {
        for (int64_t from = 0; block_copy_claim(s, from, MiB, &off, &n);
             from = off + n)
            g_assert_cmpint(block_copy_claimed(s, off, n, false, &is_read,
                                               &copied),
                            ==, 0);
    }
    g_assert_cmpint(block_copy_remaining(s), ==, 0);
    block_copy_get_stats(s, &st);
    g_assert_cmpint(st.store_full, ==, 0);
    g_assert_cmpint(st.copied_bytes, ==, MiB);
    g_assert_cmpint(st.store_bytes, ==, MiB);
    g_assert_cmpint(st.store_peak_bytes, ==, MiB);
    g_assert_cmpint(bdrv_pread(tgt, 4 * MiB, MiB, got), ==, 0);
    g_assert_cmpmem(got, MiB, data, MiB);
    block_copy_state_free(s);
    bdrv_unref(tgt);
    bdrv_unref(top);
    bdrv_unref(base);
    g_free(data);
    g_free(got);
    g_free(snap);
}

/* A background copy that yields to the guest writes a page-cached target
 * in 16 KiB pieces (the file lock a guest copy-before-write waits for is
 * held that long at most); one that does not, or into a cache.direct
 * target, in one write.  The data is the same either way. */
static void check_yielding_pieces(bool yield, const char *direct,
                                  uint64_t writes)
{
    g_autofree char *spath = make_empty("piece-src.img", MiB);
    g_autofree char *tpath = make_empty("piece-tgt.img", MiB);
    BlockNode *src = open_node(spath, "src", NULL);
    BlockNode *tgt = open_node(tpath, "tgt", "cache.direct", direct, NULL);
    uint8_t *data = g_malloc(MiB), *got = g_malloc(MiB);
    g_autoptr(GError) err = NULL;
    BlockCopyState *s;
    BdrvStats before, after;
    int64_t off, n, copied;
    bool is_read;

    for (int64_t i = 0; i < MiB; i++)
        data[i] = (uint8_t)(i * 7 + i / 4096 + 1);
    g_assert_cmpint(bdrv_pwrite(src, 0, MiB, data, 0), ==, 0);
    s = block_copy_state_new(src, tgt, false, &err);
    g_assert_nonnull(s);
    bdrv_get_stats(tgt, &before);
    g_assert_true(block_copy_claim(s, 0, MiB, &off, &n));
    g_assert_cmpint(n, ==, MiB);
    g_assert_cmpint(block_copy_claimed(s, off, n, yield, &is_read, &copied),
                    ==, 0);
    g_assert_cmpint(copied, ==, MiB);
    bdrv_get_stats(tgt, &after);
    g_assert_cmpuint(after.ops[BDRV_ACCT_WRITE] - before.ops[BDRV_ACCT_WRITE],
                     ==, writes);
    g_assert_cmpint(bdrv_pread(tgt, 0, MiB, got), ==, 0);
    g_assert_cmpmem(got, MiB, data, MiB);
    block_copy_state_free(s);
    bdrv_unref(tgt);
    bdrv_unref(src);
    g_free(data);
    g_free(got);
}

static void test_yielding_pieces(void)
{
    check_yielding_pieces(true, "off", MiB / (16 * 1024));
    check_yielding_pieces(false, "off", 1);
    check_yielding_pieces(true, "on", 1);
}

static void test_sync_top_store_cbw(void)
{
    check_sync_top_store(true);
}

static void test_sync_top_store_background(void)
{
    check_sync_top_store(false);
}

/* --- sync=bitmap --------------------------------------------------------- */

#define MARKER 0xee

/* An image of MARKER bytes: chunks the job never wrote stay MARKER, so they
 * are told from copied ones (copied zeroes included). */
static char *make_marked(const char *name, int64_t size)
{
    char *path = make_empty(name, size);
    uint8_t *buf = g_malloc(MiB);
    int fd = open(path, O_WRONLY);

    g_assert_cmpint(fd, >=, 0);
    memset(buf, MARKER, MiB);
    for (int64_t off = 0; off < size; off += MiB)
        g_assert_cmpint(pwrite(fd, buf, MIN(MiB, size - off), off), ==,
                        MIN(MiB, size - off));
    close(fd);
    g_free(buf);
    return path;
}

static bool is_marker(const uint8_t *p, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (p[i] != MARKER)
            return false;
    return true;
}

static BdrvDirtyBitmap *new_bitmap(BlockNode *bs, const char *name,
                                   uint32_t granularity)
{
    g_autoptr(GError) err = NULL;
    BdrvDirtyBitmap *bm = bdrv_create_dirty_bitmap(bs, name, granularity,
                                                   &err);

    if (!bm)
        g_error("bitmap %s: %s", name, err->message);
    return bm;
}

static bool bitmap_busy(BdrvDirtyBitmap *bm)
{
    return !bdrv_dirty_bitmap_check(bm, false, NULL);
}

/* sync=bitmap with a bitmap finer than the chunks, while four threads
 * write anywhere: the chunks holding a dirty granule are the point in
 * time, every other chunk of the target is untouched (no copy-before-write
 * of clean chunks either), and afterwards the bitmap holds the writes made
 * during the job and nothing else. */
static void test_bitmap_copy_only_dirty(void)
{
    uint8_t *snap;
    g_autofree char *spath = make_source("bm-src.img", DISK, &snap);
    g_autofree char *tpath = make_marked("bm-tgt.img", DISK);
    BlockNode *src = open_node(spath, "src", NULL);
    BlockNode *tgt = open_node(tpath, "tgt", NULL);
    BdrvDirtyBitmap *bm = new_bitmap(src, "b0", 4 * KiB);
    g_autoptr(GRand) r = g_rand_new_with_seed(seed);
    uint64_t want[DISK / CHUNK / 64] = { 0 };
    uint64_t touched[DISK / CHUNK / 64] = { 0 };
    BackupOptions o = options(BACKUP_SYNC_BITMAP, 16 * MiB);
    uint8_t *got = g_malloc(DISK);
    int64_t nwant = 0, off;
    JobInfo *info;
    gint stop;
    Writer *w;
    Job *job;

    for (int i = 0; i < 150; i++) {
        int64_t len = g_rand_int_range(r, 1, 128 * KiB);
        bdrv_dirty_bitmap_set(bm, g_rand_int_range(r, 0, DISK - len), len,
                              true);
    }
    for (int64_t c = 0; c < DISK / CHUNK; c++) {
        off = bdrv_dirty_bitmap_next_dirty(bm, c * CHUNK);
        if (off >= 0 && off < (c + 1) * CHUNK) {
            want[c / 64] |= 1ULL << (c % 64);
            nwant++;
        }
    }
    o.bitmap = bm;
    o.bitmap_mode = BITMAP_SYNC_ON_SUCCESS;
    events_reset();
    job = start_backup("bm0", src, tgt, &o);
    g_assert_true(bitmap_busy(bm));
    w = writers_start(src, 4, 0, DISK, 128 * KiB, &stop, touched);
    g_assert_cmpint(job_wait_concluded(job), ==, 0);
    g_assert_cmpint(writers_stop(w, 4), >, 50);
    info = job_query(job);
    g_assert_cmpuint(info->total, ==, nwant * CHUNK);
    g_assert_cmpuint(info->current, ==, nwant * CHUNK);
    job_info_free(info);
    g_assert_cmpint(nwant, >, 20);
    g_assert_cmpint(nwant, <, DISK / CHUNK / 2);

    g_assert_cmpint(bdrv_pread(tgt, 0, DISK, got), ==, 0);
    for (int64_t c = 0; c < DISK / CHUNK; c++) {
        bool copy = want[c / 64] & (1ULL << (c % 64));
        if (copy ? memcmp(got + c * CHUNK, snap + c * CHUNK, CHUNK) != 0
                 : !is_marker(got + c * CHUNK, CHUNK))
            g_error("sync=bitmap: chunk %" G_GINT64_FORMAT " (%s) is wrong "
                    "(seed %u)", c, copy ? "dirty" : "clean", seed);
    }
    g_assert_false(bitmap_busy(bm));
    g_assert_cmpuint(bdrv_dirty_bitmap_count(bm), >, 0);
    for (off = bdrv_dirty_bitmap_next_dirty(bm, 0); off >= 0;
         off = bdrv_dirty_bitmap_next_dirty(bm, off + 4 * KiB)) {
        int64_t c = off / CHUNK;
        if (!(touched[c / 64] & (1ULL << (c % 64))))
            g_error("the bitmap kept a bit at %" G_GINT64_FORMAT " that no "
                    "write during the job set (seed %u)", off, seed);
    }
    job_unref(job);
    bdrv_release_dirty_bitmap(bm);
    bdrv_unref(src);
    bdrv_unref(tgt);
    g_free(got);
    g_free(snap);
}

/* A sync=bitmap job whose target fails at 8 MiB, with a bitmap of 1 MiB
 * granules (16 chunks each) dirty in [0, 16 MiB) and [20, 21 MiB), and a
 * guest write at 24 MiB while it runs.  on-success and never keep every
 * bit; always clears exactly the granules that were copied whole (a
 * granule partly copied stays dirty).  The write is recorded in all. */
static void run_bitmap_failure(BitmapSyncMode mode)
{
    const char *tag = backup_bitmap_mode_str(mode);
    g_autofree char *sname = g_strdup_printf("bmf-%s-src.img", tag);
    g_autofree char *tname = g_strdup_printf("bmf-%s-tgt.img", tag);
    uint8_t *snap;
    g_autofree char *spath = make_source(sname, DISK, &snap);
    g_autofree char *tpath = make_marked(tname, DISK);
    BlockNode *src = open_node(spath, "src", NULL);
    BlockNode *tgt = open_node(tpath, "tgt", NULL);
    BdrvDirtyBitmap *bm = new_bitmap(src, "b0", MiB);
    Fault fault = { .start = 8 * MiB, .end = 8 * MiB + CHUNK,
                    .error = ENOSPC };
    BlockNotifier *n = bdrv_add_before_write_notifier(tgt, fault_notifier,
                                                      &fault);
    BackupOptions o = options(BACKUP_SYNC_BITMAP, 8 * MiB);
    uint8_t *got = g_malloc(DISK), data[4096];
    int64_t whole = 0, partial = 0, expect = MiB; /* the write at 24 MiB */
    Job *job;

    bdrv_dirty_bitmap_set(bm, 0, 16 * MiB, true);
    bdrv_dirty_bitmap_set(bm, 20 * MiB + 5, 1, true);
    o.bitmap = bm;
    o.bitmap_mode = mode;
    job = start_backup(tag, src, tgt, &o);
    memset(data, 0x42, sizeof(data));
    g_assert_cmpint(bdrv_pwrite(src, 24 * MiB + 8192, sizeof(data), data, 0),
                    ==, 0);
    g_assert_cmpint(job_wait_concluded(job), ==, -ENOSPC);
    g_assert_false(bitmap_busy(bm));

    g_assert_cmpint(bdrv_pread(tgt, 0, DISK, got), ==, 0);
    for (int64_t g = 0; g < DISK / MiB; g++) {
        bool in_set = g < 16 || g == 20, copied = true, dirty;
        for (int64_t c = g * MiB; c < (g + 1) * MiB; c += CHUNK) {
            bool marker = is_marker(got + c, CHUNK);
            if (!marker && memcmp(got + c, snap + c, CHUNK) != 0)
                g_error("chunk at %" G_GINT64_FORMAT " is neither untouched "
                        "nor the point in time (seed %u)", c, seed);
            if (!in_set && !marker)
                g_error("clean chunk at %" G_GINT64_FORMAT " was copied "
                        "(seed %u)", c, seed);
            copied &= !marker;
        }
        if (!in_set)
            continue;
        whole += copied;
        partial += !copied;
        dirty = !(mode == BITMAP_SYNC_ALWAYS && copied);
        /* A copy is a run of up to 1 MiB: when the run that hits the fault
         * began in the granule before it, its first chunks reached the
         * target but the run failed as a whole, so they count as not
         * copied (as in QEMU's block-copy): dirty is the safe answer. */
        if (mode == BITMAP_SYNC_ALWAYS && copied &&
            (g + 1) * MiB > fault.start - MiB &&
            bdrv_dirty_bitmap_get(bm, g * MiB)) {
            expect += MiB;
            continue;
        }
        if (bdrv_dirty_bitmap_get(bm, g * MiB) != dirty)
            g_error("bitmap-mode=%s: granule %" G_GINT64_FORMAT " (%s) is "
                    "%s (seed %u)", tag, g, copied ? "copied" : "not copied",
                    dirty ? "clean" : "dirty", seed);
        expect += dirty ? MiB : 0;
    }
    g_assert_true(bdrv_dirty_bitmap_get(bm, 24 * MiB));
    g_assert_cmpuint(bdrv_dirty_bitmap_count(bm), ==, expect);
    g_assert_cmpint(whole, >, 0);   /* [0, 1 MiB) at least */
    g_assert_cmpint(partial, >, 0); /* [8, 9 MiB) at least */
    job_unref(job);
    bdrv_remove_before_write_notifier(tgt, n);
    bdrv_release_dirty_bitmap(bm);
    bdrv_unref(src);
    bdrv_unref(tgt);
    g_free(got);
    g_free(snap);
}

static void test_bitmap_failure_on_success(void)
{
    run_bitmap_failure(BITMAP_SYNC_ON_SUCCESS);
}

static void test_bitmap_failure_always(void)
{
    run_bitmap_failure(BITMAP_SYNC_ALWAYS);
}

static void test_bitmap_failure_never(void)
{
    run_bitmap_failure(BITMAP_SYNC_NEVER);
}

static void expect_create_error(BlockNode *src, BlockNode *tgt,
                                const BackupOptions *o, const char *msg)
{
    GError *err = NULL;

    g_assert_null(backup_job_create("bmc1", src, tgt, o, &err));
    g_assert_nonnull(err);
    if (!g_str_has_prefix(err->message, msg))
        g_error("expected '%s...', got '%s'", msg, err->message);
    g_error_free(err);
    g_assert_false(bdrv_op_is_blocked(src, BDRV_OP_DELETE, NULL));
}

static void test_bitmap_checks(void)
{
    g_autofree char *a = make_empty("bmc-a.img", 4 * MiB);
    g_autofree char *b = make_empty("bmc-b.img", 4 * MiB);
    BlockNode *src = open_node(a, "src", NULL), *tgt = open_node(b, "tgt",
                                                                 NULL);
    BdrvDirtyBitmap *bm = new_bitmap(src, "b0", 64 * KiB);
    BdrvDirtyBitmap *other = new_bitmap(tgt, "t0", 64 * KiB);
    BdrvDirtyBitmap *bad = new_bitmap(src, "bad", 64 * KiB);
    BackupOptions o = options(BACKUP_SYNC_BITMAP, 1 * MiB);
    GError *err = NULL;
    Job *job;

    expect_create_error(src, tgt, &o, "must provide a valid bitmap name for "
                        "'bitmap' sync mode");
    o.bitmap = other;
    expect_create_error(src, tgt, &o, "Bitmap 't0' is not a bitmap of the "
                        "source 'src'");
    o.bitmap = bm;
    o.sync = BACKUP_SYNC_NONE;
    expect_create_error(src, tgt, &o, "sync mode 'none' does not produce "
                        "meaningful bitmap outputs");
    o.sync = BACKUP_SYNC_BITMAP;
    bdrv_dirty_bitmap_set_inconsistent(bad);
    o.bitmap = bad;
    expect_create_error(src, tgt, &o, "Bitmap 'bad' is inconsistent and "
                        "cannot be used");
    o.bitmap = bm;
    g_assert_true(bdrv_dirty_bitmap_set_busy(bm, "exported by NBD export "
                                                 "'e'"));
    expect_create_error(src, tgt, &o, "Bitmap 'b0' is currently in use by "
                        "another operation (exported by NBD export 'e') and "
                        "cannot be used");
    bdrv_dirty_bitmap_set_busy(bm, NULL);

    /* While a job holds the bitmap, it is busy for everyone else; a
     * cancel gives it back with its bits. */
    bdrv_dirty_bitmap_set(bm, 0, 4 * MiB, true);
    job = start_backup("bmc0", src, tgt, &o);
    g_assert_false(bdrv_dirty_bitmap_set_busy(bm, "another job"));
    g_assert_false(bdrv_dirty_bitmap_check(bm, false, &err));
    g_assert_cmpstr(err->message, ==, "Bitmap 'b0' is currently in use by "
                    "another operation (backup job 'bmc0') and cannot be "
                    "used");
    g_clear_error(&err);
    g_assert_true(job_user_cancel(job, true, &err));
    g_assert_cmpint(job_wait_concluded(job), ==, -ECANCELED);
    g_assert_false(bitmap_busy(bm));
    g_assert_cmpuint(bdrv_dirty_bitmap_count(bm), ==, 4 * MiB);
    job_unref(job);
    bdrv_release_dirty_bitmap(bm);
    bdrv_release_dirty_bitmap(other);
    bdrv_release_dirty_bitmap(bad);
    bdrv_unref(src);
    bdrv_unref(tgt);
}

static void test_op_blockers(void)
{
    g_autofree char *a = make_empty("blk-a.img", 4 * MiB);
    g_autofree char *b = make_empty("blk-b.img", 4 * MiB);
    g_autofree char *c = make_empty("blk-c.img", 4 * MiB);
    g_autofree char *d = make_empty("blk-d.img", 2 * MiB);
    BlockNode *na = open_node(a, "na", NULL), *nb = open_node(b, "nb", NULL);
    BlockNode *nc = open_node(c, "nc", NULL), *nd = open_node(d, "nd", NULL);
    BackupOptions o = options(BACKUP_SYNC_NONE, 0);
    GError *err = NULL;
    Job *job;

    job = start_backup("blk0", na, nb, &o);
    {
        /* A second backup of one source runs beside the first, as in QEMU,
         * each with its own copy-before-write. */
        Job *second = backup_job_create("blk1", na, nc, &o, &err);
        g_assert_no_error(err);
        job_ref(second);
        job_start(second);
        g_assert_true(job_user_cancel(second, true, &err));
        job_wait_concluded(second);
        job_unref(second);
    }
    g_assert_null(backup_job_create("blk1", nc, nb, &o, &err));
    g_assert_cmpstr(err->message, ==, "Node 'nb' is busy: in use by backup "
                    "job 'blk0' as its target");
    g_clear_error(&err);
    g_assert_null(backup_job_create("blk1", nb, nc, &o, &err));
    g_clear_error(&err);
    g_assert_true(bdrv_op_is_blocked(nb, BDRV_OP_EXPORT_WRITABLE, NULL));
    g_assert_true(bdrv_op_is_blocked(na, BDRV_OP_DELETE, NULL));
    g_assert_false(bdrv_op_is_blocked(na, BDRV_OP_EXPORT_WRITABLE, NULL));
    g_assert_null(backup_job_create("blk0", nc, nd, &o, &err));
    g_assert_cmpstr(err->message, ==, "Source and target image have "
                    "different sizes");
    g_clear_error(&err);
    g_assert_null(backup_job_create("1blk", nc, nc, &o, &err));
    g_assert_cmpstr(err->message, ==, "Source and target cannot be the same");
    g_clear_error(&err);
    {
        g_autofree char *e = make_empty("blk-e.img", 4 * MiB);
        BlockNode *ne = open_node(e, "ne", NULL);
        g_assert_null(backup_job_create("blk0", nc, ne, &o, &err));
        g_assert_cmpstr(err->message, ==, "Job ID 'blk0' already in use");
        g_clear_error(&err);
        g_assert_null(backup_job_create("1blk", nc, ne, &o, &err));
        g_assert_cmpstr(err->message, ==, "Invalid job ID '1blk'");
        g_clear_error(&err);
        /* A failed creation left no blocker behind. */
        g_assert_false(bdrv_op_is_blocked(nc, BDRV_OP_DELETE, NULL));
        bdrv_unref(ne);
    }
    g_assert_true(job_user_cancel(job, true, &err));
    job_wait_concluded(job);
    job_unref(job);
    g_assert_false(bdrv_op_is_blocked(na, BDRV_OP_DELETE, NULL));
    g_assert_false(bdrv_op_is_blocked(nb, BDRV_OP_EXPORT_WRITABLE, NULL));
    bdrv_unref(na);
    bdrv_unref(nb);
    bdrv_unref(nc);
    bdrv_unref(nd);
}

/* auto-finalize=false, auto-dismiss=false: pending until finalized,
 * concluded until dismissed, as QEMU. */
static void test_manual_finalize_dismiss(void)
{
    BlockNode *src = open_null("msrc", 4 * MiB);
    BlockNode *tgt = open_null("mtgt", 4 * MiB);
    BackupOptions o = options(BACKUP_SYNC_FULL, 0);
    GError *err = NULL;
    JobInfo *info;
    Job *job, *again;

    o.job_flags = JOB_MANUAL_FINALIZE | JOB_MANUAL_DISMISS;
    events_reset();
    job = start_backup("man0", src, tgt, &o);
    wait_status(job, JOB_STATUS_PENDING);
    g_assert_cmpint(event_find("pending", 0), >=, 0);
    g_assert_cmpint(event_find("completed", 0), <, 0);
    g_assert_false(job_dismiss(job, &err));
    g_assert_cmpstr(err->message, ==, "Job 'man0' in state 'pending' cannot "
                    "accept command verb 'dismiss'");
    g_clear_error(&err);
    g_assert_true(job_finalize(job, &err));
    g_assert_cmpstr(job_status_str(job_status_now(job)), ==, "concluded");
    again = job_get("man0");
    g_assert_true(again == job);
    job_unref(again);
    info = job_query(job);
    g_assert_cmpuint(info->current, ==, 4 * MiB);
    job_info_free(info);
    g_assert_true(job_dismiss(job, &err));
    g_assert_null(job_get("man0"));
    assert_event_order("status:waiting", "status:pending", "pending",
                       "completed", "status:concluded", "status:null", NULL);
    job_unref(job);
    bdrv_unref(src);
    bdrv_unref(tgt);
}

/* Shutdown cancels every job, whatever its state. */
static void test_cancel_sync_all(void)
{
    BlockNode *s1 = open_null("c1", 64 * MiB), *t1 = open_null("d1", 64 * MiB);
    BlockNode *s2 = open_null("c2", 4 * MiB), *t2 = open_null("d2", 4 * MiB);
    BackupOptions slow = options(BACKUP_SYNC_FULL, 1 * MiB);
    BackupOptions manual = options(BACKUP_SYNC_FULL, 0);
    Job *j1, *j2;

    manual.job_flags = JOB_MANUAL_FINALIZE | JOB_MANUAL_DISMISS;
    j1 = start_backup("all1", s1, t1, &slow);
    j2 = start_backup("all2", s2, t2, &manual);
    wait_status(j2, JOB_STATUS_PENDING);
    job_cancel_sync_all();
    g_assert_cmpstr(job_status_str(job_status_now(j1)), ==, "null");
    g_assert_cmpstr(job_status_str(job_status_now(j2)), ==, "null");
    g_assert_null(job_get("all1"));
    job_unref(j1);
    job_unref(j2);
    bdrv_unref(s1);
    bdrv_unref(t1);
    bdrv_unref(s2);
    bdrv_unref(t2);
}

int main(int argc, char **argv)
{
    const char *s = g_getenv("SNAPNBD_SEED");
    int ret;

    g_test_init(&argc, &argv, NULL);
    seed = s ? (guint32)g_ascii_strtoull(s, NULL, 10)
             : (guint32)g_get_real_time();
    fprintf(stderr, "# unit-backup seed %u (SNAPNBD_SEED=%u replays it)\n",
            seed, seed);
    tmpdir = g_dir_make_tmp("snapnbd-backup-XXXXXX", NULL);
    events = g_ptr_array_new_with_free_func(g_free);
    job_set_event_hook(event_hook);
    g_test_add_func("/backup/full-under-load", test_full_under_load);
    g_test_add_func("/backup/full-under-load-direct",
                    test_full_under_load_direct);
    g_test_add_func("/backup/overlapping-writers", test_overlapping_writers);
    g_test_add_func("/backup/cancel", test_cancel);
    g_test_add_func("/backup/pause-resume", test_pause_resume);
    g_test_add_func("/backup/speed", test_speed);
    g_test_add_func("/backup/throughput", test_throughput);
    g_test_add_func("/backup/error/report", test_error_report);
    g_test_add_func("/backup/error/ignore", test_error_ignore);
    g_test_add_func("/backup/error/stop", test_error_stop);
    g_test_add_func("/backup/error/enospc", test_error_enospc);
    g_test_add_func("/backup/error/copy-before-write", test_cbw_failure);
    g_test_add_func("/backup/error/copy-before-write-while-stopped",
                    test_cbw_failure_while_stopped);
    g_test_add_func("/backup/sync-none", test_sync_none);
    g_test_add_func("/backup/fleecing-readers", test_fleecing_readers);
    g_test_add_func("/backup/sync-top-store/copy-before-write",
                    test_sync_top_store_cbw);
    g_test_add_func("/backup/sync-top-store/background",
                    test_sync_top_store_background);
    g_test_add_func("/backup/yielding-copy-pieces", test_yielding_pieces);
    g_test_add_func("/backup/op-blockers", test_op_blockers);
    g_test_add_func("/backup/drained-section", test_drained_job);
    g_test_add_func("/backup/bitmap/copy-only-dirty",
                    test_bitmap_copy_only_dirty);
    g_test_add_func("/backup/bitmap/failure-on-success",
                    test_bitmap_failure_on_success);
    g_test_add_func("/backup/bitmap/failure-always",
                    test_bitmap_failure_always);
    g_test_add_func("/backup/bitmap/failure-never",
                    test_bitmap_failure_never);
    g_test_add_func("/backup/bitmap/checks", test_bitmap_checks);
    g_test_add_func("/job/manual-finalize-dismiss",
                    test_manual_finalize_dismiss);
    g_test_add_func("/job/cancel-sync-all", test_cancel_sync_all);
    ret = g_test_run();
    {
        g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", tmpdir);
        if (system(cmd) != 0)
            ret = ret ? ret : 1;
    }
    job_set_event_hook(NULL);
    g_ptr_array_unref(events);
    return ret;
}
