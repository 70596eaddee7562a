/*
 * qmp-block.c - blockdev-add, blockdev-del, query-named-block-nodes.
 *
 * blockdev-add (and blockdev-reopen) receive BlockdevOptions checked
 * against the schema (server/qmp-schema.json: QEMU's messages for missing,
 * unexpected and mistyped members) and decoded; the generated encoder
 * turns them into the "file.driver"-style keys that bdrv_open takes, so
 * the schema is the one description of the members.
 * The nodes it adds are "owned by the monitor": this module holds their
 * reference until blockdev-del.  Everything here runs on the QMP thread.
 */
#include "qmp-int.h"
#include "server/qmp/qmp-types-gen.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static GHashTable *monitor_nodes; /* node-name -> BlockNode * (a ref) */

/* --- blockdev-add: the typed options as bdrv_open's flat keys ---------- */

static const char *leaf_of(const char *key);

/* The references checked together, in QEMU's order of opening: a node's
 * "file" before its node name is taken, its other children after, its
 * backing last. */
typedef enum { REFS_FILE, REFS_OTHER, REFS_BACKING } RefPhase;

/* A backing's references, nested ones too ("backing.file"), are the
 * backing's to resolve when it opens. */
static RefPhase ref_phase(const char *key)
{
    if (strcmp(leaf_of(key), "backing") == 0 ||
        g_str_has_prefix(key, "backing.") || strstr(key, ".backing."))
        return REFS_BACKING;
    return strcmp(leaf_of(key), "file") == 0 ? REFS_FILE : REFS_OTHER;
}

/* A reference to an existing node (a BlockdevRef given as a string) must
 * name one; checked before anything is opened, but a backing's when the
 * format opens it, after its own options (as QEMU's
 * bdrv_open_backing_file).  "backing": "" means null, with QEMU 7.2's
 * deprecation warning, given before anything is opened. */
static bool check_refs(GHashTable *flat, GPtrArray *refs, RefPhase phase,
                       GError **errp)
{
    for (guint i = 0; i < refs->len; i++) {
        const char *key = refs->pdata[i];
        const char *ref = g_hash_table_lookup(flat, key);
        bool backing = phase == REFS_BACKING;

        if (ref_phase(key) != phase)
            continue;
        if (backing && !*ref)
            fprintf(stderr, "snapnbd: warning: Use of \"backing\": \"\" is "
                    "deprecated; use \"backing\": null instead\n");
        if (backing)
            continue;
        if (!bdrv_find_node(ref)) {
            qmp_error(errp, "Cannot find device='%s' nor node-name='%s'", ref,
                      ref);
            return false;
        }
    }
    return true;
}

static const char *leaf_of(const char *key)
{
    const char *dot = strrchr(key, '.');

    return dot ? dot + 1 : key;
}

static int backing_depth_of(const char *key)
{
    g_auto(GStrv) parts = g_strsplit(key, ".", -1);
    int n = 0;

    for (int i = 0; parts[i] && parts[i + 1]; i++)
        n += strcmp(parts[i], "backing") == 0;
    return n;
}

/* QEMU's order of opening: a backing subtree after its parent (it opens
 * once the parent's driver has), and within one, deeper keys first: a
 * nested node (a "file") is checked before its parent. */
static gint opening_order(gconstpointer a, gconstpointer b)
{
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    int bx = backing_depth_of(x), by = backing_depth_of(y);
    int dx = 0, dy = 0;

    if (bx != by)
        return bx - by;
    for (const char *p = x; *p; p++)
        dx += *p == '.';
    for (const char *p = y; *p; p++)
        dy += *p == '.';
    return dx != dy ? dy - dx : strcmp(x, y);
}

/* What QEMU puts before an error of a node in a backing subtree: a
 * "Could not open backing file: " for each backing on the way (@key is
 * a key of that node). */
