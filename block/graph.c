/*
 * graph.c - nodes, children, names, reference counts, open and create.
 *
 * The node-name table is the only global state; it is guarded by
 * names_lock.  A node's children are fixed once open returns, so readers of
 * the graph need no lock for them.
 */
#include "block-int.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

static const BlockDriver *const drivers[] = {
    &bdrv_file,
    &bdrv_raw,
    &bdrv_null,
    &bdrv_null_aio,
    &bdrv_qcow2,
    &bdrv_blkdebug,
    &bdrv_throttle,
    &bdrv_copy_on_read,
    &bdrv_copy_before_write,
    &bdrv_snapshot_access,
    &bdrv_luks,
#ifdef HAVE_RBD
    &bdrv_rbd,
#endif
    &bdrv_nbd,
    &bdrv_mirror_top,
};

static GMutex names_lock;
static GHashTable *names; /* node-name -> BlockNode *, guarded by names_lock */
static guint auto_name_counter;
static uint64_t opened_seq; /* atomic: opens completed so far */

G_DEFINE_QUARK(snapnbd-block-error, bdrv_error)

const BlockDriver *bdrv_find_driver(const char *name)
{
    if (g_strcmp0(name, "null") == 0)
        name = "null-co";
    for (size_t i = 0; i < G_N_ELEMENTS(drivers); i++)
        if (strcmp(drivers[i]->name, name) == 0)
            return drivers[i];
    return NULL;
}

bool bdrv_has_driver(const char *name)
{
    return bdrv_find_driver(name) != NULL;
}

const char *bdrv_probe_format(const char *filename)
{
    char magic[4] = { 0 };
    int fd = open(filename, O_RDONLY | O_CLOEXEC);
    bool qcow2;

    if (fd < 0)
        return "raw";
    qcow2 = read(fd, magic, 4) == 4 && memcmp(magic, "QFI\xfb", 4) == 0;
    close(fd);
    return qcow2 ? "qcow2" : "raw";
}

bool opt_has_prefix(GHashTable *opts, const char *name)
{
    size_t n = strlen(name);
    GHashTableIter it;
    gpointer k;

    g_hash_table_iter_init(&it, opts);
    while (g_hash_table_iter_next(&it, &k, NULL)) {
        const char *key = k;
        if (strncmp(key, name, n) == 0 && (key[n] == '\0' || key[n] == '.'))
            return true;
    }
    return false;
}

GHashTable *opt_new(void)
{
    return g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
}

char *opt_take(GHashTable *opts, const char *key)
{
    gpointer orig_key, value;

    if (!g_hash_table_steal_extended(opts, key, &orig_key, &value))
        return NULL;
    g_free(orig_key);
    return value;
}

bool opt_take_bool(GHashTable *opts, const char *key, bool def,
                   GError **errp)
{
    g_autofree char *v = opt_take(opts, key);

    if (!v)
        return def;
    if (!strcmp(v, "on") || !strcmp(v, "true") || !strcmp(v, "yes"))
        return true;
    if (!strcmp(v, "off") || !strcmp(v, "false") || !strcmp(v, "no"))
        return false;
    g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                "Parameter '%s' expects 'on' or 'off', not '%s'", key, v);
    return def;
}

static int size_suffix_shift(char c)
{
    switch (c) {
    case 'k':
    case 'K':
        return 10;
    case 'M':
        return 20;
    case 'G':
        return 30;
    case 'T':
        return 40;
    default:
        return -1;
    }
}

static bool take_size(GHashTable *opts, const char *key, uint64_t max,
                      uint64_t *out, GError **errp)
{
    g_autofree char *v = opt_take(opts, key);
    char *end;
    guint64 n;

    if (!v)
        return true;
    errno = 0;
    n = g_ascii_strtoull(v, &end, 10);
    /* QEMU's binary suffixes, as in cluster_size=2M. */
    if (end != v && *end && !end[1] && size_suffix_shift(*end) > 0) {
        int shift = size_suffix_shift(*end);
        if (n > (max >> shift))
            errno = ERANGE;
        n <<= shift;
        end++;
    }
    /* QEMU's words (parse_option_size) where it refuses too */
    if (end == v || *end || v[strspn(v, " \t")] == '-') {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Parameter '%s' expects a non-negative number below 2^64",
                    key);
        return false;
    }
    if (errno == ERANGE) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Value '%s' is out of range for parameter '%s'", v, key);
        return false;
    }
    if (errno || n > max) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Parameter '%s' expects a size in bytes, not '%s'",
                    key, v);
        return false;
    }
    *out = n;
    return true;
}

