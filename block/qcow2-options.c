/*
 * qcow2-options.c - the qcow2 runtime options QEMU 7.2 takes when it opens
 * an image (qcow2_update_options_prepare): the metadata cache sizes,
 * cache-clean-interval, lazy-refcounts and pass-discard-*, with QEMU's
 * checks, words and order, so that libvirt's cache-size and the like work
 * and a bad value is named as QEMU names it.
 *
 * What they change here: the L2 and refcount caches get the sizes QEMU
 * would compute (in whole tables: an L2 cache "entry" is one table, so
 * l2-cache-entry-size is checked but changes only how QEMU would slice the
 * same memory).  The others are checked and kept: snapnbd's caches are not
 * cleaned on a timer, refcounts are always written in order (an image with
 * lazy-refcounts stays consistent, only slower to write), and a freed
 * cluster is passed down as a discard whenever the file node unmaps.
 */
#include "qcow2.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>

#define QCOW2_MIN_L2_CACHE_TABLES 2           /* QEMU's MIN_L2_CACHE_SIZE */
#define QCOW2_MIN_REFCOUNT_CACHE_TABLES 4     /* MIN_REFCOUNT_CACHE_SIZE */
#define QCOW2_DEFAULT_L2_CACHE_MAX (32 * 1024 * 1024)

typedef enum { OPT_SIZE, OPT_NUMBER, OPT_BOOL } OptType;

/* In the order QEMU's qemu_opts_absorb_qdict meets them: its QDict's, by
 * hash bucket (qdict.c's tdb hash modulo 512: 0, 74, 107, ...), so that of
 * two bad values the one QEMU names is named. */
static const struct {
    const char *name;
    OptType type;
} runtime_opts[] = {
    { "refcount-cache-size", OPT_SIZE },
    { "cache-size", OPT_SIZE },
    { "lazy-refcounts", OPT_BOOL },
    { "pass-discard-snapshot", OPT_BOOL },
    { "pass-discard-other", OPT_BOOL },
    { "cache-clean-interval", OPT_NUMBER },
    { "l2-cache-entry-size", OPT_SIZE },
    { "pass-discard-request", OPT_BOOL },
    { "l2-cache-size", OPT_SIZE },
};

typedef struct {
    bool set;
    uint64_t value;   /* a size or number; a bool as 0 or 1 */
} OptValue;

/* QEMU's parse_option_number: strtoull in any base (so "-1" wraps). */
static bool parse_number(const char *key, const char *v, uint64_t *out,
                         GError **errp)
{
    char *end;

    errno = 0;
    *out = strtoull(v, &end, 0);
    if (errno == ERANGE) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Value '%s' out of range for parameter '%s'", v, key);
        return false;
    }
    if (end == v || *end) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Parameter '%s' expects a number", key);
        return false;
    }
    return true;
}

static bool take_all(GHashTable *options, OptValue *vals, GError **errp)
{
    for (size_t i = 0; i < G_N_ELEMENTS(runtime_opts); i++) {
        const char *key = runtime_opts[i].name;
        g_autofree char *v = NULL;
        GError *err = NULL;

        if (!g_hash_table_contains(options, key))
            continue;
        vals[i].set = true;
        switch (runtime_opts[i].type) {
        case OPT_SIZE:
            if (!opt_take_size_u64(options, key, &vals[i].value, errp))
                return false;
            break;
        case OPT_NUMBER:
            v = opt_take(options, key);
            if (!parse_number(key, v, &vals[i].value, errp))
                return false;
            break;
        case OPT_BOOL:
            vals[i].value = opt_take_bool(options, key, false, &err);
            if (err) {
                g_propagate_error(errp, err);
                return false;
            }
            break;
        }
    }
    return true;
}

static const OptValue *find(const OptValue *vals, const char *name)
{
    for (size_t i = 0; i < G_N_ELEMENTS(runtime_opts); i++)
        if (strcmp(runtime_opts[i].name, name) == 0)
            return &vals[i];
    g_assert_not_reached();
}

/* QEMU allocates each cache whole when it opens the image, and Linux
 * refuses one allocation larger than its memory and swap (overcommit's
 * heuristic): such a cache is refused as QEMU's is.  snapnbd's caches
 * fill as tables are used, so any size that passes costs nothing yet. */
static bool could_allocate(uint64_t bytes)
{
    struct sysinfo si;

    if (sysinfo(&si) < 0)
        return true;
    return bytes / si.mem_unit <= (uint64_t)si.totalram + si.totalswap;
}

