/*
 * rbd.c - the "rbd" protocol driver: a Ceph RBD image through librbd, with
 * QEMU's options (pool, namespace, image, snapshot, conf, user, key-secret,
 * auth-client-required) and its file name syntax
 *
 *     rbd:pool/[namespace/]image[@snap][:conf=PATH][:id=USER][:KEY=VALUE]...
 *
 * where '\' escapes ':', '@', '/' and '=' and any other KEY=VALUE is a Ceph
 * option for rados_conf_set (as QEMU's "key=..." for a cephx key).
 *
 * Design notes.
 *
 * I/O.  snapnbd's block layer is synchronous per worker thread: a driver
 * callback returns when its request is done.  So each request is one librbd
 * aio call (rbd_aio_read, _write, _write_zeroes, _discard, _flush) into the
 * caller's buffer, and the worker waits for its completion
 * (rbd_aio_wait_for_complete); librbd delivers completions on its own
 * finisher thread, so no thread is made per request and as many requests
 * are in flight as the server has workers.  One rbd_image_t serves all
 * workers: librbd's image handle is thread-safe for aio.
 *
 * Locking.  A read-only node (read-only=on, -r, or a snapshot) opens the
 * image with rbd_open_read_only, which never takes RBD's exclusive lock, so
 * it may be exported while another client writes the head.  A writable node
 * lets librbd manage the exclusive lock as QEMU's rbd driver does: it is
 * taken at the first write and handed over cooperatively between writers
 * (RBD's lock protects the object map, not the data).  Permissions between
 * nodes of this process are perm.c's as for any node.
 *
 * Block status comes from rbd_diff_iterate2 from the image's creation: the
 * extents it reports hold data, the rest are holes that read as zeroes.
 * With the fast-diff feature (valid) it answers from the object map, whole
 * objects at a time; without, it asks the OSDs for exact extents.
 *
 * Snapshots.  The node's internal snapshots (snapshot.c) are RBD
 * snapshots, as in QEMU's driver; opened at a snapshot, a node is a
 * point-in-time view kept by the cluster, so an RBD source needs no
 * copy-before-write for a point-in-time export.  x-dirty-since turns the
 * diff between two snapshots into a dirty bitmap for incremental backups.
 */
#include "block-int.h"

#include <errno.h>
#include <rbd/librbd.h>
#include <string.h>

/* A diff callback's "stop here"; rbd_diff_iterate2 returns it. */
enum { DIFF_STOP = -9000 };

typedef struct RbdState {
    rados_t cluster;
    rados_ioctx_t io;
    rbd_image_t image;
    char *pool, *ns, *name, *snap;
    bool whole_object_diff; /* fast-diff is there and valid */
} RbdState;

/* --- the file name ------------------------------------------------------- */

/* Cuts @*p at the first unescaped @delim: returns the token, moves *p past
 * the delimiter (NULL when there is none). */
static char *next_token(char **p, char delim)
{
    char *start = *p, *end;

    for (end = start; *end; end++) {
        if (*end == '\\' && end[1]) {
            end++;
        } else if (*end == delim) {
            *end = '\0';
            *p = end + 1;
            return start;
        }
    }
    *p = NULL;
    return start;
}

static char *unescape(const char *s)
{
    GString *out = g_string_new(NULL);

    for (; *s; s++) {
        if (*s == '\\' && s[1])
            s++;
        g_string_append_c(out, *s);
    }
    return g_string_free(out, FALSE);
}

static void put(GHashTable *t, const char *k, char *v_owned)
{
    g_hash_table_insert(t, g_strdup(k), v_owned);
}

/* QEMU's qemu_rbd_parse_filename: the name's parts as options; Ceph
 * options other than conf and id go to @conf_pairs (key, value, ...). */
