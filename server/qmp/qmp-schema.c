/*
 * qmp-schema.c - checks a command's arguments against the schema's tables
 * (qmp-schema-gen.c, generated from server/qmp-schema.json) and answers
 * query-qmp-schema.
 *
 * The checks follow QEMU's QObject input visitor and generated visitors,
 * so that a client gets the same message for the same mistake: members
 * are visited in the schema's order (a struct's base first, a union's
 * branch after its base), a missing required member or a value of the
 * wrong JSON type stops at once, and members the type does not declare are
 * reported once the known ones are done.  Messages name the member by its
 * full path ("actions[0].data.node") except where QEMU names it by its bare
 * name: enum values, alternates and integer ranges.
 */
#include "qmp-schema.h"
#include "qmp-json.h"
#include "qmp-keyval.h"
#include "qmp.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

const QmpSchemaEntry *qmp_schema_command(const char *name)
{
    for (const QmpSchemaEntry *e = qmp_schema_commands; e->name; e++) {
        if (strcmp(e->name, name) == 0)
            return e;
    }
    return NULL;
}

JsonNode *qmp_schema_info(void)
{
    return json_from_string(qmp_schema_introspection, NULL);
}

/* Where the value being checked sits: its full path and the name it has
 * in its parent (NULL for a list element, which QEMU prints as "null"). */
typedef struct Where {
    const char *path;
    const char *name;
} Where;

static bool check_value(unsigned type, JsonNode *v, Where w, GError **errp);

static bool holds(JsonNode *v, GType type)
{
    return JSON_NODE_HOLDS_VALUE(v) && json_node_get_value_type(v) == type;
}

static const char *bare(Where w)
{
    /* QEMU 7.2 says "null" for a list element: snapnbd names it by its
     * path ("enable[0]"), as test-qmp-errors.sh documents */
    return w.name ? w.name : w.path;
}

static bool wrong_type(Where w, const char *expected, GError **errp)
{
    qmp_error(errp, "Invalid parameter type for '%s', expected: %s", w.path,
              expected);
    return false;
}

static bool check_int(const QmpSchemaType *t, JsonNode *v, Where w,
                      GError **errp)
{
    bool is_unsigned = t->check == QMP_CHECK_UINT;
    gint64 n;

    if (!holds(v, G_TYPE_INT64)) {
        if (is_unsigned) {
            qmp_error(errp, "Parameter '%s' expects uint64", w.path);
            return false;
        }
        return wrong_type(w, "integer", errp);
    }
    if (!t->max)
        return true;
    n = json_node_get_int(v);
    /* unsigned members take negative numbers as their two's complement,
     * as QEMU does for backward compatibility: out of any sized range */
    if ((is_unsigned && (n < 0 || (unsigned long long)n > t->max)) ||
        (!is_unsigned && (n < t->min || n > (long long)t->max))) {
        /* QEMU names the C type: "expects uint32_t" */
        qmp_error(errp, "Parameter '%s' expects %s_t", bare(w), t->name);
        return false;
    }
    return true;
}

static bool check_enum(const QmpSchemaType *t, JsonNode *v, Where w,
                       GError **errp)
{
    const char *s;

    if (!holds(v, G_TYPE_STRING))
        return wrong_type(w, "string", errp);
    s = json_node_get_string(v);
    if (!g_strv_contains(t->values, s)) {
        qmp_error(errp, "Parameter '%s' does not accept value '%s'", bare(w),
                  s);
        return false;
    }
    return true;
}

static bool check_array(const QmpSchemaType *t, JsonNode *v, Where w,
                        GError **errp)
{
    JsonArray *a;

    if (!JSON_NODE_HOLDS_ARRAY(v))
        return wrong_type(w, "array", errp);
    a = json_node_get_array(v);
    for (guint i = 0; i < json_array_get_length(a); i++) {
        g_autofree char *path = g_strdup_printf("%s[%u]", w.path, i);
        Where ew = {path, NULL};
        if (!check_value(t->element, json_array_get_element(a, i), ew, errp))
            return false;
    }
    return true;
}

static char *member_path(const char *prefix, const char *name)
{
    return *prefix ? g_strconcat(prefix, ".", name, NULL) : g_strdup(name);
}

