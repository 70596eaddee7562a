/*
 * qmp-object.c - QMP object-add, object-del and qom-list of "/objects":
 * QEMU's user-creatable objects (objects.c keeps them; TLS ones live in
 * tls.c, throttle groups in the block layer).  Each type's properties are
 * checked against the schema (ObjectOptions, as in QEMU's qapi/qom.json)
 * and decoded before the handler runs; they are handed on as flat
 * strings, the option syntax --object uses, by the generated encoder.
 */
#include "qmp-int.h"

#include "block/block.h"
#include "server/objects.h"

#include "server/qmp/qmp-types-gen.h"

#include <string.h>

/* The object's properties as the option syntax writes them, from the one
 * description of its members, the schema: "limits": {"iops-total": 50} is
 * "limits.iops-total" = "50", authz-list's rules "rules.0.match". */
static JsonNode *cmd_object_add(const QmpObjectOptions *o, GError **errp)
{
    g_autoptr(GHashTable) props =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    QmpFlat flat = { props, NULL };
    GError *err = NULL;

    qmp_encode_flat_object_options(o, "", &flat);
    /* the union's base members are not properties */
    g_hash_table_remove(props, "qom-type");
    g_hash_table_remove(props, "id");
    /* deprecated, and read-only in QEMU 7.2 whatever the value (QEMU
     * checks the id first) */
    if (g_hash_table_contains(props, "loaded") &&
        bdrv_id_wellformed(o->id)) {
        qmp_error(errp, "Property '%s.loaded' is not writable",
                  qmp_object_type_str[o->qom_type]);
        return NULL;
    }
    if (!object_create(qmp_object_type_str[o->qom_type], o->id, props,
                       &err)) {
        qmp_error(errp, "%s", err->message);
        g_error_free(err);
    }
    return NULL;
}

static JsonNode *cmd_object_del(const QmpObjectDelArgs *a, GError **errp)
{
    GError *err = NULL;

    if (!object_delete(a->id, &err)) {
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
static JsonNode *cmd_qom_list(const QmpQomListArgs *a, GError **errp)
{
    const char *path = a->path;
    g_autoptr(JsonArray) list = NULL;
    bool container = objects_container_exists();

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
    qmp_register_typed_object_add(cmd_object_add);
    qmp_register_typed_object_del(cmd_object_del);
    qmp_register_typed_qom_list(cmd_qom_list);
}
