/*
 * qmp-keyval.c - QEMU's key=value option syntax (util/keyval.c), as
 * qemu-storage-daemon reads --nbd-server, --export and --blockdev: the
 * same trees and the same messages.
 */
#include "qmp-keyval.h"
#include "qmp-int.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* Longest key fragment, as QEMU's key_in_cur[128]. */
#define MAX_FRAGMENT 127

unsigned qmp_qdict_bucket(const char *key)
{
    unsigned value = 0x238F13AF * (unsigned)strlen(key);

    for (unsigned i = 0; key[i]; i++)
        value += (unsigned)(unsigned char)key[i] << (i * 5 % 24);
    return (1103515243 * value + 12345) % 512;
}

/* QDict order: by bucket; in a bucket, the key put last first. */
static gint qdict_order(gconstpointer a, gconstpointer b, gpointer order)
{
    const char *ka = *(const char *const *)a, *kb = *(const char *const *)b;
    unsigned ba = qmp_qdict_bucket(ka), bb = qmp_qdict_bucket(kb);
    gint pa = GPOINTER_TO_INT(g_hash_table_lookup(order, ka));
    gint pb = GPOINTER_TO_INT(g_hash_table_lookup(order, kb));

    if (ba != bb)
        return ba < bb ? -1 : 1;
    return pb - pa;
}

/* A fragment that is a list index (QEMU's key_to_index): its value, and
 * where its digits end; -1 if @key does not start with a digit. */
static int key_to_index(const char *key, const char **end)
{
    char *e;
    unsigned long n;

    if (!g_ascii_isdigit(key[0]))
        return -1;
    n = strtoul(key, &e, 10);
    if (end)
        *end = e;
    else if (*e)
        return -1;
    return n <= INT_MAX ? (int)n : INT_MAX;
}

/* Length of the QAPI name @s starts with (QEMU's parse_qapi_name), or 0. */
static size_t qapi_name_len(const char *s)
{
    const char *p = s;

    if (*p == '_') { /* downstream __RFQDN_ */
        if (*++p != '_')
            return 0;
        while (*++p && (g_ascii_isalnum(*p) || *p == '-' || *p == '.'))
            ;
        if (*p++ != '_')
            return 0;
    }
    if (!g_ascii_isalpha(*p))
        return 0;
    while (*++p && (g_ascii_isalnum(*p) || *p == '-' || *p == '_'))
        ;
    return p - s;
}

/* Puts @value (NULL: an object) as @name in @cur; the object it is, or
 * NULL with @errp set when @name is there with the other kind.  @key up
 * to @key_cursor names it in the message. */
static JsonObject *put(JsonObject *cur, const char *name, const char *value,
                       const char *key, const char *key_cursor,
                       GError **errp)
{
    JsonNode *old = json_object_get_member(cur, name);

    if (old && JSON_NODE_HOLDS_OBJECT(old) == (value != NULL)) {
        qmp_error(errp, "Parameters '%.*s.*' used inconsistently",
                  (int)(key_cursor - key), key);
        return NULL;
    }
    if (value) {
        json_object_set_string_member(cur, name, value);
        return cur;
    }
    if (!old)
        json_object_set_object_member(cur, name, json_object_new());
    return json_object_get_object_member(cur, name);
}

static bool is_help(const char *s, size_t len)
{
    return (len == 4 && strncmp(s, "help", 4) == 0) ||
           (len == 1 && s[0] == '?');
}

/* The value after "=", up to an unescaped comma; *@s moves past it. */
static char *parse_value(const char **s)
{
    GString *val = g_string_new(NULL);
    const char *p = *s;

    while (*p) {
        if (*p == ',' && *++p != ',')
            break;
        g_string_append_c(val, *p++);
    }
    *s = p;
    return g_string_free(val, FALSE);
}

/* One key=value (or the implied key's value) from @params into @top; where
 * the next one starts, or NULL with @errp set. */
static const char *parse_one(JsonObject *top, const char *params,
                             const char *implied_key, bool *help,
                             GError **errp)
{
    const char *key = params, *val_end = NULL, *key_end, *s;
    size_t len = strcspn(params, "=,");
    char name[MAX_FRAGMENT + 1];
    JsonObject *cur = top;
    g_autofree char *val = NULL;

    if (len && key[len] != '=') {
        if (is_help(key, len)) {
            *help = true;
            s = key + len;
            return *s == ',' ? s + 1 : s;
        }
        if (implied_key) {
            key = implied_key;
            val_end = params + len;
            len = strlen(implied_key);
        }
    }
    key_end = key + len;
    for (s = key;;) {
        const char *end;

        if (s != key && key_to_index(s, &end) >= 0)
            len = end - s;
        else
            len = qapi_name_len(s);
        len = MIN(len, (size_t)(key_end - s));
        if (!len || (s + len < key_end && s[len] != '.')) {
            qmp_error(errp, "Invalid parameter '%.*s'",
                      (int)(key_end - key), key);
            return NULL;
        }
        if (len > MAX_FRAGMENT) {
            qmp_error(errp, "Parameter%s '%.*s' is too long",
                      s != key || s + len != key_end ? " fragment" : "",
                      (int)len, s);
            return NULL;
        }
        if (s != key && !(cur = put(cur, name, NULL, key, s - 1, errp)))
            return NULL;
        memcpy(name, s, len);
        name[len] = '\0';
        s += len;
        if (*s != '.')
            break;
        s++;
    }
    if (key == implied_key) {
        val = g_strndup(params, val_end - params);
        s = *val_end == ',' ? val_end + 1 : val_end;
    } else {
        if (*s != '=') {
            qmp_error(errp, "Expected '=' after parameter '%.*s'",
                      (int)(s - key), key);
            return NULL;
        }
        s++;
        val = parse_value(&s);
    }
    return put(cur, name, val, key, key_end, errp) ? s : NULL;
}

