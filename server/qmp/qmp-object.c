/*
 * qmp-object.c - QMP object-add, object-del and qom-list of "/objects":
 * QEMU's user-creatable objects (objects.c keeps them; TLS ones live in
 * tls.c, throttle groups in the block layer).  Each type's properties are
 * checked here as QEMU's QAPI schema types them (ObjectOptions in
 * qapi/qom.json), then handed on as flat strings, the option syntax
 * --object uses.
 */
#include "qmp-int.h"

#include "server/objects.h"

#include <string.h>
/* An object's properties as flat keys ("limits": {"iops-total": 50} is
 * "limits.iops-total" = "50"), as the option syntax writes them. */
static bool flatten_props(JsonNode *n, const char *path, GHashTable *out,
                          GError **errp)
{
    if (JSON_NODE_HOLDS_OBJECT(n)) {
        JsonObject *o = json_node_get_object(n);
        g_autoptr(GList) keys = json_object_get_members(o);
        for (GList *l = keys; l; l = l->next) {
            g_autofree char *sub = *path ? g_strconcat(path, ".", l->data,
                                                       NULL)
                                         : g_strdup(l->data);
            if (!flatten_props(json_object_get_member(o, l->data), sub, out,
                               errp))
                return false;
        }
        return true;
    }
    if (JSON_NODE_HOLDS_VALUE(n) &&
        json_node_get_value_type(n) == G_TYPE_INT64) {
        g_hash_table_insert(out, g_strdup(path),
                            g_strdup_printf("%" G_GINT64_FORMAT,
                                            json_node_get_int(n)));
        return true;
    }
    if (JSON_NODE_HOLDS_VALUE(n) &&
        json_node_get_value_type(n) == G_TYPE_STRING) {
        g_hash_table_insert(out, g_strdup(path),
                            g_strdup(json_node_get_string(n)));
        return true;
    }
    qmp_error(errp, "Invalid parameter type for '%s', expected: integer",
              path);
    return false;
}

typedef enum {
    PROP_STR,
    PROP_BOOL,
    PROP_INT,
    PROP_ENUM,        /* a string among @values */
    PROP_RULES,       /* authz-list's rules: [{match, policy, format}] */
} PropKind;

typedef struct {
    const char *name;
    PropKind kind;
    bool required;
    const char *const *values;  /* PROP_ENUM */
} PropSpec;

static const char *const endpoints[] = { "server", "client", NULL };
static const char *const secret_formats[] = { "raw", "base64", NULL };
static const char *const policies[] = { "deny", "allow", NULL };
static const char *const match_formats[] = { "exact", "glob", NULL };

#define END { NULL, 0, false, NULL }
static const PropSpec secret_props[] = {
    { "data", PROP_STR, false, NULL }, { "file", PROP_STR, false, NULL },
    { "format", PROP_ENUM, false, secret_formats },
    { "keyid", PROP_STR, false, NULL }, { "iv", PROP_STR, false, NULL },
    { "loaded", PROP_BOOL, false, NULL }, END,
};
static const PropSpec iothread_props[] = {
    { "poll-max-ns", PROP_INT, false, NULL },
    { "poll-grow", PROP_INT, false, NULL },
    { "poll-shrink", PROP_INT, false, NULL },
    { "aio-max-batch", PROP_INT, false, NULL },
    { "thread-pool-min", PROP_INT, false, NULL },
    { "thread-pool-max", PROP_INT, false, NULL }, END,
};
static const PropSpec x509_props[] = {
    { "verify-peer", PROP_BOOL, false, NULL },
    { "dir", PROP_STR, false, NULL },
    { "endpoint", PROP_ENUM, false, endpoints },
    { "priority", PROP_STR, false, NULL },
    { "loaded", PROP_BOOL, false, NULL },
    { "sanity-check", PROP_BOOL, false, NULL },
    { "passwordid", PROP_STR, false, NULL }, END,
};
static const PropSpec psk_props[] = {
    { "verify-peer", PROP_BOOL, false, NULL },
    { "dir", PROP_STR, false, NULL },
    { "endpoint", PROP_ENUM, false, endpoints },
    { "priority", PROP_STR, false, NULL },
    { "loaded", PROP_BOOL, false, NULL },
    { "username", PROP_STR, false, NULL }, END,
};
static const PropSpec authz_simple_props[] = {
    { "identity", PROP_STR, true, NULL }, END,
};
static const PropSpec authz_list_props[] = {
    { "policy", PROP_ENUM, false, policies },
    { "rules", PROP_RULES, false, NULL }, END,
};