/* The declared members of @t in @o, in order; @visited collects the names
 * of those present. */
static bool check_members(const QmpSchemaType *t, JsonObject *o,
                          const char *prefix, GPtrArray *visited, GError **errp)
{
    for (const QmpSchemaMember *m = t->members; m && m->name; m++) {
        JsonNode *v = json_object_get_member(o, m->name);
        g_autofree char *path = member_path(prefix, m->name);
        Where mw = {path, m->name};

        if (v)
            g_ptr_array_add(visited, (gpointer)m->name);
        if (!v) {
            if (m->optional)
                continue;
            qmp_error(errp, "Parameter '%s' is missing", path);
            return false;
        }
        if (!check_value(m->type, v, mw, errp))
            return false;
    }
    return true;
}

/* A union's branch for the tag value (checked already as an enum). */
static const QmpSchemaType *union_branch(const QmpSchemaType *t, JsonObject *o)
{
    const char *tag = json_object_get_string_member(o, t->tag);

    for (const QmpSchemaVariant *b = t->variants; b->name; b++) {
        if (strcmp(b->name, tag) == 0)
            return &qmp_schema_types[b->type];
    }
    return NULL;
}

/* With several unexpected members, QEMU names the first one of a GHashTable
 * that it fills with every key in QDict order and from which it removes
 * each member as it visits it: the same table, filled and emptied the same
 * way (same glib), names the same one.  @visited: in visiting order. */
static const char *first_unexpected(JsonObject *o, GPtrArray *visited)
{
    g_autoptr(GPtrArray) ordered = qmp_json_qdict_keys(o, true);
    g_autoptr(GHashTable) table = g_hash_table_new(g_str_hash, g_str_equal);
    GHashTableIter it;
    gpointer key = NULL;

    if (ordered->len == visited->len)
        return NULL;
    for (guint i = 0; i < ordered->len; i++)
        g_hash_table_add(table, g_ptr_array_index(ordered, i));
    for (guint i = 0; i < visited->len; i++)
        g_hash_table_remove(table, g_ptr_array_index(visited, i));
    g_hash_table_iter_init(&it, table);
    return g_hash_table_iter_next(&it, &key, NULL) ? key : NULL;
}

/* No member of @o but those in @visited, or QEMU's message for one. */
static bool none_unexpected(JsonObject *o, GPtrArray *visited,
                            const char *prefix, GError **errp)
{
    const char *extra = first_unexpected(o, visited);
    g_autofree char *path = NULL;

    if (!extra)
        return true;
    path = member_path(prefix, extra);
    qmp_error(errp, "Parameter '%s' is unexpected", path);
    return false;
}

static bool check_object(const QmpSchemaType *t, JsonObject *o,
                         const char *prefix, GError **errp)
{
    g_autoptr(GPtrArray) visited = g_ptr_array_new();

    if (!check_members(t, o, prefix, visited, errp))
        return false;
    if (t->tag) {
        const QmpSchemaType *branch = union_branch(t, o);
        if (branch && !check_members(branch, o, prefix, visited, errp))
            return false;
    }
    return none_unexpected(o, visited, prefix, errp);
}

/* An alternate takes the branch whose type matches the JSON type. */
static bool check_alternate(const QmpSchemaType *t, JsonNode *v, Where w,
                            GError **errp)
{
    for (const QmpSchemaVariant *b = t->variants; b->name; b++) {
        const QmpSchemaType *bt = &qmp_schema_types[b->type];
        bool match;
        switch (bt->check) {
        case QMP_CHECK_STR:
        case QMP_CHECK_ENUM:
            match = holds(v, G_TYPE_STRING);
            break;
        case QMP_CHECK_NULL:
            match = JSON_NODE_HOLDS_NULL(v);
            break;
        case QMP_CHECK_BOOL:
            match = holds(v, G_TYPE_BOOLEAN);
            break;
        case QMP_CHECK_INT:
        case QMP_CHECK_UINT:
        case QMP_CHECK_NUMBER:
            match = holds(v, G_TYPE_INT64) || holds(v, G_TYPE_DOUBLE);
            break;
        case QMP_CHECK_ARRAY:
            match = JSON_NODE_HOLDS_ARRAY(v);
            break;
        default:
            match = JSON_NODE_HOLDS_OBJECT(v);
            break;
        }
        if (match)
            return check_value(b->type, v, w, errp);
    }
    qmp_error(errp, "Invalid parameter type for '%s', expected: %s", bare(w),
              t->name);
    return false;
}

