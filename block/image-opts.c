/*
 * image-opts.c - the one builder of "open this image file" options
 * (image-opts.h), with qemu-nbd 7.2's rules and messages.
 *
 * Design notes.
 *
 * The result is the flat table bdrv_open takes ("driver", "file.driver",
 * "file.filename", ...), built in two layers as qemu-nbd builds its graph:
 * the image node (a format over the protocol node the file name names, or
 * the --image-opts options), and the top (a raw window for -o, read-only,
 * discard, detect-zeroes).  The command line, the nbdkit plugin and the
 * QMP commands that take file names all come here, so that the same
 * options give the same node whichever way they come:
 *  - a probed raw image is "x-probed" (block 0 cannot become a format
 *    header, as in QEMU) and the user is warned, as qemu-nbd warns;
 *  - only raw and qcow2 are formats here; others are refused by name;
 *  - --cache is QEMU's mapping to cache.direct / cache.no-flush, on the
 *    top and on the image node; --aio goes to every file node;
 *  - options the user gave explicitly (--image-opts) win over the
 *    defaults the other settings imply.
 */
#include "block/image-opts.h"
#include "block/qemu-opts.h"

#include <json-glib/json-glib.h>
#include <stdio.h>
#include <string.h>

static void put(GHashTable *t, const char *k, const char *v)
{
    g_hash_table_insert(t, g_strdup(k), g_strdup(v));
}

/* What a setting implies, unless the user's options say otherwise. */
static void put_default(GHashTable *t, const char *k, const char *v)
{
    if (!g_hash_table_contains(t, k))
        put(t, k, v);
}

static GHashTable *opt_table(void)
{
    return g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
}

static void bad_value(GError **errp, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static void bad_value(GError **errp, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    g_propagate_error(errp, g_error_new_valist(BDRV_ERROR,
                                               BDRV_ERROR_INVALID_ARGUMENT,
                                               fmt, ap));
    va_end(ap);
}

/* The prefixes ("", "file.", "file.file.", ...) of the nodes whose option
 * @key is set (to @value, unless NULL). */
static GPtrArray *node_prefixes(GHashTable *t, const char *key,
                                const char *value)
{
    GPtrArray *prefixes = g_ptr_array_new_with_free_func(g_free);
    size_t n = strlen(key);
    GHashTableIter it;
    gpointer k, v;

    g_hash_table_iter_init(&it, t);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        size_t len = strlen(k);
        const char *tail = (const char *)k + len - MIN(len, n);

        if (strcmp(tail, key) != 0 || (len > n && tail[-1] != '.') ||
            (value && strcmp(v, value) != 0))
            continue;
        g_ptr_array_add(prefixes, g_strndup(k, len - n));
    }
    return prefixes;
}

/* Every option of @from under "@prefix." in @to. */
static void put_under(GHashTable *to, const char *prefix, GHashTable *from)
{
    GHashTableIter it;
    gpointer k, v;

    g_hash_table_iter_init(&it, from);
    while (g_hash_table_iter_next(&it, &k, &v))
        g_hash_table_insert(to, g_strconcat(prefix, ".", k, NULL),
                            g_strdup(v));
}

/* --cache modes as QEMU maps them: direct = bypass the host page cache,
 * no-flush = ignore flushes; writethrough is the export's (FUA). */
static bool put_cache_mode(GHashTable *t, const char *mode, GError **errp)
{
    bool direct, no_flush = false;

    if (!mode || !strcmp(mode, "writeback") || !strcmp(mode, "writethrough")) {
        direct = false;
    } else if (!strcmp(mode, "none") || !strcmp(mode, "off") ||
               !strcmp(mode, "directsync")) {
        direct = true;
    } else if (!strcmp(mode, "unsafe")) {
        direct = false;
        no_flush = true;
    } else {
        bad_value(errp, "invalid cache mode '%s'", mode);
        return false;
    }
    put_default(t, "cache.direct", direct ? "on" : "off");
    put_default(t, "cache.no-flush", no_flush ? "on" : "off");
    return true;
}

bool image_opts_writethrough(const char *mode)
{
    return mode && (!strcmp(mode, "writethrough") ||
                    !strcmp(mode, "directsync"));
}

/* --aio is qemu-nbd's setting for every file node of the image. */
static void put_aio(GHashTable *t, const char *aio)
{
    g_autoptr(GPtrArray) files = node_prefixes(t, "driver", "file");

    for (guint i = 0; aio && i < files->len; i++) {
        g_autofree char *key =
            g_strconcat(g_ptr_array_index(files, i), "aio", NULL);
        put_default(t, key, aio);
    }
}

