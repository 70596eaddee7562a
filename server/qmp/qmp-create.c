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
#include "server/qmp/qmp-types-gen.h"

#include <string.h>

static void put(GHashTable *t, const char *k, const char *v)
{
    g_hash_table_insert(t, g_strdup(k), g_strdup(v));
}

/* An optional boolean member as the block layer's "on"/"off". */
static void take_bool(bool has, bool v, const char *opt, GHashTable *t)
{
    if (has)
        put(t, opt, v ? "on" : "off");
}

/* An optional integer member (@key in messages); negative numbers, which
 * the schema lets through for its unsigned 'size' as QEMU does, are
 * refused. */
static bool take_int(bool has, int64_t v, const char *key, const char *opt,
                     GHashTable *t, GError **errp)
{
    g_autofree char *s = NULL;

    if (!has)
        return true;
    if (v < 0) {
        qmp_error(errp, "Parameter '%s' expects a non-negative value", key);
        return false;
    }
    s = g_strdup_printf("%" G_GINT64_FORMAT, v);
    put(t, opt, s);
    return true;
}

static void take_str(const char *v, const char *opt, GHashTable *t)
{
    if (v)
        put(t, opt, v);
}

/* An optional enum member by its name (@names: the enum's *_str table). */
static void take_enum(bool has, int v, const char *const *names,
                      const char *opt, GHashTable *t)
{
    if (has)
        put(t, opt, names[v]);
}

/* The node a BlockdevRef names: snapnbd takes only a reference here. */
static BlockNode *ref_node(const QmpBlockdevRef *ref, GError **errp)
{
    BlockNode *bs;

    if (ref->kind != QMP_BLOCKDEV_REF_KIND_REFERENCE) {
        qmp_error(errp, "Invalid parameter type for 'file', expected: "
                        "string");
        return NULL;
    }
    bs = qmp_find_node(ref->u.reference);
    if (!bs)
        qmp_error(errp, "Cannot find device='%s' nor node-name='%s'",
                  ref->u.reference, ref->u.reference);
    return bs;
}

/* BlockdevCreateOptionsFile. */
static bool parse_file(const QmpBlockdevCreateOptionsFile *o,
                       CreateJobSpec *spec, GError **errp)
{
    const char *prealloc = qmp_prealloc_mode_str[o->preallocation];

    spec->filename = o->filename;
    if (o->has_preallocation) {
        if (o->preallocation != QMP_PREALLOC_MODE_OFF &&
            o->preallocation != QMP_PREALLOC_MODE_FALLOC) {
            qmp_error(errp, "Parameter 'preallocation' does not accept "
                      "value '%s'", prealloc);
            return false;
        }
        put(spec->options, "preallocation", prealloc);
    }
    take_bool(o->has_nocow, o->nocow, "nocow", spec->options);
    return true;
}

/* The LUKS parameters (QCryptoBlockCreateOptionsLUKS's members), under
 * @prefix ("encrypt." in a qcow2 image). */
#define TAKE_LUKS(o, prefix, t, errp)                                        \
    (take_str((o)->key_secret, prefix "key-secret", (t)),                    \
     take_enum((o)->has_cipher_alg, (o)->cipher_alg,                         \
               qmp_q_crypto_cipher_algorithm_str, prefix "cipher-alg", (t)), \
     take_enum((o)->has_cipher_mode, (o)->cipher_mode,                       \
               qmp_q_crypto_cipher_mode_str, prefix "cipher-mode", (t)),     \
     take_enum((o)->has_ivgen_alg, (o)->ivgen_alg,                           \
               qmp_q_crypto_iv_gen_algorithm_str, prefix "ivgen-alg", (t)),  \
     take_enum((o)->has_hash_alg, (o)->hash_alg,                             \
               qmp_q_crypto_hash_algorithm_str, prefix "hash-alg", (t)),     \
     take_int((o)->has_iter_time, (o)->iter_time, "iter-time",               \
              prefix "iter-time", (t), (errp)))

/* QCryptoBlockCreateOptions as "encrypt.*" options. */
static bool take_encrypt(const QmpQCryptoBlockCreateOptions *e, GHashTable *t,
                         GError **errp)
{
    put(t, "encrypt.format", qmp_q_crypto_block_format_str[e->format]);
    if (e->u.qcow)
        take_str(e->u.qcow->key_secret, "encrypt.key-secret", t);
    return !e->u.luks || TAKE_LUKS(e->u.luks, "encrypt.", t, errp);
}

