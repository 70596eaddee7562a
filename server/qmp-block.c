/*
 * qmp-block.c - blockdev-add, blockdev-del, query-named-block-nodes.
 *
 * blockdev-add checks its arguments against a small copy of QEMU's schema
 * (BlockdevOptions for the drivers snapnbd has), so that a client gets
 * QEMU's messages for missing, unexpected and mistyped members, and
 * flattens them into the "file.driver"-style keys that bdrv_open takes.
 * The nodes it adds are "owned by the monitor": this module holds their
 * reference until blockdev-del.  Everything here runs on the QMP thread.
 */
#include "qmp-int.h"
#include "server/qmp-types-gen.h"

#include <string.h>
#include <sys/stat.h>

typedef enum {
    M_STR,
    M_BOOL,
    M_INT,
    M_ENUM,
    M_REF,          /* BlockdevRef: a node-name or a nested node */
    M_REF_OR_NULL,  /* BlockdevRefOrNull: also null, "no backing" */
    M_CACHE,        /* BlockdevCacheOptions */
    M_ANY,          /* lists and structs, flattened; the driver checks */
    M_ENCRYPT,      /* BlockdevQcow2Encryption (format luks, key-secret) */
} MemberType;

typedef struct Member {
    const char *name;
    MemberType type;
    bool required;
    const char *const *values;  /* M_ENUM */
    bool drop;                  /* accepted, without effect in snapnbd */
} Member;

static const char *const discard_values[] = { "ignore", "unmap", NULL };
static const char *const dz_values[] = { "off", "on", "unmap", NULL };
static const char *const locking_values[] = { "auto", "on", "off", NULL };
static const char *const aio_values[] = { "threads", "native", "io_uring",
                                          NULL };

/* BlockdevOptionsBase, in QEMU's order. */
static const Member base_members[] = {
    { "node-name", M_STR },
    { "discard", M_ENUM, .values = discard_values },
    { "cache", M_CACHE },
    { "read-only", M_BOOL },
    { "auto-read-only", M_BOOL, .drop = true },
    { "force-share", M_BOOL },
    { "detect-zeroes", M_ENUM, .values = dz_values },
    { NULL },
};

static const Member file_members[] = {
    { "filename", M_STR, .required = true },
    { "pr-manager", M_STR },
    { "locking", M_ENUM, .values = locking_values },
    { "aio", M_ENUM, .values = aio_values },
    { "aio-max-batch", M_INT, .drop = true },
    { "drop-cache", M_BOOL, .drop = true },
    { "x-check-cache-dropped", M_BOOL, .drop = true },
    { NULL },
};

static const Member raw_members[] = {
    { "file", M_REF, .required = true },
    { "offset", M_INT },
    { "size", M_INT },
    { NULL },
};

static const Member qcow2_members[] = {
    { "file", M_REF, .required = true },
    { "backing", M_REF_OR_NULL },
    { "lazy-refcounts", M_BOOL },
    { "pass-discard-request", M_BOOL },
    { "pass-discard-snapshot", M_BOOL },
    { "pass-discard-other", M_BOOL },
    { "cache-size", M_INT },
    { "l2-cache-size", M_INT },
    { "l2-cache-entry-size", M_INT },
    { "refcount-cache-size", M_INT },
    { "cache-clean-interval", M_INT },
    { "data-file", M_REF },
    { "encrypt", M_ENCRYPT },
    { NULL },
};

static const char *const cbw_error_values[] = { "break-guest-write",
                                                "break-snapshot", NULL };
static const char *const cbw_store_full_values[] = { "break-snapshot",
                                                     "wait", NULL };
static const Member cbw_members[] = {
    { "file", M_REF, .required = true },
    { "target", M_REF, .required = true },
    { "bitmap", M_STR },     /* refused by the driver: not supported yet */
    { "on-cbw-error", M_ENUM, .values = cbw_error_values },
    { "cbw-timeout", M_INT },
    { "x-max-store-bytes", M_INT },
    { "x-on-store-full", M_ENUM, .values = cbw_store_full_values },
    { NULL },
};

static const Member snapshot_access_members[] = {
    { "file", M_REF, .required = true },
    { NULL },
};

static const Member luks_members[] = {
    { "file", M_REF, .required = true },
    { "key-secret", M_STR },
    { NULL },
};