/* A file name's format, probed as qemu-nbd probes it, with its warning
 * through @warn (NULL: stderr) when it guessed raw. */
static const char *image_opts_probe(const char *filename,
                                    void (*warn)(const char *message))
{
    const char *format = bdrv_probe_format(filename);
    g_autofree char *msg = NULL;

    if (strcmp(format, "raw") != 0)
        return format;
    msg = g_strdup_printf(
        "WARNING: Image format was not specified for '%s' and probing "
        "guessed raw.\n         Automatically detecting the format is "
        "dangerous for raw images, write operations on block 0 will "
        "be restricted.\n         Specify the 'raw' format explicitly "
        "to remove the restrictions.\n", filename);
    if (warn)
        warn(msg);
    else
        fputs(msg, stderr);
    return format;
}

/* json:{...}: the JSON object's members as flat keys ("file.filename"),
 * the values as strings, as QEMU's qdict_flatten makes them. */
static void flatten_json(GHashTable *t, const char *prefix, JsonNode *node)
{
    if (JSON_NODE_HOLDS_OBJECT(node)) {
        JsonObject *obj = json_node_get_object(node);
        g_autoptr(GList) members = json_object_get_members(obj);

        for (GList *m = members; m; m = m->next) {
            g_autofree char *key = *prefix
                ? g_strconcat(prefix, ".", m->data, NULL)
                : g_strdup(m->data);
            flatten_json(t, key, json_object_get_member(obj, m->data));
        }
    } else if (JSON_NODE_HOLDS_ARRAY(node)) {
        JsonArray *a = json_node_get_array(node);

        for (guint i = 0; i < json_array_get_length(a); i++) {
            g_autofree char *key = g_strdup_printf("%s.%u", prefix, i);
            flatten_json(t, key, json_array_get_element(a, i));
        }
    } else if (JSON_NODE_HOLDS_VALUE(node)) {
        GType type = json_node_get_value_type(node);
        g_autofree char *v =
            type == G_TYPE_BOOLEAN ? g_strdup(json_node_get_boolean(node)
                                              ? "on" : "off")
            : type == G_TYPE_INT64 ? g_strdup_printf(
                  "%" G_GINT64_FORMAT, json_node_get_int(node))
            : type == G_TYPE_DOUBLE ? g_strdup_printf(
                  "%.17g", json_node_get_double(node))
            : g_strdup(json_node_get_string(node));
        put(t, prefix, v);
    }
}

static GHashTable *json_filename(const char *filename, GError **errp)
{
    g_autoptr(JsonParser) parser = json_parser_new();
    g_autoptr(GError) err = NULL;
    JsonNode *root;
    GHashTable *t;

    if (!json_parser_load_from_data(parser, filename + 5, -1, &err) ||
        !(root = json_parser_get_root(parser)) ||
        !JSON_NODE_HOLDS_OBJECT(root)) {
        bad_value(errp, "Could not parse the JSON options of '%s'%s%s",
                  filename, err ? ": " : "", err ? err->message : "");
        return NULL;
    }
    t = opt_table();
    flatten_json(t, "", root);
    return t;
}

/* NBD client nodes (block/nbd.c). */
static bool is_nbd_client_name(const char *filename)
{
    return g_str_has_prefix(filename, "nbd:") ||
           g_str_has_prefix(filename, "nbd+unix:") ||
           g_str_has_prefix(filename, "nbd+tcp:");
}

/* The options of the node a FILENAME names, as QEMU reads protocol
 * prefixes: "json:{...}", "file:PATH", "null-co://", NBD URIs (an nbd
 * client node), a refusal for unknown protocols ("x:..." with no '/'
 * before the colon), and else a file. */