static char *backing_prefix(const char *key)
{
    GString *prefix = g_string_new(NULL);

    for (int n = backing_depth_of(key); n > 0; n--)
        g_string_append(prefix, "Could not open backing file: ");
    return g_string_free(prefix, FALSE);
}

/* The value of member @name of the node whose keys start with @prefix
 * ("" or "file.", "backing.file.", ...). */
static const char *member(GHashTable *flat, const char *prefix,
                          const char *name)
{
    g_autofree char *key = g_strconcat(prefix, name, NULL);

    return g_hash_table_lookup(flat, key);
}

/* Is the node at @prefix opened read-only?  Its own read-only, else its
 * parent's, as QEMU's children inherit it; a backing is read-only. */
static bool node_read_only(GHashTable *flat, const char *prefix)
{
    g_autofree char *p = g_strdup(prefix);

    for (;;) {
        const char *ro = member(flat, p, "read-only");
        char *dot;

        if (ro)
            return strcmp(ro, "on") == 0;
        if (!*p)
            return false;
        p[strlen(p) - 1] = '\0';           /* "a.file." -> "a.file" */
        dot = strrchr(p, '.');
        if (strcmp(dot ? dot + 1 : p, "backing") == 0)
            return true;
        if (dot)
            dot[1] = '\0';
        else
            *p = '\0';
    }
}

/* force-share=on needs a read-only node (QEMU's words). */
static bool check_force_share(GHashTable *flat, const char *prefix,
                              GError **errp)
{
    const char *fs = member(flat, prefix, "force-share");

    if (!fs || strcmp(fs, "on") != 0 || node_read_only(flat, prefix))
        return true;
    qmp_error(errp, "force-share=on can only be used with read-only "
                    "images");
    return false;
}

/* The node whose "node-name" is at @key: what QEMU's bdrv_open_common
 * checks before it looks at the name (in bdrv_open_driver), in its
 * order, so that those errors come first: force-share on a writable
 * node, a file node without a file name, the discard options (a nested
 * node is a child, whose discard is "unmap" unless given). */
static bool check_before_name(GHashTable *flat, const char *key,
                              GError **errp)
{
    g_autofree char *prefix =
        g_strndup(key, strlen(key) - strlen("node-name"));
    const char *discard = member(flat, prefix, "discard");
    const char *driver = member(flat, prefix, "driver");
    const char *filename = member(flat, prefix, "filename");
    g_autofree char *what = backing_prefix(key);

    if (!discard && *prefix)
        discard = "unmap";
    if (!check_force_share(flat, prefix, errp))
        goto fail;
    if (driver && strcmp(driver, "file") == 0 && (!filename || !*filename)) {
        qmp_error(errp, "The 'file' block driver requires a file name");
        goto fail;
    }
    if (bdrv_check_discard_options(discard,
                                   member(flat, prefix, "detect-zeroes"),
                                   errp))
        return true;
fail:
    g_prefix_error(errp, "%s", what);
    return false;
}

/* QEMU's rule for ids; node names are at most 31 bytes.  Every node's
 * "node-name", the nested ones first. */
static bool check_node_names(GHashTable *flat, GError **errp)
{
    g_autoptr(GPtrArray) keys = g_ptr_array_new();
    GHashTableIter it;
    gpointer k;

    g_hash_table_iter_init(&it, flat);
    while (g_hash_table_iter_next(&it, &k, NULL))
        g_ptr_array_add(keys, k);
    g_ptr_array_sort(keys, opening_order);
    for (guint i = 0; i < keys->len; i++) {
        const char *name;
        if (strcmp(leaf_of(keys->pdata[i]), "node-name") != 0)
            continue;
        name = g_hash_table_lookup(flat, keys->pdata[i]);
        if (!check_before_name(flat, keys->pdata[i], errp))
            return false;
        if (!bdrv_id_wellformed(name)) {
            g_autofree char *prefix = backing_prefix(keys->pdata[i]);
            qmp_error(errp, "%sInvalid node-name: '%s'", prefix, name);
            return false;
        }
        if (strlen(name) > 31) {
            g_autofree char *prefix = backing_prefix(keys->pdata[i]);
            qmp_error(errp, "%sNode name too long", prefix);
            return false;
        }
    }
    return true;
}