/* QEMU's read_cache_sizes: the L2 and refcount cache bytes. */
static bool cache_sizes(Qcow2State *s, const OptValue *vals,
                        uint64_t *l2_bytes, uint64_t *refcount_bytes,
                        GError **errp)
{
    const OptValue *combined = find(vals, "cache-size");
    const OptValue *l2 = find(vals, "l2-cache-size");
    const OptValue *refcount = find(vals, "refcount-cache-size");
    const OptValue *entry = find(vals, "l2-cache-entry-size");
    uint64_t min_refcount = QCOW2_MIN_REFCOUNT_CACHE_TABLES *
                            (uint64_t)s->cluster_size;
    uint64_t max_l2 = (s->size + s->cluster_size - 1) / s->cluster_size * 8;
    uint64_t l2_setting = l2->set ? l2->value : QCOW2_DEFAULT_L2_CACHE_MAX;
    uint64_t entry_size = entry->set ? entry->value : s->cluster_size;

    max_l2 = (max_l2 + s->cluster_size - 1) / s->cluster_size *
             s->cluster_size;
    *refcount_bytes = refcount->set ? refcount->value : 0;
    *l2_bytes = MIN(max_l2, l2_setting);
    if (combined->set) {
        if (l2->set && refcount->set) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                        "cache-size, l2-cache-size and refcount-cache-size "
                        "may not be set at the same time");
            return false;
        }
        if (l2->set && l2_setting > combined->value) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                        "l2-cache-size may not exceed cache-size");
            return false;
        }
        if (*refcount_bytes > combined->value) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                        "refcount-cache-size may not exceed cache-size");
            return false;
        }
        if (l2->set) {
            *refcount_bytes = combined->value - *l2_bytes;
        } else if (refcount->set) {
            *l2_bytes = combined->value - *refcount_bytes;
        } else if (combined->value >= max_l2 + min_refcount) {
            *l2_bytes = max_l2;
            *refcount_bytes = combined->value - max_l2;
        } else {
            *refcount_bytes = MIN(combined->value, min_refcount);
            *l2_bytes = combined->value - *refcount_bytes;
        }
    }
    /* QEMU slices a cache that cannot hold every table in 4 KiB pieces */
    if (*l2_bytes < max_l2 && !entry->set)
        entry_size = MIN(s->cluster_size, 4096);
    if (entry_size < 512 || entry_size > s->cluster_size ||
        (entry_size & (entry_size - 1))) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "L2 cache entry size must be a power of two between "
                    "512 and the cluster size (%u)", s->cluster_size);
        return false;
    }
    /* QEMU counts entries of that size; INT_MAX of them is its limit */
    if (*l2_bytes / entry_size > INT_MAX) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "L2 cache size too big");
        return false;
    }
    if (*refcount_bytes / s->cluster_size > INT_MAX) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Refcount cache size too big");
        return false;
    }
    if (!could_allocate(*l2_bytes / entry_size * entry_size) ||
        !could_allocate(*refcount_bytes / s->cluster_size * s->cluster_size)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Could not allocate metadata caches");
        return false;
    }
    return true;
}

bool qcow2_take_runtime_options(BlockNode *bs, GHashTable *options,
                                Qcow2CacheSizes *sizes, GError **errp)
{
    Qcow2State *s = bs->opaque;
    OptValue vals[G_N_ELEMENTS(runtime_opts)] = { 0 };
    const OptValue *lazy, *interval;
    uint64_t l2_bytes, refcount_bytes;

    if (!take_all(options, vals, errp) ||
        !cache_sizes(s, vals, &l2_bytes, &refcount_bytes, errp))
        return false;
    interval = find(vals, "cache-clean-interval");
    if (interval->set && interval->value > UINT_MAX) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Cache clean interval too big");
        return false;
    }
    /* (a version 2 header has no feature bits to default it on) */
    lazy = find(vals, "lazy-refcounts");
    if (lazy->set && lazy->value && s->version < 3) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Lazy refcounts require a qcow2 image with at least "
                    "qemu 1.1 compatibility level");
        return false;
    }
    sizes->l2_tables = MAX(l2_bytes / s->cluster_size,
                           QCOW2_MIN_L2_CACHE_TABLES);
    /* snapnbd's own default unless given: QEMU's 4 tables are slow for
     * allocating writes */
    sizes->refcount_tables =
        find(vals, "refcount-cache-size")->set || find(vals, "cache-size")->set
            ? MAX(refcount_bytes / s->cluster_size,
                  QCOW2_MIN_REFCOUNT_CACHE_TABLES)
            : 0;
    return true;
}