static GHashTable *filename_options(const char *filename, GError **errp)
{
    size_t proto_len = strspn(filename,
                              "abcdefghijklmnopqrstuvwxyz"
                              "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-_");
    g_autoptr(GHashTable) t = NULL;

    if (g_str_has_prefix(filename, "json:"))
        return json_filename(filename, errp);
    t = opt_table();
    if (is_nbd_client_name(filename)) {
        put(t, "driver", "nbd");
        put(t, "filename", filename);
    } else if (g_str_has_prefix(filename, "null-co:") ||
               g_str_has_prefix(filename, "null-aio:")) {
        if (strcmp(strchr(filename, ':'), "://") != 0) {
            bad_value(errp, "The only allowed filename for this driver is "
                      "'%.*s://'", (int)(strchr(filename, ':') - filename),
                      filename);
            return NULL;
        }
        put(t, "driver", g_str_has_prefix(filename, "null-aio:")
                             ? "null-aio" : "null-co");
    } else if (g_str_has_prefix(filename, "rbd:") && bdrv_has_driver("rbd")) {
        put(t, "driver", "rbd"); /* block/rbd.c parses the rest */
        put(t, "filename", filename);
    } else if (g_str_has_prefix(filename, "file:")) {
        put(t, "driver", "file");
        put(t, "filename", filename + 5);
    } else if (proto_len > 0 && filename[proto_len] == ':') {
        bad_value(errp, "Unknown protocol '%.*s'", (int)proto_len, filename);
        return NULL;
    } else {
        put(t, "driver", "file");
        put(t, "filename", filename);
    }
    return g_steal_pointer(&t);
}

static bool is_format(const char *driver)
{
    return g_strcmp0(driver, "raw") == 0 || g_strcmp0(driver, "qcow2") == 0;
}

/* The image node of a file name: raw or qcow2 (given, or probed) over the
 * protocol node it names, unless it names a format node itself (json:). */
static GHashTable *plain_image(const ImageSpec *s, GError **errp)
{
    g_autoptr(GHashTable) proto = filename_options(s->filename, errp);
    const char *driver, *format = s->format;
    GHashTable *t;

    if (!proto)
        return NULL;
    driver = g_hash_table_lookup(proto, "driver");
    if (!driver && g_hash_table_contains(proto, "filename"))
        put(proto, "driver", driver = "file");
    /* a format node itself (json:), or the protocol named as the format
     * (-f file), as QEMU opens them */
    if (format ? g_strcmp0(format, driver) == 0 : is_format(driver))
        return g_steal_pointer(&proto);
    if (!format && g_strcmp0(driver, "file") == 0)
        format = image_opts_probe(g_hash_table_lookup(proto, "filename"),
                                  s->warn);
    else if (!format) /* the other protocols read zeroes: raw */
        format = image_opts_probe(s->filename, s->warn);
    if (!is_format(format) || !bdrv_has_driver(format) || is_format(driver)) {
        if (is_format(driver))
            bad_value(errp, "Cannot use '%s' with -f %s", driver, format);
        else
            bad_value(errp, "format '%s' is not supported (use raw or "
                      "qcow2)", format);
        return NULL;
    }
    t = opt_table();
    put(t, "driver", format);
    if (!s->format && !strcmp(format, "raw"))
        put(t, "x-probed", "on"); /* block 0 is protected, as in QEMU */
    put_under(t, "file", proto);
    return t;
}

/* --image-opts: the options describe the image, in QEMU's way: a node
 * given only a filename is a file, and without a driver the format is
 * probed from the file (with the warning for raw). */
static GHashTable *given_image(const ImageSpec *s, GError **errp)
{
    g_autoptr(GHashTable) t = opt_table();
    g_autoptr(GPtrArray) files = NULL;
    const char *file;

    if (s->options) {
        GHashTableIter it;
        gpointer k, v;

        g_hash_table_iter_init(&it, s->options);
        while (g_hash_table_iter_next(&it, &k, &v))
            put(t, k, v);
    }
    if (g_hash_table_size(t) == 0) {
        bad_value(errp, "Must specify either driver or file");
        return NULL;
    }
    if (!g_hash_table_contains(t, "driver") &&
        g_hash_table_contains(t, "filename")) {
        put(t, "file.filename", g_hash_table_lookup(t, "filename"));
        g_hash_table_remove(t, "filename");
    }
    file = g_hash_table_lookup(t, "file.filename");
    if (!g_hash_table_contains(t, "driver") && file) {
        put(t, "driver", image_opts_probe(file, s->warn));
        if (!strcmp(g_hash_table_lookup(t, "driver"), "raw"))
            put(t, "x-probed", "on");
    }
    files = node_prefixes(t, "filename", NULL);
    for (guint i = 0; i < files->len; i++) {
        g_autofree char *key =
            g_strconcat(g_ptr_array_index(files, i), "driver", NULL);
        put_default(t, key, "file");
    }
    return g_steal_pointer(&t);
}

/* The caller's options of the image node (node-name, backing) over what
 * the file name made of it. */
