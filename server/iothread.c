/*
 * iothread.c - iothread objects: an idle host thread each (iothread.h).
 */
#include "iothread.h"

#include "server/qmp/qmp-keyval.h"

#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef struct IoThread {
    IoThreadInfo info;
    char *id;
    GThread *thread;
    GMutex lock;
    GCond cond;
    bool started, stopping;
} IoThread;

static GMutex iothreads_lock;
static GPtrArray *iothreads; /* of IoThread *, oldest first */

static gpointer iothread_run(gpointer opaque)
{
    IoThread *t = opaque;
    g_autofree char *name = g_strdup_printf("IO %s", t->id);

    name[MIN(strlen(name), 15)] = '\0'; /* the kernel's limit for comm */
    pthread_setname_np(pthread_self(), name);
    g_mutex_lock(&t->lock);
    t->info.thread_id = (int)syscall(SYS_gettid);
    t->started = true;
    g_cond_broadcast(&t->cond);
    while (!t->stopping)
        g_cond_wait(&t->cond, &t->lock);
    g_mutex_unlock(&t->lock);
    return NULL;
}

static bool parse_prop(GHashTable *props, const char *key, int64_t *out,
                       GError **errp)
{
    const char *v = g_hash_table_lookup(props, key);
    gint64 n;

    *out = 0;
    if (!v)
        return true;
    if (!g_ascii_string_to_signed(v, 10, 0, G_MAXINT64, &n, NULL)) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "%s value must be in range [0, %" G_GINT64_FORMAT "]",
                    key, G_MAXINT64);
        return false;
    }
    *out = n;
    return true;
}

/* The pool sizes are not used (no thread pool per iothread), but checked
 * as QEMU's aio_context_set_thread_pool_params does: max defaults to 64. */
static bool pool_sizes_valid(GHashTable *props, int64_t min, int64_t max,
                             GError **errp)
{
    if (!g_hash_table_contains(props, "thread-pool-max"))
        max = 64;
    if (min > max || max <= 0 || min > INT_MAX || max > INT_MAX) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "bad thread-pool-min/thread-pool-max values");
        return false;
    }
    return true;
}

/* The properties as QEMU's output visitor puts them into the QDict it sets
 * them from (user_creatable_add_qapi): the base type's members first. */
static const char *const schema_order[] = {
    "aio-max-batch", "thread-pool-min", "thread-pool-max",
    "poll-max-ns", "poll-grow", "poll-shrink",
};

static int schema_index(const char *name)
{
    for (size_t i = 0; i < G_N_ELEMENTS(schema_order); i++)
        if (strcmp(schema_order[i], name) == 0)
            return (int)i;
    return -1;
}

/* QDict order: by bucket; in a bucket, the member put last first
 * (thread-pool-max before thread-pool-min). */
static gint by_qdict_bucket(gconstpointer a, gconstpointer b)
{
    const char *ka = *(const char *const *)a, *kb = *(const char *const *)b;
    unsigned x = qmp_qdict_bucket(ka), y = qmp_qdict_bucket(kb);

    if (x != y)
        return x < y ? -1 : 1;
    return schema_index(kb) - schema_index(ka);
}

/* The properties in the order QEMU sets them (its QDict's), so that of
 * two bad values the same one is named. */
static bool parse_props(IoThread *t, GHashTable *props, int64_t *pool_min,
                        int64_t *pool_max, GError **errp)
{
    const struct { const char *name; int64_t *to; } fields[] = {
        { "poll-max-ns", &t->info.poll_max_ns },
        { "poll-grow", &t->info.poll_grow },
        { "poll-shrink", &t->info.poll_shrink },
        { "aio-max-batch", &t->info.aio_max_batch },
        { "thread-pool-min", pool_min },
        { "thread-pool-max", pool_max },
    };
    const char *order[G_N_ELEMENTS(fields)];

    for (size_t i = 0; i < G_N_ELEMENTS(fields); i++) {
        *fields[i].to = 0;
        order[i] = fields[i].name;
    }
    qsort(order, G_N_ELEMENTS(order), sizeof(order[0]), by_qdict_bucket);
    for (size_t i = 0; i < G_N_ELEMENTS(order); i++) {
        for (size_t f = 0; f < G_N_ELEMENTS(fields); f++) {
            if (strcmp(fields[f].name, order[i]) == 0 &&
                !parse_prop(props, order[i], fields[f].to, errp))
                return false;
        }
    }
    return true;
}

static void iothread_free(IoThread *t)
{
    if (t->thread) {
        g_mutex_lock(&t->lock);
        t->stopping = true;
        g_cond_broadcast(&t->cond);
        g_mutex_unlock(&t->lock);
        g_thread_join(t->thread);
    }
    g_mutex_clear(&t->lock);
    g_cond_clear(&t->cond);
    g_free(t->id);
    g_free(t);
}

bool iothread_start(const char *id, GHashTable *props, GError **errp)
{
    IoThread *t = g_new0(IoThread, 1);
    int64_t pool_min, pool_max;

    t->id = g_strdup(id);
    t->info.id = t->id;
    g_mutex_init(&t->lock);
    g_cond_init(&t->cond);
    if (!parse_props(t, props, &pool_min, &pool_max, errp) ||
        !pool_sizes_valid(props, pool_min, pool_max, errp)) {
        iothread_free(t);
        return false;
    }
    t->thread = g_thread_try_new("iothread", iothread_run, t, errp);
    if (!t->thread) {
        iothread_free(t);
        return false;
    }
    g_mutex_lock(&t->lock);
    while (!t->started)
        g_cond_wait(&t->cond, &t->lock);
    g_mutex_unlock(&t->lock);
    g_mutex_lock(&iothreads_lock);
    if (!iothreads)
        iothreads = g_ptr_array_new();
    g_ptr_array_add(iothreads, t);
    g_mutex_unlock(&iothreads_lock);
    return true;
}

static IoThread *take(const char *id)
{
    for (guint i = 0; iothreads && i < iothreads->len; i++) {
        IoThread *t = iothreads->pdata[i];

        if (!strcmp(t->id, id))
            return g_ptr_array_steal_index(iothreads, i);
    }
    return NULL;
}

void iothread_stop(const char *id)
{
    IoThread *t;

    g_mutex_lock(&iothreads_lock);
    t = take(id);
    g_mutex_unlock(&iothreads_lock);
    if (t)
        iothread_free(t);
}

void iothread_stop_all(void)
{
    g_autoptr(GPtrArray) all = NULL;

    g_mutex_lock(&iothreads_lock);
    all = g_steal_pointer(&iothreads);
    g_mutex_unlock(&iothreads_lock);
    for (guint i = 0; all && i < all->len; i++)
        iothread_free(all->pdata[i]);
}

int iothread_thread_id(const char *id)
{
    int tid = -1;

    g_mutex_lock(&iothreads_lock);
    for (guint i = 0; iothreads && i < iothreads->len; i++) {
        IoThread *t = iothreads->pdata[i];

        if (!strcmp(t->id, id))
            tid = t->info.thread_id;
    }
    g_mutex_unlock(&iothreads_lock);
    return tid;
}

void iothread_foreach(void (*fn)(const IoThreadInfo *info, void *opaque),
                      void *opaque)
{
    g_mutex_lock(&iothreads_lock);
    for (guint i = 0; iothreads && i < iothreads->len; i++)
        fn(&((IoThread *)iothreads->pdata[i])->info, opaque);
    g_mutex_unlock(&iothreads_lock);
}