/* QEMU's BlockdevOptionsRbd ("server" comes from conf here). */
static const Member rbd_members[] = {
    { "pool", M_STR, .required = true },
    { "namespace", M_STR },
    { "image", M_STR, .required = true },
    { "conf", M_STR },
    { "snapshot", M_STR },
    { "encrypt", M_ANY },
    { "user", M_STR },
    { "auth-client-required", M_ANY },
    { "key-secret", M_STR },
    { "x-dirty-since", M_STR }, /* snapnbd's: rbd.c's diff bitmap */
    { NULL },
};

static const Member null_members[] = {
    { "size", M_INT },
    { "latency-ns", M_INT },
    { "read-zeroes", M_BOOL },
    { NULL },
};

/* BlockdevOptionsNbd; "server" is a SocketAddress the driver checks. */
static const Member nbd_members[] = {
    { "server", M_ANY, .required = true },
    { "export", M_STR },
    { "tls-creds", M_STR },
    { "tls-hostname", M_STR },
    { "x-dirty-bitmap", M_STR },
    { "reconnect-delay", M_INT },
    { "open-timeout", M_INT },
    { NULL },
};

/* The filters' members; blkdebug's "image" becomes its "file" child. */
static const Member blkdebug_members[] = {
    { "image", M_REF, .required = true },
    { "config", M_STR },
    { "align", M_INT },
    { "max-transfer", M_INT },
    { "opt-write-zero", M_INT },
    { "max-write-zero", M_INT },
    { "opt-discard", M_INT },
    { "max-discard", M_INT },
    { "inject-error", M_ANY },
    { "set-state", M_ANY },
    { "take-child-perms", M_ANY },
    { "unshare-child-perms", M_ANY },
    { NULL },
};

/* "limits" is snapnbd's: a node with limits of its own, no group. */
static const Member throttle_members[] = {
    { "throttle-group", M_STR },
    { "file", M_REF, .required = true },
    { "limits", M_ANY },
    { NULL },
};

static const Member cor_members[] = {
    { "file", M_REF, .required = true },
    { "bottom", M_STR },
    { NULL },
};

static const struct {
    const char *driver;
    const char *open_as;  /* the driver name bdrv_open knows */
    const Member *members;
} drivers[] = {
    { "file", "file", file_members },
    { "raw", "raw", raw_members },
    { "qcow2", "qcow2", qcow2_members },
    { "luks", "luks", luks_members },
    { "null-co", "null-co", null_members },
    { "rbd", "rbd", rbd_members },
    { "null-aio", "null-co", null_members },
    { "blkdebug", "blkdebug", blkdebug_members },
    { "throttle", "throttle", throttle_members },
    { "copy-on-read", "copy-on-read", cor_members },
    { "copy-before-write", "copy-before-write", cbw_members },
    { "snapshot-access", "snapshot-access", snapshot_access_members },
    { "nbd", "nbd", nbd_members },
};

static GHashTable *monitor_nodes; /* node-name -> BlockNode * (a ref) */

/* --- blockdev-add: schema and flattening --------------------------------- */

typedef struct Flattener {
    GHashTable *flat;   /* key -> value, both owned */
    GError **errp;
} Flattener;

static char *path_of(const char *prefix, const char *name)
{
    return g_strconcat(prefix, name, NULL);
}

static void put(Flattener *f, const char *key, const char *value)
{
    g_hash_table_insert(f->flat, g_strdup(key), g_strdup(value));
}

static bool is_type(JsonNode *n, GType type)
{
    return JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == type;
}

static bool flatten_node(Flattener *f, JsonObject *obj, const char *prefix);

/* A BlockdevRef: the name of an existing node, or a nested node. */
static bool flatten_ref(Flattener *f, JsonNode *n, const Member *m,
                        const char *path)
{
    if (JSON_NODE_HOLDS_NULL(n) && m->type == M_REF_OR_NULL) {
        put(f, path, ""); /* no backing at all */
        return true;
    }
    if (is_type(n, G_TYPE_STRING)) {
        const char *ref = json_node_get_string(n);
        if (!bdrv_find_node(ref)) {
            qmp_error(f->errp, "Cannot find device='%s' nor node-name='%s'",
                      ref, ref);
            return false;
        }
        put(f, path, ref);
        return true;
    }
    if (JSON_NODE_HOLDS_OBJECT(n)) {
        g_autofree char *sub = g_strconcat(path, ".", NULL);
        return flatten_node(f, json_node_get_object(n), sub);
    }
    qmp_error(f->errp, "Invalid parameter type for '%s', expected: %s", path,
              m->type == M_REF ? "BlockdevRef" : "BlockdevRefOrNull");
    return false;
}

