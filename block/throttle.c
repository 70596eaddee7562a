/*
 * throttle.c - QEMU's "throttle" filter and its throttle-group objects:
 * I/O limits (IOPS and bytes per second, with bursts) shared by every node
 * of a group.
 *
 * Design notes.
 *
 * A group holds QEMU's leaky buckets, one per limit (bps-total, bps-read,
 * bps-write, iops-total, iops-read, iops-write), with QEMU's arithmetic
 * (util/throttle.c): a bucket leaks at its average rate; a request may
 * start when the level is below the bucket size (avg/10 without a burst
 * limit: a tenth of a second of I/O; max * max-length with one, and then
 * the burst level must also be below max/10), and is accounted when it
 * starts (bytes, and operations: a request larger than iops-size counts as
 * several).  Reads wait on the read and total buckets, writes, write-zeroes
 * and discards on the write and total buckets; flushes and block status
 * are not throttled, as in QEMU.
 *
 * Our requests are blocking threads, so a request that may not start
 * sleeps on the group's condition variable until the computed time; the
 * requests of a group start in arrival order within each direction (a
 * ticket), as QEMU queues them.  throttle_release_all (shutdown) lets every
 * waiting and later request through, so SIGTERM never waits for a budget.
 *
 * Groups are objects: "--object throttle-group,id=ID,x-iops-total=N" or
 * QMP object-add, both with QEMU's property names (limits.KEY or x-KEY),
 * kept in a table by id (groups_lock).  A node names its group with
 * "throttle-group"; as an extension a node may instead give limits.KEY
 * itself and gets a group of its own.  A group is reference counted by the
 * table and its nodes; object-del refuses a group in use.
 *
 * Locks: groups_lock guards the table; ThrottleGroup.lock its buckets and
 * tickets.  Never both at once, never across I/O.
 */
#include "block-int.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

enum {
    B_BPS_TOTAL,
    B_BPS_READ,
    B_BPS_WRITE,
    B_IOPS_TOTAL,
    B_IOPS_READ,
    B_IOPS_WRITE,
    B__MAX,
};

static const char *const bucket_names[B__MAX] = {
    "bps-total", "bps-read", "bps-write",
    "iops-total", "iops-read", "iops-write",
};

/* QEMU's THROTTLE_VALUE_MAX. */
#define THROTTLE_VALUE_MAX 1000000000000000LL

typedef struct LeakyBucket {
    double avg;            /* units per second; 0: no limit */
    double max;            /* burst rate; 0: none */
    double level;          /* units in the bucket */
    double burst_level;    /* units in the burst bucket */
    uint64_t burst_length; /* seconds a burst at max may last, >= 1 */
} LeakyBucket;

struct ThrottleGroup {
    char *id;                     /* NULL: a node's own limits */
    gint refcnt;                  /* the table and each node; atomic */
    GMutex lock;
    GCond cond;                   /* a request started or time passed */
    LeakyBucket buckets[B__MAX];  /* guarded by lock */
    uint64_t iops_size;           /* bytes per operation; 0: any size */
    int64_t last_leak;            /* monotonic µs; lock */
    GQueue waiters[2];            /* per direction (read, write): requests
                                   * waiting, the first may start; lock */
};
typedef struct ThrottleGroup ThrottleGroup;

static GMutex groups_lock;
static GHashTable *groups; /* id -> ThrottleGroup * (a reference) */
static gint released;      /* shutdown: nothing waits; atomic */

typedef struct ThrottleState {
    BlockNode *file;
    ThrottleGroup *group;  /* a reference */
} ThrottleState;

/* --- groups --------------------------------------------------------------- */

static ThrottleGroup *group_new(const char *id)
{
    ThrottleGroup *tg = g_new0(ThrottleGroup, 1);

    tg->id = g_strdup(id);
    tg->refcnt = 1;
    g_mutex_init(&tg->lock);
    g_cond_init(&tg->cond);
    for (int i = 0; i < B__MAX; i++)
        tg->buckets[i].burst_length = 1;
    tg->last_leak = g_get_monotonic_time();
    return tg;
}