static const struct {
    const char *type;
    const PropSpec *props;
} object_types[] = {
    { "secret", secret_props },
    { "iothread", iothread_props },
    { "tls-creds-x509", x509_props },
    { "tls-creds-psk", psk_props },
    { "authz-simple", authz_simple_props },
    { "authz-list", authz_list_props },
};

static bool type_error(GError **errp, const char *name, const char *what)
{
    qmp_error(errp, "Invalid parameter type for '%s', expected: %s", name,
              what);
    return false;
}

static bool is_value(JsonNode *n, GType type)
{
    return JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == type;
}

/* One scalar property into @out as the option syntax writes it. */
static bool take_scalar(JsonNode *n, const char *name, PropKind kind,
                        const char *const *values, GHashTable *out,
                        GError **errp)
{
    char *v;

    switch (kind) {
    case PROP_BOOL:
        if (!is_value(n, G_TYPE_BOOLEAN))
            return type_error(errp, name, "boolean");
        v = g_strdup(json_node_get_boolean(n) ? "on" : "off");
        break;
    case PROP_INT:
        if (!is_value(n, G_TYPE_INT64))
            return type_error(errp, name, "integer");
        v = g_strdup_printf("%" G_GINT64_FORMAT, json_node_get_int(n));
        break;
    default:
        if (!is_value(n, G_TYPE_STRING))
            return type_error(errp, name, "string");
        if (kind == PROP_ENUM &&
            !qmp_check_enum(name, json_node_get_string(n), values, errp))
            return false;
        v = g_strdup(json_node_get_string(n));
        break;
    }
    g_hash_table_insert(out, g_strdup(name), v);
    return true;
}

/* authz-list's rules as rules.N.match, rules.N.policy, rules.N.format. */
static bool take_rules(JsonNode *n, GHashTable *out, GError **errp)
{
    static const PropSpec rule[] = {
        { "match", PROP_STR, true, NULL },
        { "policy", PROP_ENUM, true, policies },
        { "format", PROP_ENUM, false, match_formats }, END,
    };
    JsonArray *arr;

    if (!JSON_NODE_HOLDS_ARRAY(n))
        return type_error(errp, "rules", "array");
    arr = json_node_get_array(n);
    for (guint i = 0; i < json_array_get_length(arr); i++) {
        JsonNode *r = json_array_get_element(arr, i);
        g_autofree char *at = g_strdup_printf("rules[%u]", i);
        g_autoptr(GList) keys = NULL;
        JsonObject *o;

        if (!JSON_NODE_HOLDS_OBJECT(r))
            return type_error(errp, at, "object");
        o = json_node_get_object(r);
        for (const PropSpec *p = rule; p->name; p++) {
            JsonNode *m = json_object_get_member(o, p->name);
            g_autofree char *name = g_strdup_printf("%s.%s", at, p->name);
            g_autofree char *key = g_strdup_printf("rules.%u.%s", i,
                                                   p->name);
            if (!m && p->required) {
                qmp_error(errp, "Parameter '%s' is missing", name);
                return false;
            }
            if (m && !take_scalar(m, name, p->kind, p->values, out, errp))
                return false;
            if (m) /* stored under its flat name */
                g_hash_table_insert(out, g_steal_pointer(&key), g_strdup(
                    g_hash_table_lookup(out, name)));
            g_hash_table_remove(out, name);
        }
        keys = json_object_get_members(o);
        for (GList *l = keys; l; l = l->next) {
            if (strcmp(l->data, "match") && strcmp(l->data, "policy") &&
                strcmp(l->data, "format")) {
                qmp_error(errp, "Parameter '%s.%s' is unexpected", at,
                          (char *)l->data);
                return false;
            }
        }
    }
    return true;
}

/* The properties of @args (qom-type and id apart) checked against @spec
 * in the schema's order, then the unknown ones, as QAPI's visitor does. */
