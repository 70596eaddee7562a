/*
 * objects.c - the table of user-created objects (see objects.h).
 *
 * Secrets are kept for image encryption (encrypt.key-secret=ID), as
 * QEMU's "secret" object holds them: data= or file= (exactly one), in
 * format=raw (the default) or base64.  A secret encrypted with another one
 * (keyid=, iv=) is refused.  iothread objects are idle host threads
 * (iothread.c) whose CPU affinity the connections of a bound export take
 * (poll-* are reported by query-iothreads, the pool sizes accepted and not
 * used).  throttle-group objects go to the block layer
 * (block/throttle.c), TLS credentials and authz objects to tls.c.  Refused
 * are the types of QEMU's list that snapnbd does not make; an unknown type
 * gets QEMU's own message.
 *
 * Locking.  objects_lock guards the tables; object-add and object-del run
 * on the monitor's thread, lookups come from any thread (an image opened by
 * a job, a TLS handshake).  secret_lookup hands out bytes that its callers
 * borrow without a reference, so a deleted secret's bytes move to
 * retired_secrets and stay until exit.
 */
#include "objects.h"

#include "iothread.h"

#include "block/block.h"
#include "server/nbd/tls.h"

#include <stdarg.h>
#include <string.h>

static GMutex objects_lock;
static GHashTable *registry;       /* id -> type name, every object */
static GHashTable *secrets;        /* id -> GBytes */
static GPtrArray *retired_secrets; /* of GBytes: see the locking note */
static bool container_made;

/* QEMU 7.2's ObjectType enum: the types object-add knows at all. */
static const char *const qemu_types[] = {
    "authz-list", "authz-listfile", "authz-pam", "authz-simple",
    "can-bus", "can-host-socketcan", "colo-compare", "cryptodev-backend",
    "cryptodev-backend-builtin", "cryptodev-backend-lkcf",
    "cryptodev-vhost-user", "dbus-vmstate", "filter-buffer", "filter-dump",
    "filter-mirror", "filter-redirector", "filter-replay", "filter-rewriter",
    "input-barrier", "input-linux", "iothread", "main-loop",
    "memory-backend-epc", "memory-backend-file", "memory-backend-memfd",
    "memory-backend-ram", "pef-guest", "pr-manager-helper", "qtest",
    "rng-builtin", "rng-egd", "rng-random", "secret", "secret_keyring",
    "sev-guest", "thread-context", "s390-pv-guest", "throttle-group",
    "tls-creds-anon", "tls-creds-psk", "tls-creds-x509", "tls-cipher-suites",
    "x-remote-object", "x-vfio-user-server", NULL,
};
/* What `qemu-nbd --object help` lists (QEMU 7.2, Debian): its QOM names,
 * such as authz-list-file (QAPI's authz-listfile). */
static const char *const qemu_nbd_types[] = {
    "authz-list", "authz-list-file", "authz-simple", "iothread",
    "main-loop", "pr-manager-helper", "secret", "secret_keyring",
    "thread-context", "throttle-group", "tls-cipher-suites",
    "tls-creds-anon", "tls-creds-psk", "tls-creds-x509", NULL,
};
/* The types tls.c makes. */
static const char *const tls_types[] = {
    "tls-creds-x509", "tls-creds-psk", "authz-simple", "authz-list", NULL,
};
static const char *const own_types[] = {
    "secret", "iothread", "throttle-group", NULL,
};
/* What an iothread accepts (IOThread and EventLoopBase properties). */
static const char *const iothread_props[] = {
    "poll-max-ns", "poll-grow", "poll-shrink", "aio-max-batch",
    "thread-pool-min", "thread-pool-max", NULL,
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

static void tables_init(void)
{
    g_mutex_lock(&objects_lock);
    if (!registry) {
        registry = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                         g_free);
        secrets = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                        (GDestroyNotify)g_bytes_unref);
        retired_secrets = g_ptr_array_new_with_free_func(
            (GDestroyNotify)g_bytes_unref);
    }
    g_mutex_unlock(&objects_lock);
}

bool object_type_supported(const char *type)
{
    return g_strv_contains(tls_types, type) ||
           g_strv_contains(own_types, type);
}

/* QEMU adds the object to "/objects" once it is complete: a duplicate id
 * is noticed after the type's own checks. */