static JsonNode *listify(JsonObject *cur, const char *key, GError **errp);

/* @cur's members that are objects, listified in place; whether @cur has
 * index keys, member keys, or both (an error). */
static bool listify_members(JsonObject *cur, const char *key,
                            bool *has_index, GError **errp)
{
    g_autoptr(GList) list = json_object_get_members(cur);
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
    bool has_member = false;

    g_autoptr(GHashTable) order = g_hash_table_new(g_str_hash, g_str_equal);
    gint pos = 1;

    /* Copies: setting a member again frees its old name.  Taken in QDict
     * order, so that of several errors QEMU's is the one reported. */
    for (GList *l = list; l; l = l->next) {
        g_ptr_array_add(names, g_strdup(l->data));
        g_hash_table_insert(order, l->data, GINT_TO_POINTER(pos++));
    }
    g_ptr_array_sort_with_data(names, qdict_order, order);
    *has_index = false;
    for (guint i = 0; i < names->len; i++) {
        const char *name = g_ptr_array_index(names, i);
        JsonNode *v = json_object_get_member(cur, name);

        if (key_to_index(name, NULL) >= 0)
            *has_index = true;
        else
            has_member = true;
        if (JSON_NODE_HOLDS_OBJECT(v)) {
            g_autofree char *sub = g_strdup_printf("%s%s.", key, name);
            JsonNode *n = listify(json_node_get_object(v), sub, errp);

            if (!n)
                return false;
            json_object_set_member(cur, name, n);
        }
    }
    if (*has_index && has_member) {
        qmp_error(errp, "Parameters '%s*' used inconsistently", key);
        return false;
    }
    return true;
}

/* @cur, or the list its index keys make (QEMU's keyval_listify); @key is
 * its name with a trailing dot ("" for the top). */
static JsonNode *listify(JsonObject *cur, const char *key, GError **errp)
{
    g_autoptr(GList) names = NULL;
    guint nelt = json_object_get_size(cur) + 1;
    g_autofree JsonNode **elt = g_new0(JsonNode *, nelt);
    bool has_index;
    int max_index = -1;
    JsonArray *list;

    if (!listify_members(cur, key, &has_index, errp))
        return NULL;
    if (!has_index)
        return json_node_init_object(json_node_alloc(), cur);
    /* Only now: setting a member again frees its old name. */
    names = json_object_get_members(cur);
    for (GList *l = names; l; l = l->next) {
        int i = key_to_index(l->data, NULL);

        max_index = MAX(max_index, i);
        if ((guint)i < nelt - 1) /* indexes need not be distinct */
            elt[i] = json_object_get_member(cur, l->data);
    }
    list = json_array_new();
    for (int i = 0; i < MIN((int)nelt, max_index + 1); i++) {
        if (!elt[i]) {
            qmp_error(errp, "Parameter '%s%d' missing", key, i);
            json_array_unref(list);
            return NULL;
        }
        json_array_add_element(list, json_node_copy(elt[i]));
    }
    return json_node_init_array(json_node_alloc(), list);
}

/* QEMU's keyval_parse_into(): help refused before the lists are made
 * when @p_help is NULL. */
static JsonObject *parse_into(const char *params, const char *implied_key,
                              bool *p_help, GError **errp)
{
    g_autoptr(JsonObject) top = json_object_new();
    g_autoptr(JsonNode) done = NULL;
    bool help = false;

    for (const char *s = params; *s; implied_key = NULL) {
        s = parse_one(top, s, implied_key, &help, errp);
        if (!s)
            return NULL;
    }
    if (p_help) {
        *p_help = help;
    } else if (help) {
        qmp_error(errp, "Help is not available for this option");
        return NULL;
    }
    done = listify(top, "", errp);
    return done ? json_object_ref(json_node_get_object(done)) : NULL;
}

JsonObject *qmp_keyval_parse(const char *params, const char *implied_key,
                             GError **errp)
{
    return parse_into(params, implied_key, NULL, errp);
}

JsonObject *qmp_keyval_parse_help(const char *params, const char *implied_key,
                                  bool *help, GError **errp)
{
    return parse_into(params, implied_key, help, errp);
}
