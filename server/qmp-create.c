/*
 * qmp-create.c - blockdev-create, as QEMU has it: a "create" job that makes
 * a file (driver "file") or writes a new qcow2 image over a node that
 * blockdev-add opened (drivers "qcow2" and "luks", "file" naming the
 * node).  The job is
 * not dismissed automatically: clients wait for "concluded", read its
 * error in query-jobs, and job-dismiss it.
 */
#include "qmp-int.h"

#include "jobs/create.h"

#include <string.h>

static void put(GHashTable *t, const char *k, const char *v)
{
    g_hash_table_insert(t, g_strdup(k), g_strdup(v));
}

/* An optional boolean member as the block layer's "on"/"off". */
static bool take_bool(JsonObject *o, const char *key, const char *opt,
                      GHashTable *t, GError **errp)
{
    bool v;

    if (!json_object_has_member(o, key))
        return true;
    if (!qmp_arg_bool(o, key, false, &v, errp))
        return false;
    put(t, opt, v ? "on" : "off");
    return true;
}

static bool take_int(JsonObject *o, const char *key, const char *opt,
                     GHashTable *t, GError **errp)
{
    int64_t v;
    g_autofree char *s = NULL;

    if (!json_object_has_member(o, key))
        return true;
    if (!qmp_arg_int(o, key, 0, &v, errp))
        return false;
    if (v < 0) {
        qmp_error(errp, "Parameter '%s' expects a non-negative value", key);
        return false;
    }
    s = g_strdup_printf("%" G_GINT64_FORMAT, v);
    put(t, opt, s);
    return true;
}

static bool take_str(JsonObject *o, const char *key, const char *opt,
                     GHashTable *t, GError **errp)
{
    const char *v;

    if (!json_object_has_member(o, key))
        return true;
    v = qmp_arg_str(o, key, true, errp);
    if (v)
        put(t, opt, v);
    return v != NULL;
}

/* BlockdevCreateOptionsFile. */
static bool parse_file(JsonObject *o, CreateJobSpec *spec, GError **errp)
{
    static const char *const modes[] = { "off", "falloc", NULL };

    spec->filename = qmp_arg_str(o, "filename", true, errp);
    return spec->filename &&
           qmp_check_enum("preallocation",
                          json_object_get_string_member_with_default(
                              o, "preallocation", NULL),
                          modes, errp) &&
           take_str(o, "preallocation", "preallocation", spec->options,
                    errp) &&
           take_bool(o, "nocow", "nocow", spec->options, errp);
}

/* QCryptoBlockCreateOptions (format luks) as "encrypt.*" options. */
static bool take_encrypt(JsonObject *o, GHashTable *t, GError **errp)
{
    JsonNode *n = json_object_get_member(o, "encrypt");
    JsonObject *e;

    if (!n)
        return true;
    if (!JSON_NODE_HOLDS_OBJECT(n)) {
        qmp_error(errp, "Invalid parameter type for 'encrypt', expected: "
                        "object");
        return false;
    }
    e = json_node_get_object(n);
    return take_str(e, "format", "encrypt.format", t, errp) &&
           take_str(e, "key-secret", "encrypt.key-secret", t, errp) &&
           take_str(e, "cipher-alg", "encrypt.cipher-alg", t, errp) &&
           take_str(e, "cipher-mode", "encrypt.cipher-mode", t, errp) &&
           take_str(e, "ivgen-alg", "encrypt.ivgen-alg", t, errp) &&
           take_str(e, "hash-alg", "encrypt.hash-alg", t, errp) &&
           take_int(e, "iter-time", "encrypt.iter-time", t, errp);
}

/* BlockdevCreateOptionsQcow2 (the parts snapnbd implements). */
static bool parse_qcow2(JsonObject *o, CreateJobSpec *spec, GError **errp)
{
    static const char *const versions[] = { "v2", "v3", NULL };
    const char *file = qmp_arg_str(o, "file", true, errp);
    const char *version;

    if (!file)
        return false;
    spec->file = bdrv_find_node(file);
    if (!spec->file) {
        qmp_error(errp, "Cannot find device='%s' nor node-name='%s'", file,
                  file);
        return false;
    }
    version = json_object_get_string_member_with_default(o, "version", NULL);
    if (!qmp_check_enum("version", version, versions, errp))
        return false;
    if (version)
        put(spec->options, "compat", strcmp(version, "v2") ? "1.1" : "0.10");
    return take_int(o, "cluster-size", "cluster_size", spec->options, errp) &&
           take_int(o, "refcount-bits", "refcount_bits", spec->options,
                    errp) &&
           take_bool(o, "lazy-refcounts", "lazy_refcounts", spec->options,
                     errp) &&
           take_str(o, "backing-file", "backing_file", spec->options, errp) &&
           take_str(o, "backing-fmt", "backing_fmt", spec->options, errp) &&
           take_str(o, "preallocation", "preallocation", spec->options,
                    errp) &&
           take_encrypt(o, spec->options, errp);
}