bool opt_take_size(GHashTable *opts, const char *key, uint64_t *out,
                   GError **errp)
{
    return take_size(opts, key, BDRV_MAX_LENGTH, out, errp);
}

bool opt_take_size_u64(GHashTable *opts, const char *key, uint64_t *out,
                       GError **errp)
{
    return take_size(opts, key, G_MAXUINT64, out, errp);
}

GHashTable *opt_take_prefix(GHashTable *opts, const char *prefix)
{
    GHashTable *sub = opt_new();
    size_t len = strlen(prefix);
    GHashTableIter it;
    gpointer k, v;

    g_hash_table_iter_init(&it, opts);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        const char *key = k;
        if (strncmp(key, prefix, len) == 0 && key[len] == '.') {
            g_hash_table_insert(sub, g_strdup(key + len + 1), g_strdup(v));
            g_hash_table_iter_remove(&it);
        }
    }
    return sub;
}

static bool register_name(BlockNode *bs, const char *name, GError **errp)
{
    bool ok = true;

    g_mutex_lock(&names_lock);
    if (!names)
        names = g_hash_table_new(g_str_hash, g_str_equal);
    if (name && g_hash_table_contains(names, name)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_EXISTS,
                    "Duplicate nodes with node-name='%s'", name);
        ok = false;
    } else {
        bs->node_name = name ? g_strdup(name)
                             : g_strdup_printf("#block%03u",
                                               ++auto_name_counter);
        g_hash_table_insert(names, bs->node_name, bs);
    }
    g_mutex_unlock(&names_lock);
    return ok;
}

gint bdrv_newest_first(BlockNode *a, BlockNode *b)
{
    return a->opened_seq > b->opened_seq ? -1 : a->opened_seq < b->opened_seq;
}

BlockNode *bdrv_find_node(const char *node_name)
{
    BlockNode *bs = NULL;

    g_mutex_lock(&names_lock);
    if (names)
        bs = g_hash_table_lookup(names, node_name);
    g_mutex_unlock(&names_lock);
    return bs;
}

/* Under names_lock a node found in the table is not freed yet (its last
 * unref takes the name out first), so the reference is taken on live
 * memory, or not at all once the count reached zero. */
BlockNode *bdrv_find_node_ref(const char *node_name)
{
    BlockNode *bs = NULL;

    g_mutex_lock(&names_lock);
    if (names)
        bs = g_hash_table_lookup(names, node_name);
    if (bs && !bdrv_ref_if_alive(bs))
        bs = NULL;
    g_mutex_unlock(&names_lock);
    return bs;
}

bool bdrv_parse_discard_options(GHashTable *opts, bool *unmap,
                                BdrvDetectZeroes *dz_out, GError **errp)
{
    g_autofree char *discard = opt_take(opts, "discard");
    g_autofree char *dz = opt_take(opts, "detect-zeroes");

    if (!discard || !strcmp(discard, "ignore") || !strcmp(discard, "off")) {
        *unmap = false;
    } else if (!strcmp(discard, "unmap") || !strcmp(discard, "on")) {
        *unmap = true;
    } else {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Invalid discard option '%s' (use ignore or unmap)",
                    discard);
        return false;
    }
    if (!dz || !strcmp(dz, "off")) {
        *dz_out = BDRV_DETECT_ZEROES_OFF;
    } else if (!strcmp(dz, "on")) {
        *dz_out = BDRV_DETECT_ZEROES_ON;
    } else if (!strcmp(dz, "unmap")) {
        if (!*unmap) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                        "setting detect-zeroes to unmap is not allowed "
                        "without setting discard operation to unmap");
            return false;
        }
        *dz_out = BDRV_DETECT_ZEROES_UNMAP;
    } else {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Invalid detect-zeroes option '%s' (use off, on or unmap)",
                    dz);
        return false;
    }
    return true;
}

