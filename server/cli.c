/*
 * cli.c - qemu-nbd's options, with its defaults (qemu-nbd 7.2), turned into
 * block options.  Options of qemu-nbd that snapnbd does not implement yet
 * are accepted by the parser only to be refused with a message naming them,
 * never ignored.
 */
#include "cli.h"

#include "block/block.h"
#include "qemu-opts.h"
#include "server/qmp/qmp-cli.h"
#include "trace.h"

#include <errno.h>
#include <json-glib/json-glib.h>
#include <unistd.h>
#include <stdio.h>
#include <string.h>

static gboolean unsupported(const char *name, const char *value,
                            gpointer data, GError **errp)
{
    g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_FAILED,
                "option '%s' is not supported yet", name);
    return FALSE;
}

static gboolean trace_arg(const char *name, const char *value,
                          gpointer data, GError **errp)
{
    return trace_option(value, errp);
}

#define UNSUPPORTED(l, s, arg)                                               \
    { l, s, G_OPTION_FLAG_HIDDEN | ((arg) ? 0 : G_OPTION_FLAG_NO_ARG),       \
      G_OPTION_ARG_CALLBACK, (gpointer)unsupported, NULL, NULL }

/* -c DEV, -d DEV: the kernel's NBD client is not driven yet.  A device
 * that does not exist gets qemu-nbd's own message. */
static bool refuse_kernel_device(const CliOptions *o, const char *arg)
{
    const char *dev = o->disconnect ? arg : o->connect_device;

    if (!dev) {
        fprintf(stderr, "snapnbd: -d needs the device (snapnbd -d "
                        "/dev/nbdN)\n");
    } else if (access(dev, F_OK) != 0) {
        fprintf(stderr, "snapnbd: %s %s: %s\n",
                o->disconnect ? "Cannot open" : "Failed to open", dev,
                g_strerror(errno));
    } else {
        fprintf(stderr, "snapnbd: %s %s: kernel NBD devices are not "
                        "supported yet\n",
                o->disconnect ? "-d" : "-c", dev);
    }
    return false;
}

/* -L: qemu-nbd's checks, with its words. */
static bool check_list_mode(int argc, const CliOptions *o, bool shared)
{
    if (argc != 1) {
        fprintf(stderr, "snapnbd: List mode is incompatible with a file "
                        "name\n");
        return false;
    }
    if (o->export_name || o->description || o->offset || o->format ||
        o->load_snapshot || o->bitmaps || o->allocation_depth || o->aio ||
        o->discard || o->cache || o->nocache) {
        fprintf(stderr, "snapnbd: List mode is incompatible with per-device "
                        "settings\n");
        return false;
    }
    if (o->fork) {
        fprintf(stderr, "snapnbd: List mode is incompatible with forking\n");
        return false;
    }
    if (o->tls_authz) {
        fprintf(stderr, "snapnbd: TLS authorization is incompatible with "
                        "export list\n");
        return false;
    }
    return true;
}