/* BlockdevCreateOptionsLUKS: a LUKS image over a node (block/luks.c). */
static bool parse_luks(JsonObject *o, CreateJobSpec *spec, GError **errp)
{
    const char *file = qmp_arg_str(o, "file", true, errp);

    if (!file)
        return false;
    spec->file = bdrv_find_node(file);
    if (!spec->file) {
        qmp_error(errp, "Cannot find device='%s' nor node-name='%s'", file,
                  file);
        return false;
    }
    return take_str(o, "key-secret", "key-secret", spec->options, errp) &&
           take_str(o, "cipher-alg", "cipher-alg", spec->options, errp) &&
           take_str(o, "cipher-mode", "cipher-mode", spec->options, errp) &&
           take_str(o, "ivgen-alg", "ivgen-alg", spec->options, errp) &&
           take_str(o, "hash-alg", "hash-alg", spec->options, errp) &&
           take_int(o, "iter-time", "iter-time", spec->options, errp);
}

/* BlockdevCreateOptionsRbd: "location" (BlockdevOptionsRbd) names the
 * image, "cluster-size" its object size (block/rbd.c). */
static bool parse_rbd(JsonObject *o, CreateJobSpec *spec, GError **errp)
{
    static const char *const keys[] = { "pool", "namespace", "image", "conf",
                                        "snapshot", "user", "key-secret" };
    JsonNode *n = json_object_get_member(o, "location");
    JsonObject *loc;

    if (!n || !JSON_NODE_HOLDS_OBJECT(n)) {
        qmp_error(errp, n ? "Invalid parameter type for 'location', "
                            "expected: object"
                          : "Parameter 'location' is missing");
        return false;
    }
    loc = json_node_get_object(n);
    for (size_t i = 0; i < G_N_ELEMENTS(keys); i++) {
        g_autofree char *opt = g_strconcat("location.", keys[i], NULL);
        if (!take_str(loc, keys[i], opt, spec->options, errp))
            return false;
    }
    if (json_object_has_member(o, "encrypt")) {
        qmp_error(errp, "rbd encryption is not supported");
        return false;
    }
    spec->filename = "rbd"; /* the image is named by the location */
    return take_int(o, "cluster-size", "cluster-size", spec->options, errp);
}

static bool parse_options(JsonObject *args, CreateJobSpec *spec,
                          GError **errp)
{
    JsonNode *n = json_object_get_member(args, "options");
    JsonObject *o;
    int64_t size;

    if (!n || !JSON_NODE_HOLDS_OBJECT(n)) {
        qmp_error(errp, n ? "Invalid parameter type for 'options', "
                            "expected: object"
                          : "Parameter 'options' is missing");
        return false;
    }
    o = json_node_get_object(n);
    spec->driver = qmp_arg_str(o, "driver", true, errp);
    if (!spec->driver || !qmp_arg_int(o, "size", -1, &size, errp))
        return false;
    if (size < 0) {
        qmp_error(errp, "Parameter 'size' is missing");
        return false;
    }
    spec->size = size;
    if (!strcmp(spec->driver, "file"))
        return parse_file(o, spec, errp);
    if (!strcmp(spec->driver, "qcow2"))
        return parse_qcow2(o, spec, errp);
    if (!strcmp(spec->driver, "luks"))
        return parse_luks(o, spec, errp);
    if (!strcmp(spec->driver, "rbd") && bdrv_has_driver("rbd"))
        return parse_rbd(o, spec, errp);
    qmp_error(errp, "Driver '%s' does not support blockdev-create",
              spec->driver);
    return false;
}

static JsonNode *cmd_blockdev_create(JsonObject *args, GError **errp)
{
    CreateJobSpec spec = { .options = g_hash_table_new_full(
                               g_str_hash, g_str_equal, g_free, g_free) };
    const char *id = qmp_arg_str(args, "job-id", true, errp);
    GError *err = NULL;
    Job *job = NULL;

    if (id && parse_options(args, &spec, errp)) {
        job = create_job_create(id, &spec, &err);
        if (!job) {
            qmp_error(errp, "%s", err->message);
            g_error_free(err);
        }
    }
    g_hash_table_unref(spec.options);
    if (job)
        job_start(job);
    return NULL;
}

void qmp_register_create_commands(void)
{
    qmp_register_command_args("blockdev-create", cmd_blockdev_create,
                              "job-id,options");
}