bool bdrv_check_discard_options(const char *discard,
                                const char *detect_zeroes, GError **errp)
{
    g_autoptr(GHashTable) opts =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    BdrvDetectZeroes dz;
    bool unmap;

    if (discard)
        g_hash_table_insert(opts, g_strdup("discard"), g_strdup(discard));
    if (detect_zeroes)
        g_hash_table_insert(opts, g_strdup("detect-zeroes"),
                            g_strdup(detect_zeroes));
    return bdrv_parse_discard_options(opts, &unmap, &dz, errp);
}

static bool parse_common_options(BlockNode *bs, GHashTable *opts,
                                 GError **errp)
{
    GError *err = NULL;

    bs->read_only = opt_take_bool(opts, "read-only", false, &err);
    if (!err)
        bs->cache_direct = opt_take_bool(opts, "cache.direct", false, &err);
    if (!err)
        bs->no_flush = opt_take_bool(opts, "cache.no-flush", false, &err);
    if (!err)
        bs->force_share = opt_take_bool(opts, "force-share", false, &err);
    if (!err)
        bs->auto_read_only = opt_take_bool(opts, "auto-read-only", false,
                                           &err);
    if (!err && bs->force_share && !bs->read_only)
        g_set_error(&err, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "force-share=on can only be used with read-only images");
    if (err) {
        g_propagate_error(errp, err);
        return false;
    }
    return bdrv_parse_discard_options(opts, &bs->unmap, &bs->detect_zeroes,
                                      errp);
}

static bool reject_leftover_options(BlockNode *bs, GHashTable *opts,
                                    GError **errp)
{
    GHashTableIter it;
    gpointer k;

    g_hash_table_iter_init(&it, opts);
    if (g_hash_table_iter_next(&it, &k, NULL)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Block format '%s' does not support the option '%s'",
                    bs->drv->name, (const char *)k);
        return false;
    }
    return true;
}

static void default_limits(BlockNode *bs)
{
    bs->limits = (BlockLimits){
        .request_alignment = 1,
        .buffer_alignment = 1,
    };
    if (bs->drv->refresh_limits)
        bs->drv->refresh_limits(bs, &bs->limits);
}

static void bdrv_free(BlockNode *bs)
{
    if (bs->children) {
        bdrv_children_detach_all(bs);
        g_ptr_array_free(bs->children, TRUE);
    }
    g_ptr_array_free(bs->parents, TRUE);
    bdrv_release_all_dirty_bitmaps(bs);
    g_mutex_clear(&bs->dirty_lock);
    g_mutex_clear(&bs->reqs_lock);
    g_mutex_clear(&bs->status_cache_lock);
    g_cond_clear(&bs->reqs_cond);
    g_rw_lock_clear(&bs->notifiers_lock);
    g_free(bs->opaque);
    g_free(bs->node_name);
    g_free(bs->filename);
    g_free(bs);
}

static void unregister_name(BlockNode *bs)
{
    g_mutex_lock(&names_lock);
    if (names && bs->node_name &&
        g_hash_table_lookup(names, bs->node_name) == bs)
        g_hash_table_remove(names, bs->node_name);
    g_mutex_unlock(&names_lock);
}