static bool check_duplicate(const char *id, GError **errp)
{
    bool dup;

    g_mutex_lock(&objects_lock);
    dup = g_hash_table_contains(registry, id);
    g_mutex_unlock(&objects_lock);
    return dup ? fail(errp, "attempt to add duplicate property '%s' to "
                            "object (type 'container')", id)
               : true;
}

/* Enters @id (and the bytes of a secret, which the table then owns)
 * unless the id is taken meanwhile: checked again under the lock, so
 * that two monitors could not both add it. */
static bool record(const char *id, const char *type, GBytes *secret,
                   GError **errp)
{
    bool dup;

    g_mutex_lock(&objects_lock);
    dup = g_hash_table_contains(registry, id);
    if (!dup) {
        g_hash_table_insert(registry, g_strdup(id), g_strdup(type));
        if (secret)
            g_hash_table_insert(secrets, g_strdup(id), secret);
        container_made = true;
    }
    g_mutex_unlock(&objects_lock);
    if (dup && secret)
        g_bytes_unref(secret);
    return dup ? fail(errp, "attempt to add duplicate property '%s' to "
                            "object (type 'container')", id)
               : true;
}

/* The bytes of a secret from its properties (id and qom-type apart). */
static GBytes *make_secret(GHashTable *props, GError **errp)
{
    const char *data = g_hash_table_lookup(props, "data");
    const char *file = g_hash_table_lookup(props, "file");
    const char *format = g_hash_table_lookup(props, "format");
    g_autofree char *contents = NULL;
    gsize len;
    GHashTableIter it;
    gpointer k;

    g_hash_table_iter_init(&it, props);
    while (g_hash_table_iter_next(&it, &k, NULL)) {
        static const char *const known[] = { "data", "file", "format", NULL };
        if (!g_strv_contains(known, k)) {
            fail(errp, "secret: property '%s' is not supported%s",
                 (const char *)k,
                 !strcmp(k, "keyid") || !strcmp(k, "iv")
                     ? " (encrypted secrets)" : "");
            return NULL;
        }
    }
    if (data && file) {
        fail(errp, "'file' and 'data' are mutually exclusive");
        return NULL;
    }
    if (!data && !file) {
        fail(errp, "Either 'file' or 'data' must be provided");
        return NULL;
    }
    if (format && strcmp(format, "raw") && strcmp(format, "base64")) {
        fail(errp, "Parameter 'format' does not accept value '%s'", format);
        return NULL;
    }
    if (file) {
        g_autoptr(GError) err = NULL;

        if (!g_file_get_contents(file, &contents, &len, &err)) {
            fail(errp, "Unable to read %s: %s", file, err->message);
            return NULL;
        }
    } else {
        contents = g_strdup(data);
        len = strlen(data);
    }
    if (format && !strcmp(format, "base64")) {
        static const char valid[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                    "abcdefghijklmnopqrstuvwxyz0123456789+/=\n";
        g_autofree guchar *raw = NULL;

        /* QEMU's checks and words (qbase64_decode) */
        if (memchr(contents, '\0', len)) {
            fail(errp, "Base64 data contains embedded NUL characters");
            return NULL;
        }
        if (strspn(contents, valid) != len) {
            fail(errp, "Base64 data contains invalid characters");
            return NULL;
        }
        g_strstrip(contents);
        raw = g_base64_decode(contents, &len);
        g_free(contents);
        contents = (char *)g_steal_pointer(&raw);
    }
    return g_bytes_new_take(g_steal_pointer(&contents), len);
}

static bool check_iothread(GHashTable *props, GError **errp)
{
    GHashTableIter it;
    gpointer k;

    g_hash_table_iter_init(&it, props);
    while (g_hash_table_iter_next(&it, &k, NULL)) {
        if (!g_strv_contains(iothread_props, k))
            return fail(errp, "Parameter '%s' is unexpected",
                        (const char *)k);
    }
    return true;
}

bool object_create(const char *type, const char *id, GHashTable *props,
                   GError **errp)
{
    g_autoptr(GError) err = NULL;
    GBytes *secret = NULL;
    TlsObject *tls = NULL;

    tables_init();
    /* QAPI's enum check comes first, the id's form once it is parsed */
    if (!g_strv_contains(qemu_types, type))
        return fail(errp, "Parameter 'qom-type' does not accept value '%s'",
                    type);
    if (!bdrv_id_wellformed(id))
        return fail(errp, "Parameter 'id' expects an identifier");
    if (!object_type_supported(type))
        return fail(errp, "snapnbd does not make '%s' objects (only "
                          "secret, iothread, throttle-group, tls-creds-x509, "
                          "tls-creds-psk, authz-simple and authz-list)",
                    type);
    if (!strcmp(type, "throttle-group")) {
        if (!check_duplicate(id, errp))
            return false;
        if (!throttle_group_create(id, props, &err))
            return fail(errp, "%s", err->message);
    } else if (!strcmp(type, "secret")) {
        secret = make_secret(props, errp);
        if (!secret)
            return false;
    } else if (!strcmp(type, "iothread")) {
        if (!check_iothread(props, errp) || !check_duplicate(id, errp) ||
            !iothread_start(id, props, errp))
            return false;
    } else {
        tls = tls_object_new(type, id, props, errp);
        if (!tls)
            return false;
    }
    if (!record(id, type, secret, errp)) {
        tls_object_free(tls);
        if (!strcmp(type, "throttle-group"))
            throttle_group_delete(id, NULL);
        if (!strcmp(type, "iothread"))
            iothread_stop(id);
        return false;
    }
    if (tls)
        tls_object_insert(tls);
    return true;
}

bool object_delete(const char *id, GError **errp)
{
    g_autofree char *type = NULL;
    g_autoptr(GError) err = NULL;
    GBytes *secret;
    gpointer key;

    tables_init();
    g_mutex_lock(&objects_lock);
    type = g_strdup(g_hash_table_lookup(registry, id));
    g_mutex_unlock(&objects_lock);
    if (!type)
        return fail(errp, "object '%s' not found", id);
    /* QEMU's only refusal among these types: a group with members */
    if (!strcmp(type, "throttle-group") && !throttle_group_delete(id, &err))
        return fail(errp, "%s", err->message);
    if (g_strv_contains(tls_types, type))
        tls_object_delete(id);
    if (!strcmp(type, "iothread"))
        iothread_stop(id);
    g_mutex_lock(&objects_lock);
    g_hash_table_remove(registry, id);
    if (g_hash_table_steal_extended(secrets, id, &key, (gpointer *)&secret)) {
        g_free(key);
        g_ptr_array_add(retired_secrets, secret);
    }
    g_mutex_unlock(&objects_lock);
    return true;
}

bool object_type_refused(const char *type, GError **errp)
{
    if (object_type_supported(type) ||
        (!g_strv_contains(qemu_types, type) &&
         !g_strv_contains(qemu_nbd_types, type)))
        return false;
    fail(errp, "type '%s' is not supported (only secret, iothread, "
               "throttle-group, tls-creds-x509, tls-creds-psk, authz-simple "
               "and authz-list)", type);
    return true;
}

void objects_foreach(void (*fn)(const char *id, const char *type,
                                void *opaque),
                     void *opaque)
{
    GHashTableIter it;
    gpointer id, type;

    tables_init();
    g_mutex_lock(&objects_lock);
    g_hash_table_iter_init(&it, registry);
    while (g_hash_table_iter_next(&it, &id, &type))
        fn(id, type, opaque);
    g_mutex_unlock(&objects_lock);
}

bool objects_container_exists(void)
{
    bool made;

    g_mutex_lock(&objects_lock);
    made = container_made;
    g_mutex_unlock(&objects_lock);
    return made;
}

bool iothread_exists(const char *id)
{
    bool found;

    tables_init();
    g_mutex_lock(&objects_lock);
    found = !g_strcmp0(g_hash_table_lookup(registry, id), "iothread");
    g_mutex_unlock(&objects_lock);
    return found;
}

GBytes *secret_lookup(const char *id, GError **errp)
{
    GBytes *b;

    tables_init();
    g_mutex_lock(&objects_lock);
    b = g_hash_table_lookup(secrets, id);
    g_mutex_unlock(&objects_lock);
    if (!b)
        fail(errp, "No secret with id '%s'", id);
    return b;
}

void objects_cleanup(void)
{
    iothread_stop_all();
    g_mutex_lock(&objects_lock);
    g_clear_pointer(&registry, g_hash_table_unref);
    g_clear_pointer(&secrets, g_hash_table_unref);
    g_clear_pointer(&retired_secrets, g_ptr_array_unref);
    g_mutex_unlock(&objects_lock);
}
