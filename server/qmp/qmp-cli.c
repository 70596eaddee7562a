/*
 * qmp-cli.c - --qmp, --chardev, --monitor, --blockdev, --nbd-server and
 * --export.
 *
 * The last three are QMP commands written as QEMU option strings
 * ("type=nbd,id=e0,node-name=disk,writable=on") or, for --blockdev, also as
 * JSON; they are run through the same handlers as over the socket, so they
 * check and fail exactly alike.
 */
#include "qmp-cli.h"

#include "block/qemu-opts.h"
#include "qmp-int.h"
#include "qmp-json.h"
#include "qmp-schema.h"

#include <stdio.h>
#include <string.h>

static char **qmp_specs;   /* --qmp */
static char **chardevs;    /* --chardev */
static char **monitors;    /* --monitor */
static char **blockdevs;   /* --blockdev */
static char **nbd_servers; /* --nbd-server */
static char **exports;     /* --export */

GOptionGroup *qmp_cli_option_group(void)
{
    static const GOptionEntry entries[] = {
        { "qmp", 0, 0, G_OPTION_ARG_STRING_ARRAY, &qmp_specs,
          "serve QMP on the unix socket PATH", "unix:PATH,server[,wait=off]" },
        { "chardev", 0, 0, G_OPTION_ARG_STRING_ARRAY, &chardevs,
          "a unix socket for --monitor", "socket,id=ID,path=PATH,server=on" },
        { "monitor", 0, 0, G_OPTION_ARG_STRING_ARRAY, &monitors,
          "serve QMP on the --chardev ID", "[chardev=]ID" },
        { "blockdev", 0, 0, G_OPTION_ARG_STRING_ARRAY, &blockdevs,
          "add a block node (as blockdev-add)", "OPTIONS|JSON" },
        { "nbd-server", 0, 0, G_OPTION_ARG_STRING_ARRAY, &nbd_servers,
          "start the NBD server (as nbd-server-start)",
          "addr.type=unix,addr.path=PATH|addr.type=inet,addr.host=H,"
          "addr.port=P" },
        { "export", 0, 0, G_OPTION_ARG_STRING_ARRAY, &exports,
          "export a node (as block-export-add)",
          "type=nbd,id=ID,node-name=NODE[,name=NAME][,writable=on]" },
        { NULL },
    };
    GOptionGroup *g = g_option_group_new(
        "daemon", "Control socket and daemon mode (qemu-storage-daemon):",
        "Show the control socket options", NULL, NULL);

    g_option_group_add_entries(g, entries);
    return g;
}

bool qmp_cli_given(void)
{
    return qmp_specs || monitors || blockdevs || nbd_servers || exports;
}

static bool fail(const char *option, const char *spec, const GError *err)
{
    fprintf(stderr, "snapnbd: %s %s: %s\n", option, spec, err->message);
    return false;
}

/* --monitor [chardev=]ID: the --chardev socket of that id. */
static char *monitor_spec(const char *monitor, GError **errp)
{
    g_autoptr(GHashTable) m = qemu_opts_parse(monitor, "chardev");
    const char *id = g_hash_table_lookup(m, "chardev");
    const char *mode = g_hash_table_lookup(m, "mode");

    if (mode && strcmp(mode, "control") != 0) {
        qmp_error(errp, "only mode=control is supported");
        return NULL;
    }
    for (char **c = chardevs; id && c && *c; c++) {
        g_autoptr(GHashTable) opts = qemu_opts_parse(*c, "backend");
        if (g_strcmp0(g_hash_table_lookup(opts, "id"), id) == 0)
            return g_strdup(*c);
    }
    qmp_error(errp, "chardev '%s' not found", id ? id : "");
    return NULL;
}

static bool add_listeners(void)
{
    g_autoptr(GError) err = NULL;

    for (char **q = qmp_specs; q && *q; q++) {
        if (!qmp_add_listener(*q, &err))
            return fail("--qmp", *q, err);
    }
    for (char **m = monitors; m && *m; m++) {
        g_autofree char *spec = monitor_spec(*m, &err);
        if (!spec || !qmp_add_listener(spec, &err))
            return fail("--monitor", *m, err);
    }
    return true;
}

/* A key part that is a list index (QEMU's key_to_index): decimal digits;
 * else -1. */