/* Where bdrv_open differs from the schema: members accepted without effect
 * in snapnbd are not passed on. */
static void adapt_for_bdrv_open(GHashTable *flat)
{
    static const char *const without_effect[] = {
        "aio-max-batch", "drop-cache",
        "x-check-cache-dropped", NULL,
    };
    GHashTableIter it;
    gpointer k, v;

    g_hash_table_iter_init(&it, flat);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        const char *leaf = leaf_of(k);

        if (g_strv_contains(without_effect, leaf))
            g_hash_table_iter_remove(&it);
    }
}

/* @o (checked against the schema and decoded) as the flat keys bdrv_open
 * and bdrv_reopen take ("file.driver" = "file"), written by the generated
 * encoder; NULL + errp when a reference or a node name is wrong. */
static GHashTable *node_options(const QmpBlockdevOptions *o, GError **errp)
{
    GHashTable *flat =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_autoptr(GPtrArray) refs = g_ptr_array_new_with_free_func(g_free);
    QmpFlat out = { flat, refs };

    qmp_encode_flat_blockdev_options(o, "", &out);
    if (!check_refs(flat, refs, REFS_FILE, errp) ||
        !check_node_names(flat, errp) ||
        !check_refs(flat, refs, REFS_OTHER, errp) ||
        !check_refs(flat, refs, REFS_BACKING, errp)) {
        g_hash_table_unref(flat);
        return NULL;
    }
    adapt_for_bdrv_open(flat);
    return flat;
}

bool qmp_block_add_flat(GHashTable *flat, GError **errp)
{
    BlockNode *bs;

    if (!g_hash_table_contains(flat, "node-name")) {
        qmp_error(errp, "'node-name' must be specified for the root node");
        return false;
    }
    bs = bdrv_open(flat, errp);
    if (!bs)
        return false;
    if (!monitor_nodes)
        monitor_nodes = g_hash_table_new(g_str_hash, g_str_equal);
    g_hash_table_insert(monitor_nodes, (gpointer)bdrv_node_name(bs), bs);
    return true;
}

static JsonNode *cmd_blockdev_add(const QmpBlockdevOptions *o,
                                  GError **errp)
{
    g_autoptr(GHashTable) flat = NULL;

    /* QEMU asks for it before it opens anything */
    if (!o->has_node_name) {
        qmp_error(errp, "'node-name' must be specified for the root node");
        return NULL;
    }
    flat = node_options(o, errp);
    if (flat)
        qmp_block_add_flat(flat, errp);
    return NULL;
}

/* --- blockdev-reopen ----------------------------------------------------- */

/* Each element as blockdev-add takes it; all checked by bdrv_reopen
 * before any changes, one after the other as QEMU does. */
static bool reopen_one(const QmpBlockdevOptions *o, GError **errp)
{
    g_autoptr(GHashTable) flat = NULL;
    BlockNode *bs;

    /* QEMU finds the node before it looks at the options. */
    if (!o->has_node_name) {
        qmp_error(errp, "node-name not specified");
        return false;
    }
    bs = qmp_find_node(o->node_name);
    if (!bs) {
        qmp_error(errp, "Failed to find node with node-name='%s'",
                  o->node_name);
        return false;
    }
    flat = node_options(o, errp);
    if (!flat)
        return false;
    g_hash_table_remove(flat, "node-name");
    return bdrv_reopen(bs, flat, errp);
}

static JsonNode *cmd_blockdev_reopen(const QmpBlockdevReopenArgs *a,
                                     GError **errp)
{
    for (guint i = 0; i < a->options->len; i++)
        if (!reopen_one(g_ptr_array_index(a->options, i), errp))
            return NULL;
    return NULL;
}

/* --- blockdev-del -------------------------------------------------------- */