static bool parse_filename(const char *filename, GHashTable *opts,
                           GPtrArray *conf_pairs, GError **errp)
{
    g_autofree char *buf = NULL;
    char *p, *tok, *image;

    if (!g_str_has_prefix(filename, "rbd:")) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "File name must start with 'rbd:'");
        return false;
    }
    buf = g_strdup(filename + 4);
    p = buf;
    tok = next_token(&p, '/');
    if (!p || !*tok) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Pool name is required");
        return false;
    }
    put(opts, "pool", unescape(tok));
    /* The image runs to '@' if a snapshot follows, else to ':'. */
    image = next_token(&p, ':');
    if (strchr(image, '@')) {
        char *at = image;
        image = next_token(&at, '@');
        if (at)
            put(opts, "snapshot", unescape(at));
    }
    if (strchr(image, '/')) {
        char *rest = image;
        tok = next_token(&rest, '/');
        if (rest) {
            put(opts, "namespace", unescape(tok));
            image = rest;
        }
    }
    if (!*image) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Image name is required");
        return false;
    }
    put(opts, "image", unescape(image));
    while (p) {
        char *key = next_token(&p, '=');
        char *value;
        if (!p) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                        "conf option %s has no value", key);
            return false;
        }
        value = next_token(&p, ':');
        if (!strcmp(key, "conf")) {
            put(opts, "conf", unescape(value));
        } else if (!strcmp(key, "id")) {
            put(opts, "user", unescape(value));
        } else {
            g_ptr_array_add(conf_pairs, unescape(key));
            g_ptr_array_add(conf_pairs, unescape(value));
        }
    }
    return true;
}

/* The file name's parts, unless options name them already. */
static bool take_filename(GHashTable *options, GPtrArray *conf_pairs,
                          GError **errp)
{
    g_autofree char *filename = opt_take(options, "filename");

    if (!filename)
        return true;
    if (g_hash_table_contains(options, "pool") ||
        g_hash_table_contains(options, "image")) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Cannot give both 'filename' and 'pool'/'image' for an "
                    "rbd node");
        return false;
    }
    return parse_filename(filename, options, conf_pairs, errp);
}

/* --- the cluster --------------------------------------------------------- */

/* "auth-client-required.0", ".1", ... (a QMP list): "cephx;none". */
static char *take_auth_list(GHashTable *options)
{
    g_autoptr(GHashTable) list = opt_take_prefix(options,
                                                 "auth-client-required");
    GString *s = g_string_new(NULL);

    for (guint i = 0; i < g_hash_table_size(list); i++) {
        g_autofree char *key = g_strdup_printf("%u", i);
        const char *v = g_hash_table_lookup(list, key);
        if (v)
            g_string_append_printf(s, "%s%s", s->len ? ";" : "", v);
    }
    return g_string_free(s, s->len == 0);
}

static bool conf_set(RbdState *s, const char *key, const char *value,
                     GError **errp)
{
    int r = rados_conf_set(s->cluster, key, value);

    if (r < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "invalid conf option %s: %s", key, g_strerror(-r));
        return false;
    }
    return true;
}

/* The cephx key of a "secret" object, base64 as Ceph wants it (QEMU's
 * key-secret holds the base64 text itself). */
static bool set_key_secret(RbdState *s, const char *secret_id, GError **errp)
{
    GBytes *b = bdrv_lookup_secret(secret_id, errp);
    g_autofree char *key = NULL;
    gsize len;
    const char *data;

    if (!b)
        return false;
    data = g_bytes_get_data(b, &len);
    key = g_strndup(data, len);
    return conf_set(s, "key", key, errp);
}

static void disconnect(RbdState *s)
{
    if (s->image)
        rbd_close(s->image);
    if (s->io)
        rados_ioctx_destroy(s->io);
    if (s->cluster)
        rados_shutdown(s->cluster);
    s->image = NULL;
    s->io = NULL;
    s->cluster = NULL;
}

/* Connects to the cluster and opens the pool (and namespace) that
 * @options name; takes the connection options out of @options. */
static bool connect_pool(RbdState *s, GHashTable *options,
                         GPtrArray *conf_pairs, bool cache, GError **errp)
{
    g_autofree char *conf = opt_take(options, "conf");
    g_autofree char *user = opt_take(options, "user");
    g_autofree char *secret = opt_take(options, "key-secret");
    g_autofree char *auth = take_auth_list(options);
    int r;

    s->pool = opt_take(options, "pool");
    s->ns = opt_take(options, "namespace");
    if (!s->pool) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Parameter 'pool' is required for the rbd driver");
        return false;
    }
    r = rados_create(&s->cluster, user && *user ? user : NULL);
    if (r < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "error initializing: %s", g_strerror(-r));
        return false;
    }
    /* Without conf, Ceph's default places (and $CEPH_CONF), as QEMU. */
    r = rados_conf_read_file(s->cluster, conf);
    if (conf && r < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "error reading conf file %s: %s", conf, g_strerror(-r));
        return false;
    }
    /* QEMU's cache mapping: librbd's cache unless cache.direct. */
    if (!conf_set(s, "rbd_cache", cache ? "true" : "false", errp))
        return false;
    for (guint i = 0; conf_pairs && i + 1 < conf_pairs->len; i += 2)
        if (!conf_set(s, conf_pairs->pdata[i], conf_pairs->pdata[i + 1],
                      errp))
            return false;
    if (secret && !set_key_secret(s, secret, errp))
        return false;
    if (auth && !conf_set(s, "auth_client_required", auth, errp))
        return false;
    r = rados_connect(s->cluster);
    if (r < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "error connecting: %s", g_strerror(-r));
        return false;
    }
    r = rados_ioctx_create(s->cluster, s->pool, &s->io);
    if (r < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_FOUND,
                    "error opening pool %s: %s", s->pool, g_strerror(-r));
        return false;
    }
    rados_ioctx_set_namespace(s->io, s->ns ? s->ns : "");
    return true;
}