static gint64 key_index(const char *part)
{
    char *end;
    gint64 n;

    if (!g_ascii_isdigit(part[0]))
        return -1;
    n = g_ascii_strtoll(part, &end, 10);
    return *end ? -1 : MIN(n, G_MAXINT);
}

/* Sets @parts' value in @top, making the objects on its way; false when
 * a key is both a value and a prefix (QEMU's message). */
static bool put_key(JsonObject *top, char **parts, const char *value,
                    GError **errp)
{
    g_autoptr(GString) prefix = g_string_new(NULL);
    JsonObject *o = top;
    guint n = g_strv_length(parts);

    for (guint i = 0; i + 1 < n; i++) {
        JsonNode *v = json_object_get_member(o, parts[i]);

        g_string_append(prefix, parts[i]);
        if (v && !JSON_NODE_HOLDS_OBJECT(v))
            goto inconsistent;
        if (!v)
            json_object_set_object_member(o, parts[i], json_object_new());
        o = json_object_get_object_member(o, parts[i]);
        g_string_append_c(prefix, '.');
    }
    g_string_append(prefix, parts[n - 1]);
    if (json_object_has_member(o, parts[n - 1]) &&
        JSON_NODE_HOLDS_OBJECT(json_object_get_member(o, parts[n - 1])))
        goto inconsistent;
    json_object_set_string_member(o, parts[n - 1], value);
    return true;

inconsistent:
    qmp_error(errp, "Parameters '%s.*' used inconsistently", prefix->str);
    return false;
}

static JsonNode *listify(JsonNode *node, const char *key, GError **errp);

/* @o's members that are objects, listified; then @o itself, as a list
 * if its keys are indexes (QEMU's keyval_listify).  @key names @o, with
 * a trailing dot unless it is the top. */
static JsonNode *listify_object(JsonObject *o, const char *key, GError **errp)
{
    g_autoptr(GList) names = json_object_get_members(o);
    g_autoptr(GPtrArray) elts = g_ptr_array_new();
    bool has_index = false, has_member = false;

    for (GList *l = names; l; l = l->next) {
        g_autofree char *sub = g_strdup_printf("%s%s.", key,
                                               (char *)l->data);
        JsonNode *v = listify(json_object_get_member(o, l->data), sub, errp);
        gint64 i = key_index(l->data);

        if (!v)
            return NULL;
        json_object_set_member(o, l->data, v);
        if (i < 0) {
            has_member = true;
            continue;
        }
        has_index = true;
        if ((guint64)i >= elts->len)
            g_ptr_array_set_size(elts, i + 1);
        elts->pdata[i] = v;
    }
    if (has_index && has_member) {
        qmp_error(errp, "Parameters '%.*s.*' used inconsistently",
                  (int)strlen(key) - 1, key);
        return NULL;
    }
    if (!has_index)
        return json_node_init_object(json_node_alloc(), o);

    JsonArray *list = json_array_new();
    for (guint i = 0; i < elts->len; i++) {
        if (!elts->pdata[i]) {
            qmp_error(errp, "Parameter '%s%u' missing", key, i);
            json_array_unref(list);
            return NULL;
        }
        json_array_add_element(list, json_node_copy(elts->pdata[i]));
    }
    return json_node_init_array(json_node_alloc(), list);
}

static JsonNode *listify(JsonNode *node, const char *key, GError **errp)
{
    if (!JSON_NODE_HOLDS_OBJECT(node))
        return json_node_copy(node);
    return listify_object(json_node_get_object(node), key, errp);
}

/* "a.b=v" keys become nested objects and "a.0=v" keys lists, as QEMU's
 * keyval does; NULL with @errp set on inconsistent keys. */
static JsonObject *opts_to_object(const char *spec, GError **errp)
{
    g_autoptr(GHashTable) opts = qemu_opts_parse(spec, NULL);
    g_autoptr(JsonObject) top = json_object_new();
    g_autoptr(JsonNode) result = NULL;
    GHashTableIter it;
    gpointer k, v;

    g_hash_table_iter_init(&it, opts);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        g_auto(GStrv) parts = g_strsplit(k, ".", -1);

        if (!put_key(top, parts, v, errp))
            return NULL;
    }
    result = listify_object(top, "", errp);
    if (!result)
        return NULL;
    if (!JSON_NODE_HOLDS_OBJECT(result)) {
        qmp_error(errp, "Parameters '*' used inconsistently");
        return NULL;
    }
    return json_object_ref(json_node_get_object(result));
}