static JsonNode *cmd_blockdev_del(const QmpBlockdevDelArgs *a, GError **errp)
{
    const char *name = a->node_name;
    g_autofree char *user = NULL, *overlay = NULL;
    BlockNode *bs;

    bs = qmp_find_node(name); /* a job's filter may go meanwhile */
    if (!bs) {
        qmp_error(errp, "Failed to find node with node-name='%s'", name);
        return NULL;
    }
    user = bdrv_find_user(bs, "root");
    if (user) {
        qmp_error(errp, "Node %s is in use", name);
        return NULL;
    }
    if (bdrv_op_is_blocked(bs, BDRV_OP_DELETE, errp))
        return NULL;
    overlay = bdrv_find_parent_by_link(bs, "backing");
    if (overlay) {
        qmp_error(errp, "Node '%s' is busy: node is used as backing hd of "
                  "'%s'", name, overlay);
        return NULL;
    }
    if (!monitor_nodes || !g_hash_table_contains(monitor_nodes, name)) {
        qmp_error(errp, "Node %s is not owned by the monitor", name);
        return NULL;
    }
    if (bdrv_refcnt(bs) > 2) { /* the monitor's and this command's */
        qmp_error(errp, "Block device %s is in use", name);
        return NULL;
    }
    g_hash_table_remove(monitor_nodes, name);
    bdrv_flush(bs);
    bdrv_unref(bs);
    return NULL;
}

/* --- query-named-block-nodes ----------------------------------------------- */

static const char *node_file(BlockNode *bs)
{
    const char *f = bdrv_filename(bs);

    if (!*f && strcmp(bdrv_driver_name(bs), "null-aio") == 0)
        return "null-aio://";
    if (!*f && g_str_has_prefix(bdrv_driver_name(bs), "null"))
        return "null-co://";
    return f;
}

static int64_t actual_size(BlockNode *bs)
{
    struct stat st;

    if (!*bdrv_filename(bs) || stat(bdrv_filename(bs), &st) < 0)
        return 0;
    return (int64_t)st.st_blocks * 512;
}

/* Qcow2BitmapInfo of each bitmap the image stores. */
static JsonArray *stored_bitmaps(GArray *bitmaps)
{
    JsonArray *a = json_array_new();

    for (guint i = 0; i < bitmaps->len; i++) {
        BdrvBitmapInfo *b = &g_array_index(bitmaps, BdrvBitmapInfo, i);
        JsonObject *o = json_object_new();
        JsonArray *flags = json_array_new();
        if (b->in_use)
            json_array_add_string_element(flags, "in-use");
        if (b->autom)
            json_array_add_string_element(flags, "auto");
        json_object_set_array_member(o, "flags", flags);
        json_object_set_string_member(o, "name", b->name);
        json_object_set_int_member(o, "granularity", b->granularity);
        json_array_add_object_element(a, o);
    }
    return a;
}

/* ImageInfoSpecific of a qcow2 image, QEMU's member order. */
static JsonObject *format_specific(const BdrvImageInfo *info)
{
    JsonObject *spec = json_object_new();
    JsonObject *data = json_object_new();

    json_object_set_string_member(data, "compat",
                                  info->version >= 3 ? "1.1" : "0.10");
    json_object_set_string_member(data, "compression-type",
                                  info->compression_type);
    if (info->version >= 3)
        json_object_set_boolean_member(data, "lazy-refcounts",
                                       info->lazy_refcounts);
    if (info->version >= 3 && info->bitmaps)
        json_object_set_array_member(data, "bitmaps",
                                     stored_bitmaps(info->bitmaps));
    json_object_set_int_member(data, "refcount-bits", info->refcount_bits);
    if (info->version >= 3) {
        json_object_set_boolean_member(data, "corrupt", info->corrupt);
        json_object_set_boolean_member(data, "extended-l2",
                                       info->extended_l2);
    }
    json_object_set_string_member(spec, "type", "qcow2");
    json_object_set_object_member(spec, "data", data);
    return spec;
}