static bool take_props(JsonObject *args, const PropSpec *spec,
                       GHashTable *out, GError **errp)
{
    g_autoptr(GList) keys = json_object_get_members(args);

    for (const PropSpec *p = spec; p->name; p++) {
        JsonNode *n = json_object_get_member(args, p->name);
        if (!n && p->required) {
            qmp_error(errp, "Parameter '%s' is missing", p->name);
            return false;
        }
        if (!n)
            continue;
        if (p->kind == PROP_RULES ? !take_rules(n, out, errp)
                                  : !take_scalar(n, p->name, p->kind,
                                                 p->values, out, errp))
            return false;
    }
    for (GList *l = keys; l; l = l->next) {
        bool known = !strcmp(l->data, "qom-type") || !strcmp(l->data, "id");
        for (const PropSpec *p = spec; p->name && !known; p++)
            known = strcmp(p->name, l->data) == 0;
        if (!known) {
            qmp_error(errp, "Parameter '%s' is unexpected", (char *)l->data);
            return false;
        }
    }
    /* QEMU's defaults that change nothing here */
    g_hash_table_remove(out, "loaded");
    return true;
}

/* throttle-group's limits object and x-* keys, flattened. */
static bool take_throttle_props(JsonObject *args, GHashTable *out,
                                GError **errp)
{
    g_autoptr(JsonObject) rest = json_object_new();
    g_autoptr(JsonNode) node = NULL;
    g_autoptr(GList) keys = json_object_get_members(args);

    for (GList *l = keys; l; l = l->next) {
        if (strcmp(l->data, "qom-type") && strcmp(l->data, "id"))
            json_object_set_member(rest, l->data, json_node_copy(
                json_object_get_member(args, l->data)));
    }
    node = json_node_init_object(json_node_alloc(), rest);
    return flatten_props(node, "", out, errp);
}

static JsonNode *cmd_object_add(JsonObject *args, GError **errp)
{
    const char *type = qmp_arg_str(args, "qom-type", true, errp);
    const char *id = type ? qmp_arg_str(args, "id", true, errp) : NULL;
    g_autoptr(GHashTable) props = NULL;
    GError *err = NULL;
    bool ok = true;

    if (!id)
        return NULL;
    props = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    if (!strcmp(type, "throttle-group")) {
        ok = take_throttle_props(args, props, errp);
    } else {
        for (size_t i = 0; i < G_N_ELEMENTS(object_types); i++) {
            if (!strcmp(type, object_types[i].type))
                ok = take_props(args, object_types[i].props, props, errp);
        }
    }
    if (ok && !object_create(type, id, props, &err)) {
        qmp_error(errp, "%s", err->message);
        g_error_free(err);
    }
    return NULL;
}

static JsonNode *cmd_object_del(JsonObject *args, GError **errp)
{
    const char *id = qmp_arg_str(args, "id", true, errp);
    GError *err = NULL;

    if (id && !object_delete(id, &err)) {
        qmp_error(errp, "%s", err->message);
        g_error_free(err);
    }
    return NULL;
}

/* --- qom-list -------------------------------------------------------- */

static JsonObject *qom_property(const char *name, const char *type)
{
    JsonObject *p = json_object_new();

    json_object_set_string_member(p, "name", name);
    json_object_set_string_member(p, "type", type);
    return p;
}

static void list_object(const char *id, const char *type, void *opaque)
{
    g_autofree char *child = g_strdup_printf("child<%s>", type);

    json_array_add_object_element(opaque, qom_property(id, child));
}

/* Only the part of QOM's tree that snapnbd has: "/" and "/objects", the
 * user-created objects (QEMU makes the container with the first one). */
static JsonNode *cmd_qom_list(JsonObject *args, GError **errp)
{
    const char *path = qmp_arg_str(args, "path", true, errp);
    g_autoptr(JsonArray) list = NULL;
    bool container = objects_container_exists();

    if (!path)
        return NULL;
    if (strcmp(path, "/") && (strcmp(path, "/objects") || !container)) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_DEVICE_NOT_FOUND,
                    "Device '%s' not found", path);
        return NULL;
    }
    list = json_array_new();
    json_array_add_object_element(list, qom_property("type", "string"));
    if (!strcmp(path, "/objects"))
        objects_foreach(list_object, list);
    else if (container)
        json_array_add_object_element(list, qom_property("objects",
                                                         "child<container>"));
    return json_node_init_array(json_node_alloc(), list);
}

void qmp_register_object_commands(void)
{
    qmp_register_command("object-add", cmd_object_add);
    qmp_register_command_args("object-del", cmd_object_del, "id");
    qmp_register_command_args("qom-list", cmd_qom_list, "path");
}