static void free_names(RbdState *s)
{
    g_clear_pointer(&s->pool, g_free);
    g_clear_pointer(&s->ns, g_free);
    g_clear_pointer(&s->name, g_free);
    g_clear_pointer(&s->snap, g_free);
}

/* --- open and close ------------------------------------------------------ */

static void probe_fast_diff(RbdState *s)
{
    uint64_t features = 0, flags = 0;

    s->whole_object_diff =
        rbd_get_features(s->image, &features) == 0 &&
        (features & RBD_FEATURE_FAST_DIFF) &&
        rbd_get_flags(s->image, &flags) == 0 &&
        !(flags & RBD_FLAG_FAST_DIFF_INVALID);
}

static char *node_filename(RbdState *s)
{
    return g_strdup_printf("rbd:%s/%s%s%s%s%s", s->pool,
                           s->ns && *s->ns ? s->ns : "",
                           s->ns && *s->ns ? "/" : "", s->name,
                           s->snap ? "@" : "", s->snap ? s->snap : "");
}

/*
 * x-dirty-since=SNAP (a snapnbd extension): a dirty bitmap named SNAP on
 * the node, disabled, with the ranges that differ between snapshot SNAP
 * and the image as opened (rbd_diff_iterate2 from SNAP: written ranges and
 * ranges that became holes alike).  Opened at a later snapshot and
 * exported with the bitmap, it is an incremental backup's source: the
 * client reads qemu:dirty-bitmap:SNAP and copies what it marks.  The
 * granularity is 64 KiB; with fast-diff RBD reports whole objects.
 */
enum { DIFF_GRANULARITY = 64 * 1024 };

static int diff_mark(uint64_t offs, size_t len, int exists, void *opaque)
{
    bdrv_dirty_bitmap_set(opaque, offs, len, true);
    return 0;
}

static bool add_diff_bitmap(BlockNode *bs, const char *from, GError **errp)
{
    RbdState *s = bs->opaque;
    BdrvDirtyBitmap *bm;
    uint64_t size;
    int r = rbd_get_size(s->image, &size);

    if (r < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "error getting the size of %s: %s", s->name,
                    g_strerror(-r));
        return false;
    }
    bm = bdrv_dirty_bitmap_new(bs, from, DIFF_GRANULARITY, size, errp);
    if (!bm)
        return false;
    bdrv_dirty_bitmap_set_enabled(bm, false);
    r = rbd_diff_iterate2(s->image, from, 0, size, true,
                          s->whole_object_diff, diff_mark, bm);
    if (r < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "error reading the changes of %s since snapshot %s: %s",
                    s->name, from, g_strerror(-r));
        bdrv_release_dirty_bitmap(bm);
        return false;
    }
    return true;
}