/* Opens with a private copy of @options, consumed as it goes. */
static BlockNode *open_consuming(GHashTable *opts, GError **errp)
{
    g_autofree char *drvname = opt_take(opts, "driver");
    g_autofree char *node_name = opt_take(opts, "node-name");
    const BlockDriver *drv;
    BlockNode *bs;

    if (!drvname) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Parameter 'driver' is missing");
        return NULL;
    }
    drv = bdrv_find_driver(drvname);
    if (!drv) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Unknown driver '%s'", drvname);
        return NULL;
    }
    bs = g_new0(BlockNode, 1);
    bs->drv = drv;
    bs->refcnt = 1;
    bs->children = g_ptr_array_new();
    bs->parents = g_ptr_array_new();
    bs->cumulative_shared = BDRV_PERM_ALL;
    bs->opaque = g_malloc0(drv->state_size ? drv->state_size : 1);
    g_mutex_init(&bs->reqs_lock);
    g_mutex_init(&bs->status_cache_lock);
    g_mutex_init(&bs->dirty_lock);
    g_cond_init(&bs->reqs_cond);
    g_rw_lock_init(&bs->notifiers_lock);

    /* Named before the driver opens, so that the children it attaches
     * name their parent in permission errors (as QEMU does). */
    if (!register_name(bs, node_name, errp) ||
        !parse_common_options(bs, opts, errp))
        goto fail;
    if (drv->open(bs, opts, errp) < 0)
        goto fail;
    if (!reject_leftover_options(bs, opts, errp)) {
        drv->close(bs);
        goto fail;
    }
    bs->total_bytes = drv->get_length(bs);
    if (bs->total_bytes < 0) {
        /* Past open a length is never an errno: callers take it as a
         * size (NBD export size, job totals, range checks). */
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "Could not get the size of '%s': %s",
                    bs->filename ? bs->filename : drvname,
                    g_strerror((int)-bs->total_bytes));
        drv->close(bs);
        goto fail;
    }
    default_limits(bs);
    if (!bs->filename)
        bs->filename = g_strdup("");
    bs->opened_seq = __atomic_add_fetch(&opened_seq, 1, __ATOMIC_RELAXED);
    return bs;

fail:
    unregister_name(bs);
    bdrv_free(bs);
    return NULL;
}

/* A private copy of @options (may be NULL), for consuming. */
static GHashTable *opt_copy(GHashTable *options)
{
    GHashTable *opts = opt_new();
    GHashTableIter it;
    gpointer k, v;

    if (options) {
        g_hash_table_iter_init(&it, options);
        while (g_hash_table_iter_next(&it, &k, &v))
            g_hash_table_insert(opts, g_strdup(k), g_strdup(v));
    }
    return opts;
}

BlockNode *bdrv_open(GHashTable *options, GError **errp)
{
    g_autoptr(GHashTable) opts = opt_copy(options);

    return open_consuming(opts, errp);
}

/* Children inherit the parent's read-only, auto-read-only, force-share
 * and cache settings unless given explicitly, as in QEMU. */
static void inherit_options(BlockNode *parent, GHashTable *child_opts)
{
    if (!g_hash_table_contains(child_opts, "read-only"))
        g_hash_table_insert(child_opts, g_strdup("read-only"),
                            g_strdup(parent->read_only ? "on" : "off"));
    /* As in QEMU, discard=ignore acts at the node it is set on: the
     * layers below always pass discards on. */
    if (!g_hash_table_contains(child_opts, "discard"))
        g_hash_table_insert(child_opts, g_strdup("discard"),
                            g_strdup("unmap"));
    if (parent->force_share && !g_hash_table_contains(child_opts,
                                                      "force-share"))
        g_hash_table_insert(child_opts, g_strdup("force-share"),
                            g_strdup("on"));
    if (parent->auto_read_only && !g_hash_table_contains(child_opts,
                                                         "auto-read-only"))
        g_hash_table_insert(child_opts, g_strdup("auto-read-only"),
                            g_strdup("on"));
    if (!g_hash_table_contains(child_opts, "cache.direct"))
        g_hash_table_insert(child_opts, g_strdup("cache.direct"),
                            g_strdup(parent->cache_direct ? "on" : "off"));
    if (!g_hash_table_contains(child_opts, "cache.no-flush"))
        g_hash_table_insert(child_opts, g_strdup("cache.no-flush"),
                            g_strdup(parent->no_flush ? "on" : "off"));
}

