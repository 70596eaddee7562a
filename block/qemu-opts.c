/*
 * qemu-opts.c - QEMU's option string syntax (see qemu-opts.h).
 */
#include "qemu-opts.h"

#include <string.h>

GPtrArray *qemu_opts_split(const char *s)
{
    GPtrArray *items = g_ptr_array_new_with_free_func(g_free);
    GString *cur = g_string_new(NULL);

    for (const char *p = s;; p++) {
        if (*p == ',' && p[1] == ',') {
            g_string_append_c(cur, ',');
            p++;
        } else if (*p == ',' || *p == '\0') {
            g_ptr_array_add(items, g_string_free(cur, FALSE));
            if (*p == '\0')
                return items;
            cur = g_string_new(NULL);
        } else {
            g_string_append_c(cur, *p);
        }
    }
}

GHashTable *qemu_opts_parse(const char *s, const char *implied)
{
    g_autoptr(GPtrArray) items = qemu_opts_split(s);
    GHashTable *t = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                          g_free);

    for (guint i = 0; i < items->len; i++) {
        const char *item = g_ptr_array_index(items, i);
        const char *eq = strchr(item, '=');

        if (!*item)
            continue; /* "" or a trailing comma: nothing */
        if (eq)
            g_hash_table_insert(t, g_strndup(item, eq - item),
                                g_strdup(eq + 1));
        else if (i == 0 && implied)
            g_hash_table_insert(t, g_strdup(implied), g_strdup(item));
        else
            g_hash_table_insert(t, g_strdup(item), g_strdup("on"));
    }
    return t;
}