static int rbd_node_open(BlockNode *bs, GHashTable *options, GError **errp)
{
    RbdState *s = bs->opaque;
    g_autoptr(GPtrArray) conf_pairs = g_ptr_array_new_with_free_func(g_free);
    g_autofree char *dirty_since = NULL;
    int r;

    if (!take_filename(options, conf_pairs, errp))
        return -EINVAL;
    if (opt_has_prefix(options, "encrypt")) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "rbd encryption is not supported");
        return -ENOTSUP;
    }
    s->name = opt_take(options, "image");
    s->snap = opt_take(options, "snapshot");
    dirty_since = opt_take(options, "x-dirty-since");
    if (!s->name) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Parameter 'image' is required for the rbd driver");
        goto fail;
    }
    if (s->snap && !bs->read_only) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_READ_ONLY,
                    "rbd snapshots are read-only (open '%s@%s' with "
                    "read-only=on or -r)", s->name, s->snap);
        goto fail;
    }
    if (!connect_pool(s, options, conf_pairs, !bs->cache_direct, errp))
        goto fail;
    /* Read-only opens never take RBD's exclusive lock. */
    r = bs->read_only ? rbd_open_read_only(s->io, s->name, &s->image, s->snap)
                      : rbd_open(s->io, s->name, &s->image, NULL);
    if (r < 0) {
        s->image = NULL;
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "error reading header from %s: %s", s->name,
                    g_strerror(-r));
        goto fail;
    }
    probe_fast_diff(s);
    if (dirty_since && !add_diff_bitmap(bs, dirty_since, errp))
        goto fail;
    bs->filename = node_filename(s);
    return 0;

fail:
    disconnect(s);
    free_names(s);
    return -EINVAL;
}

static void rbd_node_close(BlockNode *bs)
{
    RbdState *s = bs->opaque;

    disconnect(s);
    free_names(s);
}

static int64_t rbd_node_get_length(BlockNode *bs)
{
    RbdState *s = bs->opaque;
    uint64_t size;
    int r = rbd_get_size(s->image, &size);

    return r < 0 ? r : (int64_t)size;
}

static void rbd_node_refresh_limits(BlockNode *bs, BlockLimits *limits)
{
    /* librbd splits by object itself; keep one request's buffer sane. */
    limits->max_transfer = 32 << 20;
}

static char *rbd_node_describe(BlockNode *bs)
{
    return g_strdup_printf("%s (librbd, %s)", bs->filename,
                           bs->read_only ? "read-only, no exclusive lock"
                                         : "exclusive lock by librbd");
}

/* --- I/O ----------------------------------------------------------------- */

/* Waits for the aio request @c that @started (its submission's result)
 * began; returns its result (bytes or -errno). */
static ssize_t aio_finish(rbd_completion_t c, int started)
{
    ssize_t ret;

    if (started < 0) {
        rbd_aio_release(c);
        return started;
    }
    rbd_aio_wait_for_complete(c);
    ret = rbd_aio_get_return_value(c);
    rbd_aio_release(c);
    return ret;
}

static rbd_completion_t new_completion(void)
{
    rbd_completion_t c = NULL;

    rbd_aio_create_completion(NULL, NULL, &c);
    return c;
}

static int rbd_node_pread(BlockNode *bs, int64_t offset, int64_t bytes,
                          void *buf)
{
    RbdState *s = bs->opaque;
    rbd_completion_t c = new_completion();
    ssize_t n = aio_finish(c, rbd_aio_read(s->image, offset, bytes, buf, c));

    if (n < 0)
        return n;
    if (n < bytes) /* past the end of an image that shrank */
        memset((char *)buf + n, 0, bytes - n);
    return 0;
}

static int rbd_node_pwrite(BlockNode *bs, int64_t offset, int64_t bytes,
                           const void *buf, int flags)
{
    RbdState *s = bs->opaque;
    rbd_completion_t c = new_completion();
    ssize_t n = aio_finish(c, rbd_aio_write(s->image, offset, bytes, buf, c));

    return n < 0 ? n : 0;
}

/* Without MAY_UNMAP the zeroes are written out (thick), as QEMU asks. */
static int rbd_node_pwrite_zeroes(BlockNode *bs, int64_t offset,
                                  int64_t bytes, int flags)
{
    RbdState *s = bs->opaque;
    int zero_flags = (flags & BDRV_REQ_MAY_UNMAP)
                         ? 0 : RBD_WRITE_ZEROES_FLAG_THICK_PROVISION;
    rbd_completion_t c = new_completion();
    ssize_t n = aio_finish(c, rbd_aio_write_zeroes(s->image, offset, bytes, c,
                                                   zero_flags, 0));

    return n < 0 ? n : 0;
}

static int rbd_node_pdiscard(BlockNode *bs, int64_t offset, int64_t bytes)
{
    RbdState *s = bs->opaque;
    rbd_completion_t c = new_completion();
    ssize_t n = aio_finish(c, rbd_aio_discard(s->image, offset, bytes, c));

    return n < 0 ? n : 0;
}