BlockNode *bdrv_open_child(BlockNode *parent, GHashTable *options,
                           const char *name, GError **errp)
{
    g_autofree char *ref = opt_take(options, name);
    g_autoptr(GHashTable) child_opts = opt_take_prefix(options, name);
    BlockNode *child;

    if (ref && g_hash_table_size(child_opts) > 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Cannot reference an existing node for '%s' and give "
                    "options for it at once", name);
        return NULL;
    }
    if (ref) {
        child = bdrv_find_node_ref(ref);
        if (!child) {
            /* QEMU's words (bdrv_lookup_bs) */
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_FOUND,
                        "Cannot find device='%s' nor node-name='%s'", ref,
                        ref);
            return NULL;
        }
    } else {
        if (g_hash_table_size(child_opts) == 0) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                        "A block device must be specified for \"%s\"", name);
            return NULL;
        }
        inherit_options(parent, child_opts);
        child = open_consuming(child_opts, errp);
        if (!child)
            return NULL;
    }
    /* A backing file is only read (copy-on-write happens in the overlay),
     * so it may stay read-only under a writable overlay, as in QEMU.  QEMU
     * refuses other read-only children when the parent takes the write
     * permission: at once for a format such as qcow2, only once something
     * writes for raw (snapnbd refuses raw at once too); its words. */
    if (!parent->read_only && child->read_only &&
        strcmp(name, "backing") != 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_READ_ONLY,
                    "Block node is read-only");
        bdrv_unref(child);
        return NULL;
    }
    if (!bdrv_child_attach(parent, child, name, errp)) {
        bdrv_unref(child);
        return NULL;
    }
    if (strcmp(name, "file") == 0) { /* a node is named by its file */
        g_free(parent->filename);
        parent->filename = g_strdup(child->filename);
    }
    return child;
}

int bdrv_create(const char *driver, const char *filename, uint64_t size,
                GHashTable *options, GError **errp)
{
    const BlockDriver *drv = bdrv_find_driver(driver);
    g_autoptr(GHashTable) opts = opt_copy(options);

    if (!drv || !drv->create) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Driver '%s' does not support image creation", driver);
        return -ENOTSUP;
    }
    return drv->create(filename, size, opts, errp);
}

int bdrv_format(const char *driver, BlockNode *file, uint64_t size,
                GHashTable *options, GError **errp)
{
    const BlockDriver *drv = bdrv_find_driver(driver);
    g_autoptr(GHashTable) opts = opt_copy(options);

    if (!drv || !drv->format) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Driver '%s' does not support blockdev-create", driver);
        return -ENOTSUP;
    }
    return drv->format(file, size, opts, errp);
}

void bdrv_ref(BlockNode *bs)
{
    g_atomic_int_inc(&bs->refcnt);
}

void bdrv_unref(BlockNode *bs)
{
    if (!bs || !g_atomic_int_dec_and_test(&bs->refcnt))
        return;
    unregister_name(bs);
    bs->drv->close(bs);
    bdrv_forget_replacement(bs);
    bdrv_wait_node_readers();
    bdrv_free(bs);
}

bool bdrv_ref_if_alive(BlockNode *bs)
{
    int r;

    do {
        r = g_atomic_int_get(&bs->refcnt);
        if (r <= 0)
            return false;
    } while (!g_atomic_int_compare_and_exchange(&bs->refcnt, r, r + 1));
    return true;
}

const char *bdrv_node_name(BlockNode *bs) { return bs->node_name; }
const char *bdrv_driver_name(BlockNode *bs) { return bs->drv->name; }
const char *bdrv_filename(BlockNode *bs) { return bs->filename; }
bool bdrv_is_read_only(BlockNode *bs) { return bs->read_only; }

int bdrv_chain_depth(BlockNode *top, BlockNode *node)
{
    int depth = 1;

    node = bdrv_skip_filters(node);
    for (BlockNode *n = bdrv_skip_filters(top); n;
         n = bdrv_skip_filters(bdrv_child(n, "backing")), depth++)
        if (n == node)
            return depth;
    return 0;
}

int bdrv_write_backing_file(BlockNode *bs, const char *name,
                            const char *format)
{
    if (!bs->drv->change_backing_file)
        return -ENOTSUP;
    if (bs->read_only)
        return -EPERM;
    return bs->drv->change_backing_file(bs, name, format);
}

bool bdrv_change_backing_file(BlockNode *bs, const char *name,
                              const char *format, GError **errp)
{
    int ret;

    if (!bs->drv->change_backing_file) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Node '%s' (driver '%s') has no backing file to change",
                    bs->node_name, bs->drv->name);
        return false;
    }
    if (bs->read_only) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_READ_ONLY,
                    "Could not change the backing file of read-only node "
                    "'%s'", bs->node_name);
        return false;
    }
    ret = bdrv_write_backing_file(bs, name, format);
    if (ret < 0)
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "Could not change the backing file of '%s' to '%s': %s",
                    bs->node_name, name ? name : "", g_strerror(-ret));
    return ret >= 0;
}
const BlockLimits *bdrv_limits(BlockNode *bs) { return &bs->limits; }
bool bdrv_discard_unmaps(BlockNode *bs) { return bs->unmap; }
bool bdrv_cache_direct(BlockNode *bs) { return bs->cache_direct; }
bool bdrv_cache_no_flush(BlockNode *bs) { return bs->no_flush; }
BdrvDetectZeroes bdrv_detect_zeroes(BlockNode *bs) { return bs->detect_zeroes; }
int bdrv_refcnt(BlockNode *bs) { return g_atomic_int_get(&bs->refcnt); }