static bool check_value(unsigned type, JsonNode *v, Where w, GError **errp)
{
    const QmpSchemaType *t = &qmp_schema_types[type];

    switch (t->check) {
    case QMP_CHECK_STR:
        return holds(v, G_TYPE_STRING) || wrong_type(w, "string", errp);
    case QMP_CHECK_NULL:
        return JSON_NODE_HOLDS_NULL(v) || wrong_type(w, "null", errp);
    case QMP_CHECK_NUMBER:
        return holds(v, G_TYPE_INT64) || holds(v, G_TYPE_DOUBLE) ||
               wrong_type(w, "number", errp);
    case QMP_CHECK_BOOL:
        return holds(v, G_TYPE_BOOLEAN) || wrong_type(w, "boolean", errp);
    case QMP_CHECK_ANY:
        return true;
    case QMP_CHECK_INT:
    case QMP_CHECK_UINT:
        return check_int(t, v, w, errp);
    case QMP_CHECK_ENUM:
        return check_enum(t, v, w, errp);
    case QMP_CHECK_ARRAY:
        return check_array(t, v, w, errp);
    case QMP_CHECK_ALTERNATE:
        return check_alternate(t, v, w, errp);
    case QMP_CHECK_OBJECT:
        break;
    }
    if (!JSON_NODE_HOLDS_OBJECT(v))
        return wrong_type(w, "object", errp);
    return check_object(t, json_node_get_object(v), w.path, errp);
}

bool qmp_schema_check_args(const QmpSchemaEntry *cmd, JsonObject *args,
                           GError **errp)
{
    return check_object(&qmp_schema_types[cmd->arg_type], args, "", errp);
}

/* --- option syntax (QEMU's keyval input) --------------------------------- */

const QmpSchemaType *qmp_schema_type(const char *name)
{
    for (unsigned i = 0; i < qmp_schema_n_types; i++) {
        if (strcmp(qmp_schema_types[i].name, name) == 0)
            return &qmp_schema_types[i];
    }
    return NULL;
}

/* The whole of @s as a number in C syntax (base 0, as qemu_strtoi64). */
static bool parse_integer(const char *s, bool is_unsigned, gint64 *out)
{
    char *end;

    errno = 0;
    *out = is_unsigned ? (gint64)strtoull(s, &end, 0) : strtoll(s, &end, 0);
    return *s && !*end && errno == 0;
}

/* One option value (a string) as the JSON type of @t; QEMU's keyval
 * visitor's messages. */
static bool keyval_scalar(const QmpSchemaType *t, JsonNode *v,
                          const char *path, GError **errp)
{
    static const char *const yes[] = { "on", "yes", "true", "y", NULL };
    static const char *const no[] = { "off", "no", "false", "n", NULL };
    g_autofree char *s = json_node_dup_string(v);
    gint64 n;
    char *end;
    double d;

    switch (t->check) {
    case QMP_CHECK_BOOL:
        if (!g_strv_contains(yes, s) && !g_strv_contains(no, s)) {
            qmp_error(errp, "Parameter '%s' expects 'on' or 'off'", path);
            return false;
        }
        json_node_set_boolean(v, g_strv_contains(yes, s));
        return true;
    case QMP_CHECK_INT:
    case QMP_CHECK_UINT:
        if (!parse_integer(s, t->check == QMP_CHECK_UINT, &n)) {
            qmp_error(errp, "Parameter '%s' expects %s", path,
                      strcmp(t->name, "size") == 0 ? "size" : "integer");
            return false;
        }
        json_node_set_int(v, n);
        return true;
    case QMP_CHECK_NUMBER:
        d = g_ascii_strtod(s, &end);
        if (!*s || *end) {
            qmp_error(errp, "Parameter '%s' expects number", path);
            return false;
        }
        json_node_set_double(v, d);
        return true;
    default:
        return true; /* strings and enums stay strings */
    }
}

static bool keyval_object(const QmpSchemaType *t, JsonObject *o,
                          const char *prefix, GError **errp);

