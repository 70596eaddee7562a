/*
 * objects.c - --object, dispatched by type (see objects.h).
 *
 * The secrets are kept for image encryption (encrypt.key-secret=ID), as
 * QEMU's "secret" object holds them: data= or file= (exactly one), in
 * format=raw (the default) or base64.  A secret encrypted with another one
 * (keyid=, iv=) is refused.  throttle-group objects go to the block
 * layer (block/throttle.c).  Refused too are the types of qemu-nbd's list that
 * snapnbd does not make; an unknown type gets QEMU's own message.  All of
 * this happens on the main thread before anything serves; afterwards the
 * table is read-only.
 */
#include "objects.h"

#include "qemu-opts.h"

#include "block/block.h"

#include <stdarg.h>
#include <string.h>

static GHashTable *secrets; /* id -> GBytes */

/* What `qemu-nbd --object help` lists (QEMU 7.2, Debian). */
static const char *const qemu_nbd_types[] = {
    "authz-list", "authz-list-file", "authz-simple", "iothread",
    "main-loop", "pr-manager-helper", "secret", "secret_keyring",
    "thread-context", "throttle-group", "tls-cipher-suites",
    "tls-creds-anon", "tls-creds-psk", "tls-creds-x509", NULL,
};
/* The types tls.c makes. */
static const char *const tls_types[] = {
    "tls-creds-x509", "tls-creds-psk", "authz-simple", NULL,
};

static bool fail(GError **errp, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static bool fail(GError **errp, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    g_propagate_error(errp, g_error_new_valist(G_OPTION_ERROR,
                                               G_OPTION_ERROR_BAD_VALUE,
                                               fmt, ap));
    va_end(ap);
    return false;
}

static bool add_secret(GHashTable *props, GError **errp)
{
    const char *id = g_hash_table_lookup(props, "id");
    const char *data = g_hash_table_lookup(props, "data");
    const char *file = g_hash_table_lookup(props, "file");
    const char *format = g_hash_table_lookup(props, "format");
    g_autofree char *contents = NULL;
    gsize len;
    GHashTableIter it;
    gpointer k;

    g_hash_table_iter_init(&it, props);
    while (g_hash_table_iter_next(&it, &k, NULL)) {
        static const char *const known[] = { "qom-type", "id", "data",
                                             "file", "format", NULL };
        if (!g_strv_contains(known, k))
            return fail(errp, "--object secret: property '%s' is not "
                              "supported%s", (const char *)k,
                        !strcmp(k, "keyid") || !strcmp(k, "iv")
                            ? " (encrypted secrets)" : "");
    }
    if (!id)
        return fail(errp, "Parameter 'id' is missing");
    if (data && file)
        return fail(errp, "'file' and 'data' are mutually exclusive");
    if (!data && !file)
        return fail(errp, "Either 'file' or 'data' must be provided");
    if (format && strcmp(format, "raw") && strcmp(format, "base64"))
        return fail(errp, "Parameter 'format' does not accept value '%s'",
                    format);
    if (g_hash_table_contains(secrets, id))
        return fail(errp, "attempt to add duplicate property '%s' to object "
                          "(type 'container')", id);
    if (file) {
        g_autoptr(GError) err = NULL;

        if (!g_file_get_contents(file, &contents, &len, &err))
            return fail(errp, "Unable to read %s: %s", file, err->message);
    } else {
        contents = g_strdup(data);
        len = strlen(data);
    }
    if (format && !strcmp(format, "base64")) {
        g_autofree guchar *raw = NULL;

        g_strstrip(contents);
        raw = g_base64_decode(contents, &len);
        g_free(contents);
        contents = (char *)g_steal_pointer(&raw);
    }
    g_hash_table_insert(secrets, g_strdup(id),
                        g_bytes_new_take(g_steal_pointer(&contents), len));
    return true;
}

/* A throttle group of the block layer (block/throttle.c), with QEMU's
 * properties (x-iops-total=..., limits.iops-total=...). */
static bool add_throttle_group(const char *spec, GHashTable *props,
                               GError **errp)
{
    g_autofree char *id = g_strdup(g_hash_table_lookup(props, "id"));
    g_autoptr(GError) err = NULL;

    g_hash_table_remove(props, "qom-type");
    g_hash_table_remove(props, "id");
    if (!throttle_group_create(id, props, &err))
        return fail(errp, "--object %s: %s", spec, err->message);
    return true;
}

bool objects_setup(char **specs, char ***tls_specs, GError **errp)
{
    g_autoptr(GPtrArray) tls = g_ptr_array_new_with_free_func(g_free);

    if (!secrets)
        secrets = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                        (GDestroyNotify)g_bytes_unref);
    *tls_specs = NULL;
    for (char **s = specs; s && *s; s++) {
        g_autoptr(GHashTable) props = NULL;
        const char *type;

        if (**s == '{') { /* tls.c says so for JSON */
            g_ptr_array_add(tls, g_strdup(*s));
            continue;
        }
        props = qemu_opts_parse(*s, "qom-type");
        type = g_hash_table_lookup(props, "qom-type");
        if (!type || !*type)
            return fail(errp, "--object '%s': the object type is missing",
                        *s);
        if (g_strv_contains(tls_types, type)) {
            g_ptr_array_add(tls, g_strdup(*s));
        } else if (!strcmp(type, "secret")) {
            if (!add_secret(props, errp))
                return false;
        } else if (!strcmp(type, "throttle-group")) {
            if (!add_throttle_group(*s, props, errp))
                return false;
        } else if (g_strv_contains(qemu_nbd_types, type)) {
            return fail(errp, "--object: type '%s' is not supported (only "
                              "secret, throttle-group, tls-creds-x509, "
                              "tls-creds-psk and authz-simple)", type);
        } else {
            return fail(errp, "Parameter 'qom-type' does not accept value "
                              "'%s'", type);
        }
    }
    g_ptr_array_add(tls, NULL);
    *tls_specs = (char **)g_ptr_array_free(g_steal_pointer(&tls), FALSE);
    return true;
}

GBytes *secret_lookup(const char *id, GError **errp)
{
    GBytes *b = secrets ? g_hash_table_lookup(secrets, id) : NULL;

    if (!b)
        fail(errp, "No secret with id '%s'", id);
    return b;
}

void objects_cleanup(void)
{
    g_clear_pointer(&secrets, g_hash_table_unref);
}