static bool flatten_cache(Flattener *f, JsonNode *n, const char *path)
{
    static const char *const keys[] = { "direct", "no-flush" };
    g_autoptr(GList) members = NULL;
    JsonObject *o;

    if (!JSON_NODE_HOLDS_OBJECT(n)) {
        qmp_error(f->errp, "Invalid parameter type for '%s', expected: object",
                  path);
        return false;
    }
    o = json_node_get_object(n);
    for (size_t i = 0; i < G_N_ELEMENTS(keys); i++) {
        JsonNode *v = json_object_get_member(o, keys[i]);
        g_autofree char *key = g_strconcat(path, ".", keys[i], NULL);
        if (v && !is_type(v, G_TYPE_BOOLEAN)) {
            qmp_error(f->errp, "Invalid parameter type for '%s', expected: "
                      "boolean", key);
            return false;
        }
        if (v)
            put(f, key, json_node_get_boolean(v) ? "on" : "off");
    }
    members = json_object_get_members(o);
    for (GList *l = members; l; l = l->next) {
        if (strcmp(l->data, "direct") && strcmp(l->data, "no-flush")) {
            qmp_error(f->errp, "Parameter '%s.%s' is unexpected", path,
                      (const char *)l->data);
            return false;
        }
    }
    return true;
}

/* qcow2's "encrypt": { "format": "luks", "key-secret": ID }. */
static bool flatten_encrypt(Flattener *f, JsonNode *n, const char *path)
{
    g_autoptr(GList) members = NULL;
    JsonObject *o;

    if (!JSON_NODE_HOLDS_OBJECT(n)) {
        qmp_error(f->errp, "Invalid parameter type for '%s', expected: object",
                  path);
        return false;
    }
    o = json_node_get_object(n);
    members = json_object_get_members(o);
    for (GList *l = members; l; l = l->next) {
        JsonNode *v = json_object_get_member(o, l->data);
        g_autofree char *key = g_strconcat(path, ".", l->data, NULL);

        if (strcmp(l->data, "format") && strcmp(l->data, "key-secret")) {
            qmp_error(f->errp, "Parameter '%s' is unexpected", key);
            return false;
        }
        if (!is_type(v, G_TYPE_STRING)) {
            qmp_error(f->errp, "Invalid parameter type for '%s', expected: "
                      "string", key);
            return false;
        }
        put(f, key, json_node_get_string(v));
    }
    return true;
}

static bool flatten_scalar(Flattener *f, JsonNode *n, const Member *m,
                           const char *path)
{
    static const char *const type_names[] = {
        [M_STR] = "string", [M_ENUM] = "string", [M_BOOL] = "boolean",
        [M_INT] = "integer",
    };
    GType want = m->type == M_BOOL ? G_TYPE_BOOLEAN
                 : m->type == M_INT ? G_TYPE_INT64 : G_TYPE_STRING;
    g_autofree char *num = NULL;

    if (!is_type(n, want)) {
        qmp_error(f->errp, "Invalid parameter type for '%s', expected: %s",
                  path, type_names[m->type]);
        return false;
    }
    if (m->type == M_ENUM &&
        !qmp_check_enum(path, json_node_get_string(n), m->values, f->errp))
        return false;
    if (m->drop)
        return true;
    if (m->type == M_BOOL) {
        put(f, path, json_node_get_boolean(n) ? "on" : "off");
    } else if (m->type == M_INT) {
        num = g_strdup_printf("%" G_GINT64_FORMAT, json_node_get_int(n));
        put(f, path, num);
    } else {
        put(f, path, json_node_get_string(n));
    }
    return true;
}

/* Any JSON value as flat keys: PATH.N for list items, PATH.KEY for
 * members, booleans as on/off. */
static bool flatten_any(Flattener *f, JsonNode *n, const char *path)
{
    if (JSON_NODE_HOLDS_ARRAY(n)) {
        JsonArray *a = json_node_get_array(n);
        for (guint i = 0; i < json_array_get_length(a); i++) {
            g_autofree char *sub = g_strdup_printf("%s.%u", path, i);
            if (!flatten_any(f, json_array_get_element(a, i), sub))
                return false;
        }
        return true;
    }
    if (JSON_NODE_HOLDS_OBJECT(n)) {
        JsonObject *o = json_node_get_object(n);
        g_autoptr(GList) keys = json_object_get_members(o);
        for (GList *l = keys; l; l = l->next) {
            g_autofree char *sub = g_strconcat(path, ".", l->data, NULL);
            if (!flatten_any(f, json_object_get_member(o, l->data), sub))
                return false;
        }
        return true;
    }
    if (is_type(n, G_TYPE_BOOLEAN)) {
        put(f, path, json_node_get_boolean(n) ? "on" : "off");
    } else if (is_type(n, G_TYPE_INT64)) {
        g_autofree char *num = g_strdup_printf("%" G_GINT64_FORMAT,
                                               json_node_get_int(n));
        put(f, path, num);
    } else if (is_type(n, G_TYPE_STRING)) {
        put(f, path, json_node_get_string(n));
    } else {
        qmp_error(f->errp, "Invalid parameter type for '%s'", path);
        return false;
    }
    return true;
}

