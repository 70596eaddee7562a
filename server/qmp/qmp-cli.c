/*
 * qmp-cli.c - --qmp, --chardev, --monitor, --blockdev, --nbd-server and
 * --export.
 *
 * The last three, and --object, are QMP commands written as QEMU option
 * strings ("type=nbd,id=e0,node-name=disk,writable=on") or, for --blockdev
 * and --object, also as JSON.  Option strings are read as
 * qemu-storage-daemon reads them: QEMU's keyval (qmp-keyval.c, with its
 * implied key), typed by the schema in QEMU's visitor order; then they run
 * through the same handlers as over the socket, so they check and fail
 * exactly alike.  --monitor is keyval too (MonitorOptions); --chardev is
 * QemuOpts, as in QEMU (qmp-chardev.c).
 */
#include "qmp-cli.h"

#include "block/block.h"
#include "qmp-chardev.h"
#include "qmp-int.h"
#include "qmp-json.h"
#include "qmp-keyval.h"
#include "qmp-schema.h"
#include "server/objects.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --qmp, --chardev, --monitor, --blockdev, --nbd-server and --export, in
 * the order given: qemu-storage-daemon runs its options in that order, so
 * an option can use only what an earlier one made. */
typedef struct {
    char *option; /* "--export" */
    char *value;
} CliItem;

static GPtrArray *items; /* of CliItem * */

static void item_free(gpointer p)
{
    CliItem *item = p;

    g_free(item->option);
    g_free(item->value);
    g_free(item);
}

static gboolean add_item(const gchar *option, const gchar *value,
                         G_GNUC_UNUSED gpointer data,
                         G_GNUC_UNUSED GError **error)
{
    CliItem *item = g_new0(CliItem, 1);

    item->option = g_strdup(option);
    item->value = g_strdup(value);
    if (!items)
        items = g_ptr_array_new_with_free_func(item_free);
    g_ptr_array_add(items, item);
    return TRUE;
}

/* set when an option printed help instead of starting: the exit status */
static int help_exit_status = -1;