void bdrv_foreach_node(void (*fn)(BlockNode *bs, void *opaque), void *opaque)
{
    GHashTableIter it;
    gpointer v;

    g_mutex_lock(&names_lock);
    if (names) {
        g_hash_table_iter_init(&it, names);
        while (g_hash_table_iter_next(&it, NULL, &v))
            fn(v, opaque);
    }
    g_mutex_unlock(&names_lock);
}

static void ref_alive(BlockNode *bs, void *opaque)
{
    if (bdrv_ref_if_alive(bs))
        g_ptr_array_add(opaque, bs);
}

GPtrArray *bdrv_ref_all_nodes(void)
{
    GPtrArray *nodes =
        g_ptr_array_new_with_free_func((GDestroyNotify)bdrv_unref);

    bdrv_foreach_node(ref_alive, nodes);
    return nodes;
}

bool bdrv_id_wellformed(const char *id)
{
    if (!g_ascii_isalpha(id[0]))
        return false;
    for (const char *p = id + 1; *p; p++)
        if (!g_ascii_isalnum(*p) && !strchr("-._", *p))
            return false;
    return true;
}

int64_t bdrv_getlength(BlockNode *bs)
{
    return __atomic_load_n(&bs->total_bytes, __ATOMIC_RELAXED);
}

BlockNode *bdrv_child(BlockNode *bs, const char *name)
{
    for (guint i = 0; i < bs->children->len; i++) {
        BlockChild *c = g_ptr_array_index(bs->children, i);
        if (strcmp(c->name, name) == 0)
            return c->node;
    }
    return NULL;
}

bool bdrv_is_filter(BlockNode *bs)
{
    return bs->drv->is_filter;
}

bool bdrv_is_protocol(BlockNode *bs)
{
    return bs->drv->is_protocol;
}

BlockNode *bdrv_skip_filters(BlockNode *bs)
{
    while (bs && bs->drv->is_filter && bdrv_child(bs, "file"))
        bs = bdrv_child(bs, "file");
    return bs;
}

char *bdrv_describe(BlockNode *bs)
{
    GString *s = g_string_new(NULL);

    for (BlockNode *n = bs; n; ) {
        g_autofree char *d = n->drv->describe ? n->drv->describe(n) : NULL;
        if (s->len)
            g_string_append(s, " -> ");
        g_string_append_printf(s, "%s[%s]%s%s", n->drv->name, n->node_name,
                               d ? " " : "", d ? d : "");
        n = n->children->len
                ? ((BlockChild *)g_ptr_array_index(n->children, 0))->node
                : NULL;
    }
    return g_string_free(s, FALSE);
}

/* All clients of a node share one graph in one process, and a flush
 * flushes every node below: a flush on any connection covers the writes of
 * all of them, which is what NBD_FLAG_CAN_MULTI_CONN promises. */
bool bdrv_can_multi_conn(BlockNode *bs)
{
    return true;
}

bool bdrv_can_fast_zero(BlockNode *bs)
{
    if (!bs->drv->can_fast_zero)
        return false;
    for (guint i = 0; i < bs->children->len; i++) {
        BlockChild *c = g_ptr_array_index(bs->children, i);
        if (!bdrv_can_fast_zero(c->node))
            return false;
    }
    return true;
}

bool bdrv_has_zero_init(BlockNode *bs)
{
    BlockNode *file = bdrv_child(bs, "file");

    if (bdrv_child(bs, "backing"))
        return false;
    if (bs->drv->has_zero_init)
        return bs->drv->has_zero_init(bs);
    return file ? bdrv_has_zero_init(file) : true;
}