bool cli_parse(int argc, char **argv, CliOptions *o)
{
    g_autofree char *shared = NULL;
    const GOptionEntry entries[] = {
        { "port", 'p', 0, G_OPTION_ARG_STRING, &o->port,
          "port to listen on (default 10809)", "PORT" },
        { "bind", 'b', 0, G_OPTION_ARG_STRING, &o->bind,
          "interface to bind to (default 0.0.0.0)", "ADDR" },
        { "socket", 'k', 0, G_OPTION_ARG_FILENAME, &o->socket_path,
          "listen on the unix socket PATH", "PATH" },
        { "export-name", 'x', 0, G_OPTION_ARG_STRING, &o->export_name,
          "export name (default \"\")", "NAME" },
        { "description", 'D', 0, G_OPTION_ARG_STRING, &o->description,
          "export description", "TEXT" },
        { "read-only", 'r', 0, G_OPTION_ARG_NONE, &o->read_only,
          "export read-only", NULL },
        { "persistent", 't', 0, G_OPTION_ARG_NONE, &o->persistent,
          "do not exit on the last connection", NULL },
        { "shared", 'e', 0, G_OPTION_ARG_STRING, &shared,
          "serve NUM clients at once, 0 for unlimited (default 1)", "NUM" },
        { "format", 'f', 0, G_OPTION_ARG_STRING, &o->format,
          "image format: raw or qcow2 (probed when absent)", "FORMAT" },
        { "offset", 'o', 0, G_OPTION_ARG_INT64, &o->offset,
          "offset into the image", "OFFSET" },
        { "nocache", 'n', 0, G_OPTION_ARG_NONE, &o->nocache,
          "disable the host cache (same as --cache=none)", NULL },
        { "cache", 0, 0, G_OPTION_ARG_STRING, &o->cache,
          "none, writeback, writethrough, directsync or unsafe", "MODE" },
        { "aio", 0, 0, G_OPTION_ARG_STRING, &o->aio,
          "threads, io_uring or native", "MODE" },
        { "discard", 0, 0, G_OPTION_ARG_STRING, &o->discard,
          "ignore or unmap", "MODE" },
        { "detect-zeroes", 0, 0, G_OPTION_ARG_STRING, &o->detect_zeroes,
          "off, on or unmap", "MODE" },
        { "fork", 0, 0, G_OPTION_ARG_NONE, &o->fork,
          "fork off the server once it listens", NULL },
        { "pid-file", 0, 0, G_OPTION_ARG_FILENAME, &o->pid_file,
          "write the server's pid to PATH", "PATH" },
        { "verbose", 'v', 0, G_OPTION_ARG_NONE, &o->verbose,
          "accepted, as qemu-nbd; nothing is printed while serving "
          "(see --trace)", NULL },
        { "trace", 'T', 0, G_OPTION_ARG_CALLBACK, (gpointer)trace_arg,
          "print the events that match PATTERN (--trace help lists them)",
          "[[enable=]PATTERN][,events=FILE][,file=FILE]" },
        { "version", 'V', 0, G_OPTION_ARG_NONE, &o->version,
          "print the version and exit", NULL },
        { "object", 0, 0, G_OPTION_ARG_STRING_ARRAY, &o->objects,
          "tls-creds-x509, tls-creds-psk or authz-simple object", "PROPS" },
        { "tls-creds", 0, 0, G_OPTION_ARG_STRING, &o->tls_creds,
          "require TLS with the credentials object ID", "ID" },
        { "tls-authz", 0, 0, G_OPTION_ARG_STRING, &o->tls_authz,
          "let in only TLS clients that the authz object ID allows", "ID" },
        { "allocation-depth", 'A', 0, G_OPTION_ARG_NONE,
          &o->allocation_depth,
          "offer the qemu:allocation-depth meta context", NULL },
        { "load-snapshot", 'l', 0, G_OPTION_ARG_STRING, &o->load_snapshot,
          "export an internal snapshot read-only: its id or name, or "
          "snapshot.id=ID,snapshot.name=NAME", "SNAPSHOT" },
        { "snapshot", 's', 0, G_OPTION_ARG_NONE, &o->snapshot,
          "write to a temporary overlay, never to the image", NULL },
        { "image-opts", 0, 0, G_OPTION_ARG_NONE, &o->image_opts,
          "FILENAME is a set of image options "
          "(driver=qcow2,file.filename=...)", NULL },
        { "bitmap", 'B', 0, G_OPTION_ARG_STRING_ARRAY, &o->bitmaps,
          "offer the dirty bitmap NAME as the qemu:dirty-bitmap:NAME meta "
          "context (repeatable)", "NAME" },
        { "list", 'L', 0, G_OPTION_ARG_NONE, &o->list,
          "list the exports of the server at -k or -b/-p, and exit", NULL },
        { "connect", 'c', G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_FILENAME,
          &o->connect_device, "kernel NBD device (not supported)", "DEV" },
        { "disconnect", 'd', G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_NONE,
          &o->disconnect, "kernel NBD device (not supported)", NULL },
        { "selinux-label", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_STRING,
          &o->selinux_label, "refused: built without SELinux", "LABEL" },
        UNSUPPORTED("partition", 'P', true),
        UNSUPPORTED("tls-hostname", 0, true),
        UNSUPPORTED("handshake-limit", 0, true),
        { NULL },
    };
    g_autoptr(GOptionContext) ctx =
        g_option_context_new("FILENAME - export a disk image over NBD");
    g_autoptr(GError) err = NULL;

    o->shared = 1;
    g_option_context_add_main_entries(ctx, entries, NULL);
    g_option_context_add_group(ctx, qmp_cli_option_group());
    g_option_context_set_summary(ctx,
        "Serves FILENAME over NBD with the options of qemu-nbd.");
    if (!g_option_context_parse(ctx, &argc, &argv, &err)) {
        fprintf(stderr, "snapnbd: %s\n", err->message);
        return false;
    }
    if (o->version)
        return true;
    if (shared) {
        char *end;
        long n = strtol(shared, &end, 10);
        if (*end || end == shared || n < 0 || n > 65535) {
            fprintf(stderr, "snapnbd: invalid shared device number '%s'\n",
                    shared);
            return false;
        }
        o->shared = n;
    }
    if (o->list)
        return check_list_mode(argc, o, shared != NULL);
    if (o->connect_device || o->disconnect)
        return refuse_kernel_device(o, argc == 2 ? argv[1] : NULL);
    if (o->selinux_label) { /* qemu-nbd built without SELinux says so */
        fprintf(stderr, "snapnbd: SELinux support not enabled in this "
                        "binary\n");
        return false;
    }
    /* with the control socket, the image is optional (daemon mode) */
    if (argc != 2 && !(argc == 1 && qmp_cli_given())) {
        fprintf(stderr, "snapnbd: expecting one image file name "
                        "(try 'snapnbd --help')\n");
        return false;
    }
    if (o->offset < 0) {
        fprintf(stderr, "snapnbd: offset must not be negative\n");
        return false;
    }
    if (o->socket_path && (o->port || o->bind)) {
        fprintf(stderr, "snapnbd: --socket cannot be used with --port or "
                        "--bind\n");
        return false;
    }
    if (o->image_opts && o->format) {
        fprintf(stderr, "snapnbd: --image-opts and -f are mutually "
                        "exclusive\n");
        return false;
    }
    if (o->nocache) {
        g_free(o->cache);
        o->cache = g_strdup("none");
    }
    if (o->load_snapshot) /* as in qemu-nbd, -l implies -r */
        o->read_only = TRUE;
    o->filename = g_strdup(argv[1]);
    return true;
}