/* Would QEMU 7.2's bdrv_get_info answer (and ImageInfo have a
 * dirty-flag)?  The file driver, qcow2 and rbd answer themselves; raw, luks
 * and filters ask their file child; null, nbd and snapshot-access do not
 * answer. */
static bool has_driver_info(BlockNode *bs)
{
    static const char *const own[] = { "file", "qcow2", "rbd", NULL };
    static const char *const asks_file[] = { "raw", "luks", NULL };

    while (bs) {
        const char *drv = bdrv_driver_name(bs);

        if (g_strv_contains(own, drv))
            return true;
        if (!g_strv_contains(asks_file, drv) && !bdrv_is_filter(bs))
            return false;
        bs = bdrv_child(bs, "file");
    }
    return false;
}

/* ImageInfo, with QEMU's member order; the backing chain nested unless
 * @flat. */
static JsonObject *image_info(BlockNode *bs, bool flat)
{
    JsonObject *img = json_object_new();
    BlockNode *backing = bdrv_child(bs, "backing");
    BdrvImageInfo info;

    bdrv_get_image_info(bs, &info);
    if (bdrv_can_snapshot(bs)) {
        g_autoptr(GArray) list = bdrv_snapshot_list(bs, NULL);
        if (list && list->len) {
            JsonArray *a = json_array_new();
            for (guint i = 0; i < list->len; i++)
                json_array_add_object_element(a, qmp_snapshot_info(
                    &g_array_index(list, BdrvSnapshotInfo, i)));
            json_object_set_array_member(img, "snapshots", a);
        }
    }
    if (backing && !flat)
        json_object_set_object_member(img, "backing-image",
                                      image_info(backing, false));
    if (backing)
        json_object_set_string_member(img, "backing-filename-format",
                                      bdrv_driver_name(backing));
    json_object_set_int_member(img, "virtual-size", bdrv_getlength(bs));
    json_object_set_string_member(img, "filename", node_file(bs));
    if (info.cluster_size)
        json_object_set_int_member(img, "cluster-size", info.cluster_size);
    json_object_set_string_member(img, "format", bdrv_driver_name(bs));
    json_object_set_int_member(img, "actual-size", actual_size(bs));
    if (info.qcow2)
        json_object_set_object_member(img, "format-specific",
                                      format_specific(&info));
    if (backing) {
        json_object_set_string_member(img, "full-backing-filename",
                                      node_file(backing));
        json_object_set_string_member(img, "backing-filename",
                                      node_file(backing));
    }
    if (info.encrypted)
        json_object_set_boolean_member(img, "encrypted", true);
    if (has_driver_info(bs))
        json_object_set_boolean_member(img, "dirty-flag", false);
    bdrv_image_info_clear(&info);
    return img;
}

static bool node_encrypted(BlockNode *bs)
{
    BdrvImageInfo info;
    bool encrypted;

    bdrv_get_image_info(bs, &info);
    encrypted = info.encrypted;
    bdrv_image_info_clear(&info);
    return encrypted;
}

static JsonObject *cache_info(BlockNode *bs)
{
    JsonObject *c = json_object_new();

    json_object_set_boolean_member(c, "no-flush", bdrv_cache_no_flush(bs));
    json_object_set_boolean_member(c, "direct", bdrv_cache_direct(bs));
    json_object_set_boolean_member(c, "writeback", true);
    return c;
}

static int backing_depth(BlockNode *bs)
{
    int depth = 0;

    for (BlockNode *b = bdrv_child(bs, "backing"); b;
         b = bdrv_child(b, "backing"))
        depth++;
    return depth;
}

static void set_zero_members(JsonObject *o, const char *const *names)
{
    for (; *names; names++)
        json_object_set_int_member(o, *names, 0);
}