static void group_unref(ThrottleGroup *tg)
{
    if (!tg || !g_atomic_int_dec_and_test(&tg->refcnt))
        return;
    g_mutex_clear(&tg->lock);
    g_cond_clear(&tg->cond);
    g_free(tg->id);
    g_free(tg);
}

/* What a throttle property is, for QEMU's checks of its value. */
typedef enum {
    VALUE_RATE,   /* avg, max: limits_valid checks the range */
    VALUE_LENGTH, /* a burst length: at most UINT_MAX */
    VALUE_SIZE,   /* iops-size: any */
} ValueKind;

/* @key's value, if given, as QEMU's setters take it: a negative legacy
 * x- value is refused, a negative member of "limits" wraps (to a rate or
 * burst length that limits_valid refuses, an iops-size that only needs an
 * iops). */
static bool take_value(GHashTable *props, const char *key, uint64_t *out,
                       ValueKind kind, bool *given, GError **errp)
{
    g_autofree char *v = opt_take(props, key);
    bool legacy = g_str_has_prefix(key, "x-");
    char *end;
    guint64 n;

    if (!v)
        return true;
    errno = 0;
    if (v[0] == '-' && legacy) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Property values cannot be negative");
        return false;
    }
    n = v[0] == '-' ? (guint64)g_ascii_strtoll(v, &end, 10)
                    : g_ascii_strtoull(v, &end, 10);
    if (errno || end == v || *end) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "bps/iops/max values must be within [0, %lld]",
                    THROTTLE_VALUE_MAX);
        return false;
    }
    if (kind == VALUE_LENGTH && v[0] != '-' && n > UINT_MAX) {
        /* QEMU's words, the legacy setter's without a space */
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "%s value must be in the%srange [0, %u]",
                    legacy ? key : key + strlen("limits."),
                    legacy ? "" : " ", UINT_MAX);
        return false;
    }
    *out = n;
    *given = true;
    return true;
}

/* Every limit under @prefix ("limits." or QEMU's legacy "x-"): KIND,
 * KIND-max, KIND-max-length, and iops-size.  *@given says whether any
 * was there. */
static bool take_limits(GHashTable *props, const char *prefix,
                        ThrottleGroup *tg, bool *given, GError **errp)
{
    for (int i = 0; i < B__MAX; i++) {
        LeakyBucket *b = &tg->buckets[i];
        g_autofree char *avg = g_strconcat(prefix, bucket_names[i], NULL);
        g_autofree char *max = g_strconcat(avg, "-max", NULL);
        g_autofree char *len = g_strconcat(max, "-length", NULL);
        uint64_t v;
        bool avg_given = false, max_given = false, len_given = false;

        /* each assigned only if given: a rate past 2^64 (a negative one,
         * wrapped) would not survive a trip through uint64_t */
        if (!take_value(props, avg, &v, VALUE_RATE, &avg_given, errp))
            return false;
        if (avg_given)
            b->avg = v;
        if (!take_value(props, max, &v, VALUE_RATE, &max_given, errp))
            return false;
        if (max_given)
            b->max = v;
        *given |= avg_given || max_given;
        v = b->burst_length;
        if (!take_value(props, len, &v, VALUE_LENGTH, &len_given, errp))
            return false;
        *given |= len_given;
        b->burst_length = v;
    }
    {
        g_autofree char *size = g_strconcat(prefix, "iops-size", NULL);
        return take_value(props, size, &tg->iops_size, VALUE_SIZE,
                          given, errp);
    }
}