static void put(GHashTable *t, const char *k, const char *v)
{
    g_hash_table_insert(t, g_strdup(k), g_strdup(v));
}

/* What the command line implies, unless --image-opts says otherwise. */
static void put_default(GHashTable *t, const char *k, const char *v)
{
    if (!g_hash_table_contains(t, k))
        put(t, k, v);
}

static GHashTable *opt_table(void)
{
    return g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
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

/* --cache modes as QEMU maps them: direct = bypass the host page cache,
 * no-flush = ignore flushes; writethrough is handled by the export. */
static bool apply_cache_mode(GHashTable *t, const char *mode, GError **errp)
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
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "invalid cache mode '%s'", mode);
        return false;
    }
    put_default(t, "cache.direct", direct ? "on" : "off");
    put_default(t, "cache.no-flush", no_flush ? "on" : "off");
    return true;
}

bool cli_writethrough(const CliOptions *o)
{
    return o->cache && (!strcmp(o->cache, "writethrough") ||
                        !strcmp(o->cache, "directsync"));
}

/* qemu-nbd probes the format when -f is absent, with a warning for raw. */
static const char *probe_format(const char *filename)
{
    const char *format = bdrv_probe_format(filename);

    if (strcmp(format, "raw") == 0)
        fprintf(stderr,
                "WARNING: Image format was not specified for '%s' and probing "
                "guessed raw.\n         Automatically detecting the format is "
                "dangerous for raw images, write operations on block 0 will "
                "be restricted.\n         Specify the 'raw' format explicitly "
                "to remove the restrictions.\n", filename);
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
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "Could not parse the JSON options of '%s'%s%s",
                    filename, err ? ": " : "", err ? err->message : "");
        return NULL;
    }
    t = opt_table();
    flatten_json(t, "", root);
    return t;
}