static bool flatten_members(Flattener *f, JsonObject *obj, const char *prefix,
                            const Member *members)
{
    for (const Member *m = members; m->name; m++) {
        JsonNode *n = json_object_get_member(obj, m->name);
        g_autofree char *path = path_of(prefix, m->name);
        bool ok;

        if (!n) {
            if (m->required) {
                qmp_error(f->errp, "Parameter '%s' is missing", path);
                return false;
            }
            continue;
        }
        if (m->type == M_REF || m->type == M_REF_OR_NULL)
            ok = flatten_ref(f, n, m, path);
        else if (m->type == M_CACHE)
            ok = flatten_cache(f, n, path);
        else if (m->type == M_ANY)
            ok = flatten_any(f, n, path);
        else if (m->type == M_ENCRYPT)
            ok = flatten_encrypt(f, n, path);
        else
            ok = flatten_scalar(f, n, m, path);
        if (!ok)
            return false;
    }
    return true;
}

static bool known_member(const Member *members, const char *name)
{
    for (const Member *m = members; m->name; m++) {
        if (strcmp(m->name, name) == 0)
            return true;
    }
    return false;
}

/* QEMU's rule for ids; node names are at most 31 bytes. */
static bool check_node_name(Flattener *f, JsonObject *obj)
{
    const char *name = json_object_get_string_member_with_default(
        obj, "node-name", NULL);

    if (!name)
        return true;
    if (!bdrv_id_wellformed(name)) {
        qmp_error(f->errp, "Invalid node-name: '%s'", name);
        return false;
    }
    if (strlen(name) > 31) {
        qmp_error(f->errp, "Node name too long");
        return false;
    }
    return true;
}

/* One BlockdevOptions object: driver, then the base members, then the
 * driver's, then anything left is unexpected (QEMU's order of checks). */
static bool flatten_node(Flattener *f, JsonObject *obj, const char *prefix)
{
    g_autofree char *dpath = path_of(prefix, "driver");
    JsonNode *dn = json_object_get_member(obj, "driver");
    g_autoptr(GList) keys = NULL;
    const Member *members = NULL;
    const char *driver;

    if (!dn || !is_type(dn, G_TYPE_STRING)) {
        qmp_error(f->errp, dn ? "Invalid parameter type for '%s', expected: "
                                "string" : "Parameter '%s' is missing", dpath);
        return false;
    }
    driver = json_node_get_string(dn);
    for (size_t i = 0; i < G_N_ELEMENTS(drivers) && !members; i++) {
        if (strcmp(drivers[i].driver, driver) == 0) {
            members = drivers[i].members;
            put(f, dpath, drivers[i].open_as);
        }
    }
    if (!members) {
        qmp_error(f->errp, "Parameter '%s' does not accept value '%s'", dpath,
                  driver);
        return false;
    }
    if (!flatten_members(f, obj, prefix, base_members) ||
        !flatten_members(f, obj, prefix, members))
        return false;
    keys = json_object_get_members(obj);
    for (GList *l = keys; l; l = l->next) {
        if (strcmp(l->data, "driver") && !known_member(base_members, l->data)
            && !known_member(members, l->data)) {
            qmp_error(f->errp, "Parameter '%s%s' is unexpected", prefix,
                      (const char *)l->data);
            return false;
        }
    }
    return check_node_name(f, obj);
}

/* force-share only makes sense read-only; snapnbd has no way to share
 * an image that another process writes. */
static bool check_unsupported(GHashTable *flat, GError **errp)
{
    GHashTableIter it;
    gpointer k, v;

    g_hash_table_iter_init(&it, flat);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        const char *key = k, *dot = strrchr(key, '.');
        const char *leaf = dot ? dot + 1 : key;
        if (strcmp(leaf, "force-share") == 0 && strcmp(v, "on") == 0) {
            qmp_error(errp, "force-share=on is not supported");
            return false;
        }
        if (strcmp(leaf, "force-share") == 0)
            g_hash_table_iter_remove(&it);
    }
    return true;
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