/* QEMU's throttle_is_valid, with its messages. */
static bool limits_valid(ThrottleGroup *tg, GError **errp)
{
    const LeakyBucket *b = tg->buckets;
    bool bps_both = b[B_BPS_TOTAL].avg &&
                    (b[B_BPS_READ].avg || b[B_BPS_WRITE].avg);
    bool iops_both = b[B_IOPS_TOTAL].avg &&
                     (b[B_IOPS_READ].avg || b[B_IOPS_WRITE].avg);
    bool bps_max_both = b[B_BPS_TOTAL].max &&
                        (b[B_BPS_READ].max || b[B_BPS_WRITE].max);
    bool iops_max_both = b[B_IOPS_TOTAL].max &&
                         (b[B_IOPS_READ].max || b[B_IOPS_WRITE].max);

    if (bps_both || iops_both || bps_max_both || iops_max_both) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "bps/iops/max total values and read/write values cannot "
                    "be used at the same time");
        return false;
    }
    if (tg->iops_size && !b[B_IOPS_TOTAL].avg && !b[B_IOPS_READ].avg &&
        !b[B_IOPS_WRITE].avg) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "iops size requires an iops value to be set");
        return false;
    }
    for (int i = 0; i < B__MAX; i++) {
        const char *msg = NULL;
        if (b[i].avg > THROTTLE_VALUE_MAX || b[i].max > THROTTLE_VALUE_MAX) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                        "bps/iops/max values must be within [0, %lld]",
                        THROTTLE_VALUE_MAX);
            return false;
        }
        if (!b[i].burst_length)
            msg = "the burst length cannot be 0";
        else if (b[i].burst_length > 1 && !b[i].max)
            msg = "burst length set without burst rate";
        else if (b[i].max && b[i].burst_length > THROTTLE_VALUE_MAX / b[i].max)
            msg = "burst length too high for this burst rate";
        else if (b[i].max && !b[i].avg)
            msg = "bps_max/iops_max require corresponding bps/iops values";
        else if (b[i].max && b[i].max < b[i].avg)
            msg = "bps_max/iops_max cannot be lower than bps/iops";
        if (msg) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                        "%s", msg);
            return false;
        }
    }
    return true;
}

/* The bucket of @key in a QDict (QEMU's tdb_hash % 512): QEMU sets an
 * object's properties in that order. */
static unsigned qdict_bucket(const char *key)
{
    unsigned value = 0x238F13AF * (unsigned)strlen(key);

    for (unsigned i = 0; key[i]; i++)
        value += (unsigned)(unsigned char)key[i] << (i * 5 % 24);
    return (1103515243 * value + 12345) % 512;
}

static gint by_qdict_bucket(gconstpointer a, gconstpointer b)
{
    unsigned x = qdict_bucket(*(const char *const *)a);
    unsigned y = qdict_bucket(*(const char *const *)b);

    return x < y ? -1 : x > y;
}

/* The group's properties as QEMU's setters take them, in QEMU's order:
 * "limits" (all its members at once, checked at once against what is set
 * so far) and each legacy x- property (checked when the group is
 * complete). */
static bool set_properties(ThrottleGroup *tg, GHashTable *props,
                           GError **errp)
{
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
    GHashTableIter it;
    gpointer key;
    bool limits = false, given = false;

    g_hash_table_iter_init(&it, props);
    while (g_hash_table_iter_next(&it, &key, NULL)) {
        if (g_str_has_prefix(key, "x-"))
            g_ptr_array_add(names, g_strdup(key));
        limits |= g_str_has_prefix(key, "limits.");
    }
    if (limits)
        g_ptr_array_add(names, g_strdup("limits"));
    g_ptr_array_sort(names, by_qdict_bucket);
    for (guint i = 0; i < names->len; i++) {
        const char *name = g_ptr_array_index(names, i);
        g_autoptr(GHashTable) one = NULL;
        gpointer value;

        if (strcmp(name, "limits") == 0) {
            if (!take_limits(props, "limits.", tg, &given, errp) ||
                !limits_valid(tg, errp))
                return false;
            continue;
        }
        one = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        if (!g_hash_table_steal_extended(props, name, &key, &value))
            continue;
        g_hash_table_insert(one, key, value);
        if (!take_limits(one, "x-", tg, &given, errp))
            return false;
        if (g_hash_table_size(one)) /* not a throttle property after all */
            g_hash_table_insert(props, g_strdup(name),
                                g_strdup(g_hash_table_lookup(one, name)));
    }
    return true;
}