/* BlockdevCreateOptionsQcow2 (the parts snapnbd implements). */
static bool parse_qcow2(const QmpBlockdevCreateOptionsQcow2 *o,
                        CreateJobSpec *spec, GError **errp)
{
    GHashTable *t = spec->options;

    if (!(spec->file = ref_node(o->file, errp)))
        return false;
    if (o->has_version)
        put(t, "compat",
            o->version == QMP_BLOCKDEV_QCOW2_VERSION_V2 ? "0.10" : "1.1");
    if (!take_int(o->has_cluster_size, (int64_t)o->cluster_size,
                  "cluster-size", "cluster_size", t, errp) ||
        !take_int(o->has_refcount_bits, o->refcount_bits, "refcount-bits",
                  "refcount_bits", t, errp))
        return false;
    take_bool(o->has_lazy_refcounts, o->lazy_refcounts, "lazy_refcounts", t);
    take_str(o->backing_file, "backing_file", t);
    take_enum(o->has_backing_fmt, o->backing_fmt, qmp_blockdev_driver_str,
              "backing_fmt", t);
    take_enum(o->has_preallocation, o->preallocation, qmp_prealloc_mode_str,
              "preallocation", t);
    return !o->encrypt || take_encrypt(o->encrypt, t, errp);
}

/* BlockdevCreateOptionsLUKS: a LUKS image over a node (block/luks.c). */
static bool parse_luks(const QmpBlockdevCreateOptionsLUKS *o,
                       CreateJobSpec *spec, GError **errp)
{
    if (!(spec->file = ref_node(o->file, errp)))
        return false;
    return TAKE_LUKS(o, "", spec->options, errp);
}

/* BlockdevCreateOptionsRbd: "location" (BlockdevOptionsRbd) names the
 * image, "cluster-size" its object size (block/rbd.c). */
static bool parse_rbd(const QmpBlockdevCreateOptionsRbd *o,
                      CreateJobSpec *spec, GError **errp)
{
    const QmpBlockdevOptionsRbd *loc = o->location;
    GHashTable *t = spec->options;

    take_str(loc->pool, "location.pool", t);
    take_str(loc->namespace, "location.namespace", t);
    take_str(loc->image, "location.image", t);
    take_str(loc->conf, "location.conf", t);
    take_str(loc->snapshot, "location.snapshot", t);
    take_str(loc->user, "location.user", t);
    take_str(loc->key_secret, "location.key-secret", t);
    if (o->has_encrypt) {
        qmp_error(errp, "rbd encryption is not supported");
        return false;
    }
    spec->filename = "rbd"; /* the image is named by the location */
    return take_int(o->has_cluster_size, (int64_t)o->cluster_size,
                    "cluster-size", "cluster-size", t, errp);
}

/* The size every branch has; a negative one (taken by the schema's 'size'
 * as QEMU takes it) counts as none. */
static bool take_size(uint64_t size, CreateJobSpec *spec, GError **errp)
{
    if ((int64_t)size < 0) {
        qmp_error(errp, "Parameter 'size' is missing");
        return false;
    }
    spec->size = (int64_t)size;
    return true;
}

static bool parse_options(const QmpBlockdevCreateOptions *o,
                          CreateJobSpec *spec, GError **errp)
{
    spec->driver = qmp_blockdev_driver_str[o->driver];
    if (o->u.file)
        return take_size(o->u.file->size, spec, errp) &&
               parse_file(o->u.file, spec, errp);
    if (o->u.qcow2)
        return take_size(o->u.qcow2->size, spec, errp) &&
               parse_qcow2(o->u.qcow2, spec, errp);
    if (o->u.luks)
        return take_size(o->u.luks->size, spec, errp) &&
               parse_luks(o->u.luks, spec, errp);
    if (o->u.rbd && bdrv_has_driver("rbd"))
        return take_size(o->u.rbd->size, spec, errp) &&
               parse_rbd(o->u.rbd, spec, errp);
    qmp_error(errp, "Driver '%s' does not support blockdev-create",
              spec->driver);
    return false;
}

static JsonNode *cmd_blockdev_create(const QmpBlockdevCreateArgs *a,
                                     GError **errp)
{
    CreateJobSpec spec = { .options = g_hash_table_new_full(
                               g_str_hash, g_str_equal, g_free, g_free) };
    GError *err = NULL;
    Job *job = NULL;

    if (parse_options(a->options, &spec, errp)) {
        job = create_job_create(a->job_id, &spec, &err);
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
    qmp_register_typed_blockdev_create(cmd_blockdev_create);
}