/* --nbd-server's addr is QEMU's flat SocketAddress (NbdServerOptions):
 * nbd-server-start takes a SocketAddressLegacy, whose members other than
 * "type" are in "data". */
static void legacy_addr(JsonObject *args)
{
    JsonObject *addr = json_object_get_object_member(args, "addr");
    g_autoptr(GList) names = json_object_get_members(addr);
    JsonObject *data = json_object_new();

    for (GList *l = names; l; l = l->next) {
        if (strcmp(l->data, "type") == 0)
            continue;
        json_object_set_member(data, l->data, json_node_copy(
            json_object_get_member(addr, l->data)));
        json_object_remove_member(addr, l->data);
    }
    json_object_set_object_member(addr, "data", data);
}

/* @command with arguments given as QMP JSON (--blockdev {...}), or in
 * option syntax (whose values are parsed, and checked, as the schema type
 * @keyval_type says, as qemu-storage-daemon does), then checked and
 * decoded like QMP input. */
static bool run(const char *command, const char *keyval_type,
                const char *option, const char *spec, JsonObject *args)
{
    g_autoptr(GError) err = NULL;
    JsonNode *ret = NULL;

    if (!keyval_type || qmp_schema_check_keyval(keyval_type, args, &err)) {
        if (keyval_type && strcmp(command, "nbd-server-start") == 0)
            legacy_addr(args);
        ret = qmp_execute(command, args, &err);
    }
    json_object_unref(args);
    if (err)
        return fail(option, spec, err);
    json_node_unref(ret);
    return true;
}

/* @command with arguments in option syntax. */
static bool run_options(const char *command, const char *keyval_type,
                        const char *option, const char *spec)
{
    g_autoptr(GError) err = NULL;
    JsonObject *args = opts_to_object(spec, &err);

    if (!args)
        return fail(option, spec, err);
    return run(command, keyval_type, option, spec, args);
}

/* --blockdev JSON, or key=value options taken as bdrv_open's flat keys. */
static bool add_blockdev(const char *spec)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(JsonNode) json = NULL;

    if (spec[0] != '{') {
        g_autoptr(GHashTable) flat = qemu_opts_parse(spec, NULL);
        if (!qmp_block_add_flat(flat, &err))
            return fail("--blockdev", spec, err);
        return true;
    }
    json = qmp_json_parse(spec, &err);
    if (json && !JSON_NODE_HOLDS_OBJECT(json))
        qmp_error(&err, "QMP input must be a JSON object");
    if (err)
        return fail("--blockdev", spec, err);
    return run("blockdev-add", NULL, "--blockdev", spec,
               json_object_ref(json_node_get_object(json)));
}

bool qmp_cli_object_add_json(const char *spec)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(JsonNode) json = NULL;

    qmp_register_all();
    json = qmp_json_parse(spec, &err);
    if (json && !JSON_NODE_HOLDS_OBJECT(json))
        qmp_error(&err, "QMP input must be a JSON object");
    if (err)
        return fail("--object", spec, err);
    return run("object-add", NULL, "--object", spec,
               json_object_ref(json_node_get_object(json)));
}

bool qmp_cli_start(void)
{
    g_autoptr(GError) err = NULL;

    qmp_register_all();
    if (!add_listeners())
        return false;
    for (char **b = blockdevs; b && *b; b++) {
        if (!add_blockdev(*b))
            return false;
    }
    for (char **s = nbd_servers; s && *s; s++) {
        if (!run_options("nbd-server-start", "NbdServerOptions",
                         "--nbd-server", *s))
            return false;
    }
    for (char **e = exports; e && *e; e++) {
        if (!run_options("block-export-add", "BlockExportOptions",
                         "--export", *e))
            return false;
    }
    if (!qmp_start(&err)) {
        fprintf(stderr, "snapnbd: %s\n", err->message);
        return false;
    }
    return true;
}

void qmp_cli_free(void)
{
    g_clear_pointer(&qmp_specs, g_strfreev);
    g_clear_pointer(&chardevs, g_strfreev);
    g_clear_pointer(&monitors, g_strfreev);
    g_clear_pointer(&blockdevs, g_strfreev);
    g_clear_pointer(&nbd_servers, g_strfreev);
    g_clear_pointer(&exports, g_strfreev);
}