static JsonNode *cmd_blockdev_add(JsonObject *args, GError **errp)
{
    g_autoptr(GHashTable) flat =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    Flattener f = { flat, errp };

    if (flatten_node(&f, args, "") && check_unsupported(flat, errp))
        qmp_block_add_flat(flat, errp);
    return NULL;
}

/* --- blockdev-reopen ----------------------------------------------------- */

/* Each element as blockdev-add takes it; all checked by bdrv_reopen
 * before any changes, one after the other as QEMU does. */
static bool reopen_one(JsonNode *n, guint i, GError **errp)
{
    g_autoptr(GHashTable) flat =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    Flattener f = { flat, errp };
    g_autofree char *name = NULL;
    BlockNode *bs;

    GError *err = NULL;

    if (!JSON_NODE_HOLDS_OBJECT(n)) {
        qmp_error(errp, "Invalid parameter type for 'options[%u]', "
                  "expected: object", i);
        return false;
    }
    /* QEMU finds the node before it looks at the options. */
    name = g_strdup(qmp_arg_str(json_node_get_object(n), "node-name", false,
                                errp));
    if (!name) {
        if (!*errp)
            qmp_error(errp, "node-name not specified");
        return false;
    }
    bs = bdrv_find_node(name);
    if (!bs) {
        qmp_error(errp, "Failed to find node with node-name='%s'", name);
        return false;
    }
    f.errp = &err;
    if (!flatten_node(&f, json_node_get_object(n), "")) {
        /* Members are named by their path in the command, as QEMU does. */
        if (g_str_has_prefix(err->message, "Parameter '"))
            qmp_error(errp, "Parameter 'options[%u].%s", i,
                      err->message + strlen("Parameter '"));
        else
            g_propagate_error(errp, g_steal_pointer(&err));
        g_clear_error(&err);
        return false;
    }
    g_hash_table_remove(flat, "node-name");
    return bdrv_reopen(bs, flat, errp);
}

static JsonNode *cmd_blockdev_reopen(JsonObject *args, GError **errp)
{
    JsonNode *n = json_object_get_member(args, "options");
    JsonArray *list;

    if (!n) {
        qmp_error(errp, "Parameter 'options' is missing");
        return NULL;
    }
    if (!JSON_NODE_HOLDS_ARRAY(n)) {
        qmp_error(errp, "Invalid parameter type for 'options', expected: "
                        "array");
        return NULL;
    }
    list = json_node_get_array(n);
    for (guint i = 0; i < json_array_get_length(list); i++)
        if (!reopen_one(json_array_get_element(list, i), i, errp))
            return NULL;
    return NULL;
}

/* --- blockdev-del -------------------------------------------------------- */

static JsonNode *cmd_blockdev_del(const QmpBlockdevDelArgs *a, GError **errp)
{
    const char *name = a->node_name;
    g_autofree char *user = NULL, *overlay = NULL;
    BlockNode *bs;

    bs = bdrv_find_node(name);
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
    if (bdrv_refcnt(bs) > 1) {
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
    static const char *const z2[] = { "iops", "bps_wr", "write_threshold",
                                      NULL };
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

static void collect_node(BlockNode *bs, void *opaque)
{
    NodeList *l = opaque;

    g_ptr_array_add(l->infos, node_info(bs, l->flat));
}

static gint by_node_name(gconstpointer a, gconstpointer b)
{
    JsonObject *x = *(JsonObject *const *)a, *y = *(JsonObject *const *)b;

    return strcmp(json_object_get_string_member(x, "node-name"),
                  json_object_get_string_member(y, "node-name"));
}

static JsonNode *cmd_query_named_block_nodes(
    const QmpQueryNamedBlockNodesArgs *a, GError **errp)
{
    NodeList l = { g_ptr_array_new(), a->flat };
    JsonArray *arr = json_array_new();
    JsonNode *n;

    bdrv_foreach_node(collect_node, &l);
    g_ptr_array_sort(l.infos, by_node_name);
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
    /* blockdev-add's members are checked by its own schema */
    qmp_register_command("blockdev-add", cmd_blockdev_add);
    qmp_register_typed_blockdev_del(cmd_blockdev_del);
    qmp_register_command_args("blockdev-reopen", cmd_blockdev_reopen,
                              "options");
    qmp_register_typed_query_named_block_nodes(cmd_query_named_block_nodes);
}