static int rbd_node_flush(BlockNode *bs)
{
    RbdState *s = bs->opaque;
    rbd_completion_t c = new_completion();
    ssize_t n = aio_finish(c, rbd_aio_flush(s->image, c));

    return n < 0 ? n : 0;
}

/* --- block status -------------------------------------------------------- */

/* The first data extent in [start, end), and how far it runs on without a
 * gap (extents come in order). */
typedef struct DiffScan {
    int64_t start, end;
    int64_t data_start, data_end;
    bool found;
} DiffScan;

static int diff_extent(uint64_t offs, size_t len, int exists, void *opaque)
{
    DiffScan *d = opaque;
    int64_t from = MAX((int64_t)offs, d->start);
    int64_t to = MIN((int64_t)(offs + len), d->end);

    if (!exists || to <= from)
        return 0;
    if (!d->found) {
        d->found = true;
        d->data_start = from;
        d->data_end = to;
        return from > d->start ? DIFF_STOP : 0;
    }
    if (from == d->data_end) {
        d->data_end = to;
        return 0;
    }
    return DIFF_STOP;
}

static int rbd_node_block_status(BlockNode *bs, int64_t offset,
                                 int64_t bytes, int64_t *pnum)
{
    RbdState *s = bs->opaque;
    DiffScan d = { .start = offset, .end = offset + bytes };
    int r;

    *pnum = bytes;
    r = rbd_diff_iterate2(s->image, NULL, offset, bytes, true,
                          s->whole_object_diff, diff_extent, &d);
    if (r < 0 && r != DIFF_STOP)
        return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
    if (!d.found)
        return BDRV_BLOCK_ZERO;
    if (d.data_start > offset) {
        *pnum = d.data_start - offset;
        return BDRV_BLOCK_ZERO;
    }
    *pnum = d.data_end - offset;
    return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
}

/* --- resize and snapshots ---------------------------------------------- */

/* QEMU's qemu_rbd_co_truncate: librbd grows or shrinks the image itself
 * (a shrink drops the objects past the end). */
static int rbd_node_truncate(BlockNode *bs, int64_t size, GError **errp)
{
    RbdState *s = bs->opaque;
    int r = rbd_resize(s->image, size);

    if (r < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "failed to resize rbd image: %s", g_strerror(-r));
        return r;
    }
    return 0;
}

/*
 * Internal snapshots are RBD snapshots, as QEMU's rbd driver has them: an
 * RBD snapshot has a name only, so the id is the name too (a given id must
 * equal the name), and its "vm-state-size" is the image size it was taken
 * at; RBD keeps no VM clock.  librbd flushes its cache and blocks new
 * writes of this handle while it takes the snapshot; the caller has
 * drained the node besides.
 */
static void snapshot_info_clear(gpointer p)
{
    bdrv_snapshot_info_clear(p);
}

static GArray *rbd_node_snapshot_list(BlockNode *bs, GError **errp)
{
    RbdState *s = bs->opaque;
    g_autofree rbd_snap_info_t *snaps = NULL;
    GArray *list;
    int max = 16, n;

    do {
        g_free(snaps);
        snaps = g_new0(rbd_snap_info_t, max);
        n = rbd_snap_list(s->image, snaps, &max);
    } while (n == -ERANGE);
    if (n < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "error listing rbd snapshots: %s", g_strerror(-n));
        return NULL;
    }
    list = g_array_sized_new(FALSE, TRUE, sizeof(BdrvSnapshotInfo), n);
    g_array_set_clear_func(list, snapshot_info_clear);
    for (int i = 0; i < n; i++) {
        BdrvSnapshotInfo sn = {
            .id = g_strdup(snaps[i].name),
            .name = g_strdup(snaps[i].name),
            .vm_state_size = snaps[i].size,
            .icount = 0, /* QEMU reports 0, not "none" */
        };
        g_array_append_val(list, sn);
    }
    rbd_snap_list_end(snaps);
    return list;
}

static int rbd_node_snapshot_create(BlockNode *bs, const char *name,
                                    BdrvSnapshotInfo *info, GError **errp)
{
    RbdState *s = bs->opaque;
    uint64_t size = 0;
    int r;

    if (!name || !*name) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "rbd snapshots need a name");
        return -EINVAL;
    }
    r = rbd_snap_create(s->image, name);
    if (r < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "failed to create snap: %s", g_strerror(-r));
        return r;
    }
    rbd_get_size(s->image, &size);
    if (info)
        *info = (BdrvSnapshotInfo){ .id = g_strdup(name),
                                    .name = g_strdup(name),
                                    .vm_state_size = size,
                                    .icount = 0 };
    return 0;
}

