/*
 * qmp-object.c - QMP object-add and object-del for the block layer's QOM
 * objects: QEMU's throttle-group (--object makes them too, in objects.c).
 * The TLS objects and secrets are made once at startup from --object.
 */
#include "qmp-int.h"

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

/* Types QEMU's object-add knows that snapnbd makes only at startup. */
static bool startup_only(const char *type)
{
    return g_str_has_prefix(type, "tls-creds-") ||
           strcmp(type, "authz-simple") == 0 || strcmp(type, "secret") == 0;
}

static JsonNode *cmd_object_add(JsonObject *args, GError **errp)
{
    const char *type = qmp_arg_str(args, "qom-type", true, errp);
    const char *id = type ? qmp_arg_str(args, "id", true, errp) : NULL;
    g_autoptr(GHashTable) props = NULL;
    g_autoptr(JsonObject) rest = NULL;
    g_autoptr(JsonNode) node = NULL;
    g_autoptr(GList) keys = NULL;
    GError *err = NULL;

    if (!id)
        return NULL;
    if (startup_only(type)) {
        qmp_error(errp, "snapnbd makes '%s' objects only at startup "
                  "(--object)", type);
        return NULL;
    }
    if (strcmp(type, "throttle-group") != 0) {
        qmp_error(errp, "Parameter 'qom-type' does not accept value '%s'",
                  type);
        return NULL;
    }
    rest = json_object_new();
    keys = json_object_get_members(args);
    for (GList *l = keys; l; l = l->next) {
        if (strcmp(l->data, "qom-type") && strcmp(l->data, "id"))
            json_object_set_member(rest, l->data, json_node_copy(
                json_object_get_member(args, l->data)));
    }
    node = json_node_init_object(json_node_alloc(), rest);
    props = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    if (!flatten_props(node, "", props, errp))
        return NULL;
    if (!throttle_group_create(id, props, &err)) {
        qmp_error(errp, "%s", err->message);
        g_error_free(err);
    }
    return NULL;
}

static JsonNode *cmd_object_del(JsonObject *args, GError **errp)
{
    const char *id = qmp_arg_str(args, "id", true, errp);
    GError *err = NULL;

    if (id && !throttle_group_delete(id, &err)) {
        qmp_error(errp, "%s", err->message);
        g_error_free(err);
    }
    return NULL;
}

void qmp_register_object_commands(void)
{
    qmp_register_command("object-add", cmd_object_add);
    qmp_register_command_args("object-del", cmd_object_del, "id");
}