/* NBD client nodes (another issue's driver): a plain refusal for now. */
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
    GHashTable *t;

    if (g_str_has_prefix(filename, "json:"))
        return json_filename(filename, errp);
    t = opt_table();
    if (is_nbd_client_name(filename)) {
        put(t, "driver", "nbd");
        put(t, "filename", filename);
    } else if (g_str_has_prefix(filename, "null-co:") ||
        g_str_has_prefix(filename, "null-aio:")) {
        if (strcmp(strchr(filename, ':'), "://") != 0) {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "The only allowed filename for this driver is "
                        "'%.*s://'", (int)(strchr(filename, ':') - filename),
                        filename);
            g_hash_table_unref(t);
            return NULL;
        }
        put(t, "driver", "null-co");
    } else if (g_str_has_prefix(filename, "rbd:") && bdrv_has_driver("rbd")) {
        put(t, "driver", "rbd"); /* block/rbd.c parses the rest */
        put(t, "filename", filename);
    } else if (g_str_has_prefix(filename, "file:")) {
        put(t, "driver", "file");
        put(t, "filename", filename + 5);
    } else if (proto_len > 0 && filename[proto_len] == ':') {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "Unknown protocol '%.*s'", (int)proto_len, filename);
        g_hash_table_unref(t);
        return NULL;
    } else {
        put(t, "driver", "file");
        put(t, "filename", filename);
    }
    return t;
}

static bool is_format(const char *driver)
{
    return g_strcmp0(driver, "raw") == 0 || g_strcmp0(driver, "qcow2") == 0;
}

/* The image node of a FILENAME: raw or qcow2 (-f, or probed) over the
 * protocol node it names, unless it names a format node itself (json:). */
static GHashTable *plain_image(const CliOptions *o, GError **errp)
{
    g_autoptr(GHashTable) proto = filename_options(o->filename, errp);
    const char *driver, *format = o->format;
    GHashTable *t;
    GHashTableIter it;
    gpointer k, v;

    if (!proto)
        return NULL;
    driver = g_hash_table_lookup(proto, "driver");
    if (!driver && g_hash_table_contains(proto, "filename"))
        put(proto, "driver", driver = "file");
    if (is_format(driver) && (!format || strcmp(format, driver) == 0))
        return g_steal_pointer(&proto);
    if (!format && g_strcmp0(driver, "file") == 0)
        format = probe_format(g_hash_table_lookup(proto, "filename"));
    else if (!format) /* the other protocols read zeroes: raw */
        format = probe_format(o->filename);
    if (!is_format(format) || is_format(driver)) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    is_format(driver) ? "Cannot use '%s' with -f %s"
                                      : "format '%s' is not supported (use "
                                        "raw or qcow2)",
                    is_format(driver) ? driver : format, format);
        return NULL;
    }
    t = opt_table();
    put(t, "driver", format);
    if (!o->format && !strcmp(format, "raw"))
        put(t, "x-probed", "on"); /* block 0 is protected, as in QEMU */
    g_hash_table_iter_init(&it, proto);
    while (g_hash_table_iter_next(&it, &k, &v))
        g_hash_table_insert(t, g_strconcat("file.", k, NULL), g_strdup(v));
    return t;
}

/* --image-opts: FILENAME holds the image's options, in QEMU's syntax.  As
 * in QEMU, a node given only a filename is a file, and without a driver
 * the format is probed from the file (with the warning for raw). */
static GHashTable *image_opts(const CliOptions *o, GError **errp)
{
    g_autoptr(GHashTable) t = qemu_opts_parse(o->filename, "file");
    g_autoptr(GPtrArray) files = NULL;
    const char *file;

    if (g_hash_table_size(t) == 0) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "Must specify either driver or file");
        return NULL;
    }
    if (!g_hash_table_contains(t, "driver") &&
        g_hash_table_contains(t, "filename")) {
        put(t, "file.filename", g_hash_table_lookup(t, "filename"));
        g_hash_table_remove(t, "filename");
    }
    file = g_hash_table_lookup(t, "file.filename");
    if (!g_hash_table_contains(t, "driver") && file) {
        put(t, "driver", probe_format(file));
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

/* -l SNAPSHOT: an id or name, or QEMU's snapshot.id=ID,snapshot.name=NAME
 * (both must match then), as options of the qcow2 node. */
static bool put_snapshot_params(GHashTable *t, const char *spec,
                                GError **errp)
{
    g_autoptr(GHashTable) params = NULL;
    GHashTableIter it;
    gpointer k, v;

    if (!g_str_has_prefix(spec, "snapshot.")) {
        put(t, "snapshot.id-or-name", spec);
        return true;
    }
    params = qemu_opts_parse(spec, NULL);
    g_hash_table_iter_init(&it, params);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        if (strcmp(k, "snapshot.id") != 0 && strcmp(k, "snapshot.name") != 0) {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "Failed in parsing snapshot param `%s': Invalid "
                        "parameter '%s'", spec, (const char *)k);
            return false;
        }
        put(t, k, v);
    }
    return true;
}