bool throttle_group_create(const char *id, GHashTable *props, GError **errp)
{
    ThrottleGroup *tg;
    GHashTableIter it;
    gpointer key;

    if (!id || !bdrv_id_wellformed(id)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Invalid object id '%s'", id ? id : "");
        return false;
    }
    tg = group_new(id);
    if (!set_properties(tg, props, errp) || !limits_valid(tg, errp))
        goto fail;
    g_hash_table_iter_init(&it, props);
    if (g_hash_table_iter_next(&it, &key, NULL)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Property 'throttle-group.%s' not found",
                    (const char *)key);
        goto fail;
    }
    g_mutex_lock(&groups_lock);
    if (!groups)
        groups = g_hash_table_new(g_str_hash, g_str_equal);
    if (g_hash_table_contains(groups, id)) {
        g_mutex_unlock(&groups_lock);
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_EXISTS,
                    "attempt to add duplicate property '%s' to object "
                    "(type 'container')", id);
        goto fail;
    }
    g_hash_table_insert(groups, tg->id, tg);
    g_mutex_unlock(&groups_lock);
    return true;

fail:
    group_unref(tg);
    return false;
}

bool throttle_group_exists(const char *id)
{
    bool found;

    g_mutex_lock(&groups_lock);
    found = groups && g_hash_table_contains(groups, id);
    g_mutex_unlock(&groups_lock);
    return found;
}

bool throttle_group_delete(const char *id, GError **errp)
{
    ThrottleGroup *tg = NULL;

    g_mutex_lock(&groups_lock);
    if (groups)
        tg = g_hash_table_lookup(groups, id);
    if (tg && g_atomic_int_get(&tg->refcnt) > 1) {
        g_mutex_unlock(&groups_lock);
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_BUSY,
                    "object '%s' is in use, can not be deleted", id);
        return false;
    }
    if (tg)
        g_hash_table_remove(groups, id);
    g_mutex_unlock(&groups_lock);
    if (!tg) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_FOUND,
                    "object '%s' not found", id);
        return false;
    }
    group_unref(tg);
    return true;
}

void throttle_group_delete_all(void)
{
    g_mutex_lock(&groups_lock);
    if (groups) {
        GHashTableIter it;
        gpointer v;
        g_hash_table_iter_init(&it, groups);
        while (g_hash_table_iter_next(&it, NULL, &v)) {
            g_hash_table_iter_remove(&it);
            group_unref(v);
        }
    }
    g_mutex_unlock(&groups_lock);
}

static ThrottleGroup *group_get(const char *id)
{
    ThrottleGroup *tg = NULL;

    g_mutex_lock(&groups_lock);
    if (groups)
        tg = g_hash_table_lookup(groups, id);
    if (tg)
        g_atomic_int_inc(&tg->refcnt);
    g_mutex_unlock(&groups_lock);
    return tg;
}

void throttle_release_all(void)
{
    g_atomic_int_set(&released, 1);
    g_mutex_lock(&groups_lock);
    if (groups) {
        GHashTableIter it;
        gpointer v;
        g_hash_table_iter_init(&it, groups);
        while (g_hash_table_iter_next(&it, NULL, &v)) {
            ThrottleGroup *tg = v;
            g_mutex_lock(&tg->lock);
            g_cond_broadcast(&tg->cond);
            g_mutex_unlock(&tg->lock);
        }
    }
    g_mutex_unlock(&groups_lock);
}

/* --- the leaky buckets (QEMU's util/throttle.c arithmetic) ---------------- */