/* BlockDeviceInfo, with QEMU's member order (its hash order). */
static JsonObject *node_info(BlockNode *bs, bool flat)
{
    static const char *const dz[] = { "off", "on", "unmap" };
    static const char *const z1[] = { "iops_rd", NULL };
    static const char *const z2[] = { "iops", "bps_wr", NULL };
    static const char *const z3[] = { "bps", "bps_rd", NULL };
    JsonObject *o = json_object_new();
    BlockNode *backing = bdrv_child(bs, "backing");
    JsonArray *bitmaps;
    BdrvCbwStats cbw;

    set_zero_members(o, z1);
    json_object_set_string_member(o, "detect_zeroes",
                                  dz[bdrv_detect_zeroes(bs)]);
    json_object_set_object_member(o, "image", image_info(bs, flat));
    json_object_set_int_member(o, "iops_wr", 0);
    json_object_set_boolean_member(o, "ro", bdrv_is_read_only(bs));
    json_object_set_string_member(o, "node-name", bdrv_node_name(bs));
    json_object_set_int_member(o, "backing_file_depth", backing_depth(bs));
    json_object_set_string_member(o, "drv", bdrv_driver_name(bs));
    set_zero_members(o, z2);
    json_object_set_int_member(o, "write_threshold",
                               (gint64)bdrv_write_threshold(bs));
    if (backing)
        json_object_set_string_member(o, "backing_file", node_file(backing));
    json_object_set_boolean_member(o, "encrypted", node_encrypted(bs));
    set_zero_members(o, z3);
    json_object_set_object_member(o, "cache", cache_info(bs));
    json_object_set_string_member(o, "file", node_file(bs));
    bitmaps = qmp_dirty_bitmaps_info(bs);
    if (json_array_get_length(bitmaps)) /* as QEMU: only when there are */
        json_object_set_array_member(o, "dirty-bitmaps", bitmaps);
    else
        json_array_unref(bitmaps);
    if (bdrv_cbw_stats(bs, &cbw))
        json_object_set_object_member(o, "x-cbw", qmp_cbw_stats_json(&cbw));
    return o;
}

typedef struct NodeList {
    GPtrArray *infos;  /* of JsonObject * */
    bool flat;
} NodeList;

static gint newest_first(gconstpointer a, gconstpointer b)
{
    return bdrv_newest_first(*(BlockNode *const *)a, *(BlockNode *const *)b);
}

static JsonNode *cmd_query_named_block_nodes(
    const QmpQueryNamedBlockNodesArgs *a, GError **errp)
{
    NodeList l = { g_ptr_array_new(), a->flat };
    g_autoptr(GPtrArray) nodes = bdrv_ref_all_nodes();
    JsonArray *arr = json_array_new();
    JsonNode *n;

    /* Described outside the name table's lock, each held by a reference:
     * a node may be going meanwhile.  QEMU's order. */
    g_ptr_array_sort(nodes, newest_first);
    for (guint i = 0; i < nodes->len; i++)
        g_ptr_array_add(l.infos, node_info(g_ptr_array_index(nodes, i),
                                           l.flat));
    for (guint i = 0; i < l.infos->len; i++)
        json_array_add_object_element(arr, g_ptr_array_index(l.infos, i));
    g_ptr_array_free(l.infos, TRUE);
    n = json_node_new(JSON_NODE_ARRAY);
    json_node_take_array(n, arr);
    return n;
}

void qmp_block_cleanup(void)
{
    GHashTableIter it;
    gpointer v;

    if (!monitor_nodes)
        return;
    g_hash_table_iter_init(&it, monitor_nodes);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        g_hash_table_iter_steal(&it);
        bdrv_flush(v);
        bdrv_unref(v);
    }
    g_clear_pointer(&monitor_nodes, g_hash_table_unref);
}

void qmp_register_block_commands(void)
{
    qmp_register_typed_blockdev_add(cmd_blockdev_add);
    qmp_register_typed_blockdev_del(cmd_blockdev_del);
    qmp_register_typed_blockdev_reopen(cmd_blockdev_reopen);
    qmp_register_typed_query_named_block_nodes(cmd_query_named_block_nodes);
}