/* qemu-nbd loads the snapshot into the node on top, so it must be qcow2
 * (with -o that node is raw, and qemu-nbd fails the same way). */
static bool put_snapshot(GHashTable *t, const CliOptions *o, GError **errp)
{
    const char *driver = g_hash_table_lookup(t, "driver");

    if (!o->load_snapshot)
        return true;
    if (!put_snapshot_params(t, o->load_snapshot, errp))
        return false;
    if (o->offset || g_strcmp0(driver, "qcow2") != 0) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "Failed to load snapshot: Block format '%s' used by "
                    "device '' does not support temporarily loading "
                    "internal snapshots",
                    o->offset ? "raw" : driver ? driver : "");
        return false;
    }
    return true;
}

/* -o: as qemu-nbd, a raw node with the offset on top of the image node;
 * a raw image node without an offset of its own takes it directly (the
 * same bytes, one node less). */
static GHashTable *put_offset(GHashTable *t, gint64 offset)
{
    g_autofree char *off = g_strdup_printf("%" G_GINT64_FORMAT, offset);
    GHashTable *top;
    GHashTableIter it;
    gpointer k, v;

    if (!offset)
        return t;
    if (g_strcmp0(g_hash_table_lookup(t, "driver"), "raw") == 0 &&
        !g_hash_table_contains(t, "offset")) {
        put(t, "offset", off);
        return t;
    }
    top = opt_table();
    g_hash_table_iter_init(&it, t);
    while (g_hash_table_iter_next(&it, &k, &v))
        g_hash_table_insert(top, g_strconcat("file.", k, NULL), g_strdup(v));
    g_hash_table_unref(t);
    put(top, "driver", "raw");
    put(top, "offset", off);
    return top;
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

GHashTable *cli_image_options(const CliOptions *o, GError **errp)
{
    g_autoptr(GHashTable) t = o->image_opts ? image_opts(o, errp)
                                            : plain_image(o, errp);

    if (!t || !put_snapshot(t, o, errp))
        return NULL;
    put_aio(t, o->aio);
    if (!apply_cache_mode(t, o->cache, errp))
        return NULL;
    return g_steal_pointer(&t);
}

GHashTable *cli_top_options(const CliOptions *o, GHashTable *node,
                            GError **errp)
{
    g_autoptr(GHashTable) t = put_offset(node, o->offset);

    put_aio(t, o->aio);
    if (!apply_cache_mode(t, o->cache, errp))
        return NULL;
    put_default(t, "read-only", o->read_only ? "on" : "off");
    if (o->discard)
        put_default(t, "discard", o->discard);
    if (o->detect_zeroes)
        put_default(t, "detect-zeroes", o->detect_zeroes);
    return g_steal_pointer(&t);
}

GHashTable *cli_block_options(const CliOptions *o, GError **errp)
{
    GHashTable *t = cli_image_options(o, errp);

    return t ? cli_top_options(o, t, errp) : NULL;
}

void cli_free(CliOptions *o)
{
    g_free(o->filename);
    g_free(o->port);
    g_free(o->bind);
    g_free(o->socket_path);
    g_free(o->export_name);
    g_free(o->description);
    g_free(o->format);
    g_free(o->cache);
    g_free(o->aio);
    g_free(o->discard);
    g_free(o->detect_zeroes);
    g_free(o->pid_file);
    g_strfreev(o->objects);
    g_free(o->tls_creds);
    g_free(o->tls_authz);
    g_free(o->load_snapshot);
    g_strfreev(o->bitmaps);
    g_free(o->selinux_label);
    g_free(o->connect_device);
}