static void leak(ThrottleGroup *tg, int64_t now)
{
    double seconds = (now - tg->last_leak) / 1e6;

    if (seconds <= 0)
        return;
    for (int i = 0; i < B__MAX; i++) {
        LeakyBucket *b = &tg->buckets[i];
        b->level = MAX(b->level - b->avg * seconds, 0);
        if (b->burst_length > 1)
            b->burst_level = MAX(b->burst_level - b->max * seconds, 0);
    }
    tg->last_leak = now;
}

/* Microseconds until the bucket lets a request start, 0 if now. */
static int64_t bucket_wait(const LeakyBucket *b)
{
    double size, burst_size, extra;

    if (!b->avg)
        return 0;
    if (!b->max) {
        size = b->avg / 10;  /* short bursts at any rate */
        burst_size = 0;
    } else {
        size = b->max * b->burst_length;
        burst_size = b->max / 10;
    }
    extra = b->level - size;
    if (extra > 0)
        return (int64_t)(extra * 1e6 / b->avg) + 1;
    if (b->burst_length > 1) {
        extra = b->burst_level - burst_size;
        if (extra > 0)
            return (int64_t)(extra * 1e6 / b->max) + 1;
    }
    return 0;
}

static void buckets_of(bool is_write, int out[4])
{
    out[0] = B_BPS_TOTAL;
    out[1] = is_write ? B_BPS_WRITE : B_BPS_READ;
    out[2] = B_IOPS_TOTAL;
    out[3] = is_write ? B_IOPS_WRITE : B_IOPS_READ;
}

static int64_t group_wait(ThrottleGroup *tg, bool is_write)
{
    int which[4];
    int64_t wait = 0;

    buckets_of(is_write, which);
    for (int i = 0; i < 4; i++)
        wait = MAX(wait, bucket_wait(&tg->buckets[which[i]]));
    return wait;
}

static void account(ThrottleGroup *tg, bool is_write, uint64_t bytes)
{
    double ops = tg->iops_size && bytes > tg->iops_size
                     ? (double)bytes / tg->iops_size : 1;
    int which[4];

    buckets_of(is_write, which);
    for (int i = 0; i < 4; i++) {
        LeakyBucket *b = &tg->buckets[which[i]];
        double units = i < 2 ? (double)bytes : ops;
        if (!b->avg)
            continue;
        b->level += units;
        if (b->burst_length > 1)
            b->burst_level += units;
    }
}

/* Drained (a transaction, a job's completion): requests in flight go
 * through unthrottled, so that the section begins at once (QEMU disables
 * the limits of a drained node's group member the same way). */
static bool bypass(BlockNode *bs)
{
    return g_atomic_int_get(&released) ||
           g_atomic_int_get(&bs->quiesce_counter) > 0;
}

/* Blocks until the group lets a request of @bytes start, in arrival order
 * per direction, and accounts it.  Waits are sliced so that a drain or
 * shutdown is noticed within DRAIN_CHECK_US. */
#define DRAIN_CHECK_US (10 * 1000)
static void throttle_intercept(BlockNode *bs, ThrottleGroup *tg,
                               bool is_write, uint64_t bytes)
{
    GList me = { 0 };
    GQueue *q = &tg->waiters[is_write];

    g_mutex_lock(&tg->lock);
    g_queue_push_tail_link(q, &me);
    while (!bypass(bs)) {
        int64_t now = g_get_monotonic_time(), wait = DRAIN_CHECK_US;
        if (q->head == &me) {
            leak(tg, now);
            wait = group_wait(tg, is_write);
            if (wait == 0)
                break;
        }
        g_cond_wait_until(&tg->cond, &tg->lock,
                          now + MIN(wait, DRAIN_CHECK_US));
    }
    g_queue_unlink(q, &me);
    account(tg, is_write, bytes);
    g_cond_broadcast(&tg->cond);
    g_mutex_unlock(&tg->lock);
}

/* --- the filter --------------------------------------------------------- */