static bool is_scalar(const QmpSchemaType *t)
{
    return t->check != QMP_CHECK_OBJECT && t->check != QMP_CHECK_ARRAY &&
           t->check != QMP_CHECK_ALTERNATE && t->check != QMP_CHECK_ANY;
}

/* An alternate's branch for an object value, or NULL. */
static const QmpSchemaType *object_branch(const QmpSchemaType *t)
{
    for (const QmpSchemaVariant *b = t->variants; b && b->name; b++) {
        if (qmp_schema_types[b->type].check == QMP_CHECK_OBJECT)
            return &qmp_schema_types[b->type];
    }
    return NULL;
}

/* @v (an option value: a string, a nested object or a list) as type @t,
 * checked as QEMU's keyval visitor does, in the same order. */
static bool keyval_value(const QmpSchemaType *t, JsonNode *v, Where w,
                         GError **errp)
{
    const char *path = w.path;

    if (is_scalar(t) &&
        (JSON_NODE_HOLDS_OBJECT(v) || JSON_NODE_HOLDS_ARRAY(v))) {
        qmp_error(errp, "Parameters '%s.*' are unexpected", path);
        return false;
    }
    if (t->check == QMP_CHECK_ALTERNATE && JSON_NODE_HOLDS_OBJECT(v) &&
        object_branch(t))
        t = object_branch(t);
    if (t->check == QMP_CHECK_OBJECT && JSON_NODE_HOLDS_OBJECT(v))
        return keyval_object(t, json_node_get_object(v), path, errp);
    if (t->check == QMP_CHECK_ARRAY && JSON_NODE_HOLDS_ARRAY(v)) {
        JsonArray *a = json_node_get_array(v);

        for (guint i = 0; i < json_array_get_length(a); i++) {
            g_autofree char *elt = g_strdup_printf("%s.%u", path, i);
            Where ew = {elt, NULL};

            if (!keyval_value(&qmp_schema_types[t->element],
                              json_array_get_element(a, i), ew, errp))
                return false;
        }
        return true;
    }
    if (t->check == QMP_CHECK_ENUM && holds(v, G_TYPE_STRING))
        return check_enum(t, v, w, errp);
    if (holds(v, G_TYPE_STRING) && !keyval_scalar(t, v, path, errp))
        return false;
    return check_value((unsigned)(t - qmp_schema_types), v, w, errp);
}

/* @t's members in @o in the schema's order, as QEMU's visitor takes
 * them: a missing one is named before a bad value of a later one. */
static bool keyval_members(const QmpSchemaType *t, JsonObject *o,
                           const char *prefix, GPtrArray *visited,
                           GError **errp)
{
    for (const QmpSchemaMember *m = t->members; m && m->name; m++) {
        JsonNode *v = json_object_get_member(o, m->name);
        g_autofree char *path = member_path(prefix, m->name);
        Where mw = {path, m->name};

        if (!v && !m->optional) {
            qmp_error(errp, "Parameter '%s' is missing", path);
            return false;
        }
        if (!v)
            continue;
        g_ptr_array_add(visited, (gpointer)m->name);
        if (!keyval_value(&qmp_schema_types[m->type], v, mw, errp))
            return false;
    }
    return true;
}

/* A struct or union: its members, its branch's, then (as QEMU checks
 * once it has visited a struct) none unexpected. */
static bool keyval_object(const QmpSchemaType *t, JsonObject *o,
                          const char *prefix, GError **errp)
{
    g_autoptr(GPtrArray) visited = g_ptr_array_new();
    const QmpSchemaType *branch = NULL;

    if (!keyval_members(t, o, prefix, visited, errp))
        return false;
    if (t->tag)
        branch = union_branch(t, o);
    if (branch && !keyval_members(branch, o, prefix, visited, errp))
        return false;
    return none_unexpected(o, visited, prefix, errp);
}

bool qmp_schema_check_keyval(const char *type_name, JsonObject *args,
                             GError **errp)
{
    const QmpSchemaType *t = qmp_schema_type(type_name);

    g_assert(t && t->check == QMP_CHECK_OBJECT);
    return keyval_object(t, args, "", errp) &&
           check_object(t, args, "", errp);
}