static void put_extra(GHashTable *t, GHashTable *extra)
{
    GHashTableIter it;
    gpointer k, v;

    if (!extra)
        return;
    g_hash_table_iter_init(&it, extra);
    while (g_hash_table_iter_next(&it, &k, &v))
        put(t, k, v);
}

/* -l SNAPSHOT: an id or name, or QEMU's snapshot.id=ID,snapshot.name=NAME
 * (both must match then), as options of the qcow2 node. */
static bool put_snapshot_params(GHashTable *t, const char *spec,
                                GError **errp)
{
    g_autoptr(GPtrArray) items = NULL;

    if (!g_str_has_prefix(spec, "snapshot.")) {
        put(t, "snapshot.id-or-name", spec);
        return true;
    }
    items = qemu_opts_split(spec);
    for (guint i = 0; i < items->len; i++) {
        const char *item = g_ptr_array_index(items, i);
        const char *eq = strchr(item, '=');
        g_autofree char *key = eq ? g_strndup(item, eq - item)
                                  : g_strdup(item);

        if (!*item)
            continue; /* a trailing comma: nothing */
        if (strcmp(key, "snapshot.id") != 0 &&
            strcmp(key, "snapshot.name") != 0) {
            bad_value(errp, "Failed in parsing snapshot param `%s': Invalid "
                      "parameter '%s'", spec, key);
            return false;
        }
        put(t, key, eq ? eq + 1 : "on");
    }
    return true;
}

/* qemu-nbd loads the snapshot into the node on top, so it must be qcow2
 * (with -o that node is raw, and qemu-nbd fails the same way). */
static bool put_snapshot(GHashTable *t, const ImageSpec *s, GError **errp)
{
    const char *driver = g_hash_table_lookup(t, "driver");

    if (!s->load_snapshot)
        return true;
    if (!put_snapshot_params(t, s->load_snapshot, errp))
        return false;
    if (s->offset || g_strcmp0(driver, "qcow2") != 0) {
        bad_value(errp, "Failed to load snapshot: Block format '%s' used by "
                  "device '' does not support temporarily loading internal "
                  "snapshots",
                  s->offset ? "raw" : driver ? driver : "");
        return false;
    }
    return true;
}

/* -o (and a size): as qemu-nbd, a raw node with the window on top of the
 * image node; a raw image node without a window of its own takes it
 * directly (the same bytes, one node less). */
static GHashTable *put_window(GHashTable *t, int64_t offset, int64_t size)
{
    g_autofree char *off = g_strdup_printf("%" G_GINT64_FORMAT, offset);
    g_autofree char *len = g_strdup_printf("%" G_GINT64_FORMAT, size);
    GHashTable *top;

    if (!offset && !size)
        return t;
    if (g_strcmp0(g_hash_table_lookup(t, "driver"), "raw") == 0 &&
        !g_hash_table_contains(t, "offset") &&
        !g_hash_table_contains(t, "size")) {
        top = t;
    } else {
        top = opt_table();
        put_under(top, "file", t);
        g_hash_table_unref(t);
        put(top, "driver", "raw");
    }
    if (offset)
        put(top, "offset", off);
    if (size)
        put(top, "size", len);
    return top;
}

GHashTable *image_opts_node(const ImageSpec *s, GError **errp)
{
    g_autoptr(GHashTable) t = s->filename ? plain_image(s, errp)
                                          : given_image(s, errp);

    if (!t)
        return NULL;
    if (s->filename)
        put_extra(t, s->options);
    if (!put_snapshot(t, s, errp))
        return NULL;
    put_aio(t, s->aio);
    if (!put_cache_mode(t, s->cache, errp))
        return NULL;
    return g_steal_pointer(&t);
}

GHashTable *image_opts_top(const ImageSpec *s, GHashTable *node,
                           GError **errp)
{
    g_autoptr(GHashTable) t = put_window(node, s->offset, s->size);

    put_aio(t, s->aio);
    if (!put_cache_mode(t, s->cache, errp))
        return NULL;
    put_default(t, "read-only", s->read_only ? "on" : "off");
    if (s->discard)
        put_default(t, "discard", s->discard);
    if (s->detect_zeroes)
        put_default(t, "detect-zeroes", s->detect_zeroes);
    return g_steal_pointer(&t);
}

GHashTable *image_opts_build(const ImageSpec *s, GError **errp)
{
    GHashTable *t = image_opts_node(s, errp);

    return t ? image_opts_top(s, t, errp) : NULL;
}