static int throttle_open(BlockNode *bs, GHashTable *options, GError **errp)
{
    ThrottleState *s = bs->opaque;
    g_autofree char *id = opt_take(options, "throttle-group");
    bool given = false;

    if (id && opt_has_prefix(options, "limits")) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Give either 'throttle-group' or 'limits.*', not both");
        return -EINVAL;
    }
    if (id) {
        s->group = group_get(id);
        if (!s->group) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_FOUND,
                        "Throttle group '%s' does not exist", id);
            return -EINVAL;
        }
    } else {
        s->group = group_new(NULL);
        if (!take_limits(options, "limits.", s->group, &given, errp) ||
            !limits_valid(s->group, errp))
            goto fail;
        if (!given) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                        "Please specify a throttle group");
            goto fail;
        }
    }
    s->file = bdrv_open_child(bs, options, "file", errp);
    if (!s->file)
        goto fail;
    return 0;

fail:
    g_clear_pointer(&s->group, group_unref);
    return -EINVAL;
}

static void throttle_close(BlockNode *bs)
{
    ThrottleState *s = bs->opaque;
    group_unref(s->group);
}

static int64_t throttle_get_length(BlockNode *bs)
{
    ThrottleState *s = bs->opaque;
    return bdrv_getlength(s->file);
}

static void throttle_refresh_limits(BlockNode *bs, BlockLimits *limits)
{
    ThrottleState *s = bs->opaque;
    *limits = *bdrv_limits(s->file);
}

static int throttle_pread(BlockNode *bs, int64_t offset, int64_t bytes,
                          void *buf)
{
    ThrottleState *s = bs->opaque;

    throttle_intercept(bs, s->group, false, bytes);
    return bdrv_pread(s->file, offset, bytes, buf);
}

static int throttle_pwrite(BlockNode *bs, int64_t offset, int64_t bytes,
                           const void *buf, int flags)
{
    ThrottleState *s = bs->opaque;

    throttle_intercept(bs, s->group, true, bytes);
    return bdrv_pwrite(s->file, offset, bytes, buf, flags);
}

static int throttle_pwrite_zeroes(BlockNode *bs, int64_t offset,
                                  int64_t bytes, int flags)
{
    ThrottleState *s = bs->opaque;

    throttle_intercept(bs, s->group, true, bytes);
    return bdrv_pwrite_zeroes(s->file, offset, bytes, flags);
}

static int throttle_pdiscard(BlockNode *bs, int64_t offset, int64_t bytes)
{
    ThrottleState *s = bs->opaque;

    throttle_intercept(bs, s->group, true, bytes);
    return bdrv_pdiscard(s->file, offset, bytes);
}

static int throttle_prefetch(BlockNode *bs, int64_t offset, int64_t bytes)
{
    ThrottleState *s = bs->opaque;
    return bdrv_prefetch(s->file, offset, bytes);
}

static char *throttle_describe(BlockNode *bs)
{
    ThrottleState *s = bs->opaque;

    return g_strdup_printf("(group %s)", s->group->id ? s->group->id
                                                      : "of its own");
}

/* A filter: block status looks through it (io.c); flushes reach the child
 * unthrottled. */
const BlockDriver bdrv_throttle = {
    .name = "throttle",
    .state_size = sizeof(ThrottleState),
    .is_filter = true,
    .open = throttle_open,
    .close = throttle_close,
    .get_length = throttle_get_length,
    .refresh_limits = throttle_refresh_limits,
    .describe = throttle_describe,
    .pread = throttle_pread,
    .pwrite = throttle_pwrite,
    .pwrite_zeroes = throttle_pwrite_zeroes,
    .pdiscard = throttle_pdiscard,
    .prefetch = throttle_prefetch,
    .child_perm = bdrv_child_perm_filtered,
    .supported_write_flags = BDRV_REQ_FUA,
    .supported_zero_flags = BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK,
    .can_fast_zero = true,
};