GOptionGroup *qmp_cli_option_group(void)
{
    static const GOptionEntry entries[] = {
        { "qmp", 0, G_OPTION_FLAG_FILENAME, G_OPTION_ARG_CALLBACK, add_item,
          "serve QMP on the unix socket PATH", "unix:PATH,server[,wait=off]" },
        { "chardev", 0, G_OPTION_FLAG_FILENAME, G_OPTION_ARG_CALLBACK,
          add_item, "a unix socket for --monitor",
          "socket,id=ID,path=PATH,server=on" },
        { "monitor", 0, G_OPTION_FLAG_FILENAME, G_OPTION_ARG_CALLBACK,
          add_item, "serve QMP on the --chardev ID", "[chardev=]ID" },
        { "blockdev", 0, G_OPTION_FLAG_FILENAME, G_OPTION_ARG_CALLBACK,
          add_item, "add a block node (as blockdev-add)", "OPTIONS|JSON" },
        { "nbd-server", 0, G_OPTION_FLAG_FILENAME, G_OPTION_ARG_CALLBACK,
          add_item, "start the NBD server (as nbd-server-start)",
          "addr.type=unix,addr.path=PATH|addr.type=inet,addr.host=H,"
          "addr.port=P" },
        { "export", 0, G_OPTION_FLAG_FILENAME, G_OPTION_ARG_CALLBACK,
          add_item, "export a node (as block-export-add)",
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
    return items && items->len;
}

/* qemu-storage-daemon names the option in its messages, qemu-nbd does not
 * (@option NULL). */
static bool fail(const char *option, const char *spec, const GError *err)
{
    if (option)
        fprintf(stderr, "snapnbd: %s %s: %s\n", option, spec, err->message);
    else
        fprintf(stderr, "snapnbd: %s\n", err->message);
    return false;
}

/* --monitor [chardev=]ID (QEMU's keyval, typed as MonitorOptions): QMP
 * on the --chardev of that id; QEMU's checks in its order. */
static bool add_monitor(const char *monitor, GError **errp)
{
    JsonObject *m = qmp_keyval_parse(monitor, "chardev", errp);
    const char *id, *mode;
    QmpChardev *chr;
    char *path;
    bool ok = false, wait;
    int fd;

    if (!m)
        return false;
    if (!qmp_schema_check_keyval("MonitorOptions", m, errp))
        goto out;
    id = json_object_get_string_member(m, "chardev");
    mode = json_object_get_string_member_with_default(m, "mode", "control");
    chr = qmp_chardev_find(id);
    if (!chr)
        qmp_error(errp, "chardev \"%s\" not found", id);
    else if (strcmp(mode, "control") != 0)
        qmp_error(errp, "Only QMP is supported");
    else if (qmp_chardev_take(chr, &fd, &path, &wait, errp)) {
        if (qmp_chardev_is_stdio(chr))
            qmp_add_stdio_client();
        else
            qmp_add_listener_fd(fd, path, wait);
        ok = true;
    }
out:
    json_object_unref(m);
    return ok;
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
                        const char *implied_key, const char *option,
                        const char *spec)
{
    g_autoptr(GError) err = NULL;
    JsonObject *args = qmp_keyval_parse(spec, implied_key, &err);

    if (!args)
        return fail(option, spec, err);
    return run(command, keyval_type, option, spec, args);
}

/* --blockdev JSON, or options (keyval, "driver" implied) typed as
 * BlockdevOptions, as qemu-storage-daemon takes them. */
static bool add_blockdev(const char *spec)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(JsonNode) json = NULL;

    if (spec[0] != '{')
        return run_options("blockdev-add", "BlockdevOptions", "driver",
                           "--blockdev", spec);
    json = qmp_json_parse(spec, &err);
    if (json && !JSON_NODE_HOLDS_OBJECT(json))
        qmp_error(&err, "QMP input must be a JSON object");
    if (err)
        return fail("--blockdev", spec, err);
    return run("blockdev-add", NULL, "--blockdev", spec,
               json_object_ref(json_node_get_object(json)));
}

bool qmp_cli_object_add_json(const char *spec, bool name_option)
{
    const char *option = name_option ? "--object" : NULL;
    g_autoptr(GError) err = NULL;
    g_autoptr(JsonNode) json = NULL;

    qmp_register_all();
    json = qmp_json_parse(spec, &err);
    if (json && !JSON_NODE_HOLDS_OBJECT(json))
        qmp_error(&err, "QMP input must be a JSON object");
    if (err)
        return fail(option, spec, err);
    return run("object-add", NULL, option, spec,
               json_object_ref(json_node_get_object(json)));
}

/* The QOM type name QEMU 7.2 gives a property of the schema type @t
 * (object_property_help's "<...>"). */
static const char *qom_type_name(const QmpSchemaType *t)
{
    if (t->check == QMP_CHECK_ARRAY) /* QEMU names the element's type */
        t = &qmp_schema_types[t->element];
    if (strcmp(t->name, "str") == 0)
        return "string";
    return t->name;
}

static gint compare_strings(gconstpointer a, gconstpointer b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* QEMU's user_creatable_print_types(): the ObjectType enum, the types
 * snapnbd makes, sorted. */
static void print_object_types(void)
{
    const QmpSchemaType *t = qmp_schema_type("ObjectType");
    g_autoptr(GPtrArray) names = g_ptr_array_new();

    for (const char *const *v = t->values; *v; v++)
        g_ptr_array_add(names, (gpointer)*v);
    g_ptr_array_sort(names, compare_strings);
    printf("List of user creatable objects:\n");
    for (guint i = 0; i < names->len; i++)
        printf("  %s\n", (const char *)g_ptr_array_index(names, i));
}

/* QEMU's type_print_class_properties(): the members of @type's
 * ObjectOptions branch, sorted as whole lines; false if snapnbd does not
 * make @type. */
static bool print_object_properties(const char *type)
{
    const QmpSchemaType *options = qmp_schema_type("ObjectOptions");
    g_autoptr(GPtrArray) lines = g_ptr_array_new_with_free_func(g_free);
    const QmpSchemaType *props = NULL;

    for (const QmpSchemaVariant *v = options->variants; v->name; v++) {
        if (strcmp(v->name, type) == 0)
            props = &qmp_schema_types[v->type];
    }
    if (!props)
        return false;
    for (const QmpSchemaMember *m = props->members; m && m->name; m++) {
        /* deprecated, and read-only in QEMU 7.2: no setter to list */
        if (strcmp(m->name, "loaded") == 0)
            continue;
        g_ptr_array_add(lines, g_strdup_printf(
            "  %s=<%s>", m->name, qom_type_name(&qmp_schema_types[m->type])));
    }
    g_ptr_array_sort(lines, compare_strings);
    if (lines->len)
        printf("%s options:\n", type);
    else
        printf("There are no options for %s.\n", type);
    for (guint i = 0; i < lines->len; i++)
        printf("%s\n", (const char *)g_ptr_array_index(lines, i));
    return true;
}

/* --object ...,help (QEMU's user_creatable_print_help_from_qdict): the
 * type's properties, or the list of types when none or another is named. */
static void print_object_help(JsonObject *args)
{
    JsonNode *type = json_object_get_member(args, "qom-type");

    if (!type || !JSON_NODE_HOLDS_VALUE(type) ||
        json_node_get_value_type(type) != G_TYPE_STRING ||
        !print_object_properties(json_node_get_string(type)))
        print_object_types();
    fflush(stdout);
}

bool qmp_cli_object_wants_help(const char *spec)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(JsonObject) args = NULL;
    bool help = false;

    if (spec[0] == '{')
        return false;
    args = qmp_keyval_parse_help(spec, "qom-type", &help, &err);
    return args && help;
}

bool qmp_cli_object_add_options(const char *spec, bool name_option)
{
    const char *option = name_option ? "--object" : NULL;
    g_autoptr(GError) err = NULL;
    JsonObject *args;
    JsonNode *type;
    bool help;

    qmp_register_all();
    args = qmp_keyval_parse_help(spec, "qom-type", &help, &err);
    if (!args)
        return fail(option, spec, err);
    if (help) {
        print_object_help(args);
        json_object_unref(args);
        help_exit_status = EXIT_SUCCESS;
        return false;
    }
    /* a type QEMU has and snapnbd does not make: said once the members
     * common to all types are checked (QEMU would check the type's own) */
    type = json_object_get_member(args, "qom-type");
    if (type && JSON_NODE_HOLDS_VALUE(type) &&
        json_node_get_value_type(type) == G_TYPE_STRING &&
        object_type_refused(json_node_get_string(type), &err)) {
        JsonNode *id = json_object_get_member(args, "id");

        g_clear_error(&err);
        if (!id)
            qmp_error(&err, "Parameter 'id' is missing");
        else if (!JSON_NODE_HOLDS_VALUE(id))
            qmp_error(&err, "Parameters 'id.*' are unexpected");
        else
            object_type_refused(json_node_get_string(type), &err);
        json_object_unref(args);
        return fail(option, spec, err);
    }
    return run("object-add", "ObjectOptions", option, spec, args);
}

/* One option; false when it failed (said) or printed help (help_exit_status
 * set). */
static bool run_item(const CliItem *item)
{
    g_autoptr(GError) err = NULL;
    const char *option = item->option, *value = item->value;

    if (strcmp(option, "--chardev") == 0) {
        if (qmp_chardev_add(value, &help_exit_status, &err))
            return true;
        return err ? fail(option, value, err) : false;
    }
    if (strcmp(option, "--qmp") == 0)
        return qmp_add_listener(value, &err) || fail(option, value, err);
    if (strcmp(option, "--monitor") == 0)
        return add_monitor(value, &err) || fail(option, value, err);
    if (strcmp(option, "--blockdev") == 0)
        return add_blockdev(value);
    if (strcmp(option, "--nbd-server") == 0)
        return run_options("nbd-server-start", "NbdServerOptions", NULL,
                           option, value);
    return run_options("block-export-add", "BlockExportOptions", "type",
                       option, value);
}

bool qmp_cli_start(const char *fork_option)
{
    g_autoptr(GError) err = NULL;

    qmp_register_all();
    qmp_chardev_set_daemonizing(fork_option);
    for (guint i = 0; items && i < items->len; i++) {
        if (!run_item(g_ptr_array_index(items, i)))
            return false;
    }
    if (!qmp_start(&err)) {
        fprintf(stderr, "snapnbd: %s\n", err->message);
        return false;
    }
    return true;
}

int qmp_cli_help_exit_status(void)
{
    return help_exit_status;
}

void qmp_cli_free(void)
{
    g_clear_pointer(&items, g_ptr_array_unref);
    qmp_chardev_cleanup();
}