/* QEMU's qemu_rbd_snap_remove: by name; an id must be the name. */
static int rbd_node_snapshot_delete(BlockNode *bs, const char *id,
                                    const char *name, BdrvSnapshotInfo *info,
                                    GError **errp)
{
    RbdState *s = bs->opaque;
    const char *snap = name;
    g_autoptr(GArray) list = NULL;
    int r;

    if (!snap) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "rbd need a valid snapshot name");
        return -EINVAL;
    }
    if (id && name && strcmp(id, name)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "rbd do not support snapshot id, it should be NULL or "
                    "equal to snapshot name");
        return -EINVAL;
    }
    /* What is deleted, for the caller's answer. */
    list = rbd_node_snapshot_list(bs, NULL);
    for (guint i = 0; info && list && i < list->len; i++) {
        BdrvSnapshotInfo *sn = &g_array_index(list, BdrvSnapshotInfo, i);
        if (!strcmp(sn->name, snap)) {
            *info = *sn;
            *sn = (BdrvSnapshotInfo){ 0 };
        }
    }
    r = rbd_snap_remove(s->image, snap);
    if (r < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "Failed to remove the snapshot: %s", g_strerror(-r));
        if (info)
            bdrv_snapshot_info_clear(info);
        return r;
    }
    return 0;
}

/* --- create -------------------------------------------------------------- */

/* blockdev-create driver=rbd: "location.*" names the image (QEMU's
 * BlockdevCreateOptionsRbd), "cluster-size" its object size (a power of
 * two; librbd's default 4 MiB otherwise).  Redundancy is the pool's: a
 * replicated or erasure-coded pool is chosen by "location.pool". */
static int rbd_node_create(const char *filename, uint64_t size,
                           GHashTable *options, GError **errp)
{
    RbdState s = { 0 };
    g_autoptr(GHashTable) loc = opt_take_prefix(options, "location");
    uint64_t object_size = 0;
    rbd_image_options_t image_opts;
    int r = -EINVAL;

    if (!opt_take_size(options, "cluster-size", &object_size, errp))
        return -EINVAL;
    if (object_size && (object_size & (object_size - 1))) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "obj size needs to be power of 2");
        return -EINVAL;
    }
    if (g_hash_table_size(options) > 0 || opt_has_prefix(loc, "encrypt")) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Invalid option for creating an rbd image");
        return -EINVAL;
    }
    if (g_hash_table_contains(loc, "snapshot")) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Can't use snapshot name for image creation");
        return -EINVAL;
    }
    s.name = opt_take(loc, "image");
    if (!s.name) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Parameter 'location.image' is required");
        return -EINVAL;
    }
    if (!connect_pool(&s, loc, NULL, true, errp))
        goto out;
    rbd_image_options_create(&image_opts);
    if (object_size)
        rbd_image_options_set_uint64(image_opts, RBD_IMAGE_OPTION_ORDER,
                                     __builtin_ctzll(object_size));
    r = rbd_create4(s.io, s.name, size, image_opts);
    rbd_image_options_destroy(image_opts);
    if (r < 0)
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "error rbd create: %s", g_strerror(-r));
out:
    disconnect(&s);
    free_names(&s);
    return r < 0 ? r : 0;
}

const BlockDriver bdrv_rbd = {
    .name = "rbd",
    .state_size = sizeof(RbdState),
    .is_protocol = true,
    .open = rbd_node_open,
    .close = rbd_node_close,
    .create = rbd_node_create,
    .get_length = rbd_node_get_length,
    .refresh_limits = rbd_node_refresh_limits,
    .describe = rbd_node_describe,
    .pread = rbd_node_pread,
    .pwrite = rbd_node_pwrite,
    .pwrite_zeroes = rbd_node_pwrite_zeroes,
    .pdiscard = rbd_node_pdiscard,
    .flush = rbd_node_flush,
    .block_status = rbd_node_block_status,
    .truncate = rbd_node_truncate,
    .snapshot_list = rbd_node_snapshot_list,
    .snapshot_create = rbd_node_snapshot_create,
    .snapshot_delete = rbd_node_snapshot_delete,
    .supported_zero_flags = BDRV_REQ_MAY_UNMAP,
};
