/*
 * qcow2-create.c - creating qcow2 images.
 *
 * Design notes.
 *
 * The new image is laid out as qemu-img lays it out: the header cluster
 * (header, extensions, backing file name), then the refcount table, the
 * refcount blocks that describe the metadata, and the L1 table.  Sizes are
 * solved together (more metadata may need more refcount blocks, which may
 * need a bigger table), so any cluster size and refcount width works.
 *
 * preallocation=metadata reopens the new image with the driver itself and
 * maps every guest cluster through the write path's allocator, so there is
 * one piece of code that allocates clusters, not two.
 */
#include "qcow2.h"
#include "luks.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>

typedef struct CreateOpts {
    uint64_t size;
    uint32_t cluster_bits;
    uint32_t version;
    int refcount_order;
    bool lazy_refcounts;
    bool prealloc_metadata;
    char *backing_file;
    char *backing_fmt;
    char *nocow;
    GHashTable *encrypt;   /* encrypt.* without the prefix, or NULL */
} CreateOpts;

static void create_opts_clear(CreateOpts *o)
{
    g_free(o->backing_file);
    g_free(o->backing_fmt);
    g_free(o->nocow);
    g_clear_pointer(&o->encrypt, g_hash_table_unref);
}

static bool parse_version(CreateOpts *o, const char *compat, GError **errp)
{
    if (!compat || !strcmp(compat, "1.1") || !strcmp(compat, "v3"))
        o->version = 3;
    else if (!strcmp(compat, "0.10") || !strcmp(compat, "v2"))
        o->version = 2;
    else {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Invalid compatibility level: '%s' (0.10 or 1.1)",
                    compat);
        return false;
    }
    return true;
}

static bool parse_power_of_two(const char *what, uint64_t v, uint64_t min,
                               uint64_t max, GError **errp)
{
    if (v < min || v > max || (v & (v - 1))) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "%s must be a power of two between %" PRIu64 " and %"
                    PRIu64, what, min, max);
        return false;
    }
    return true;
}

/* encrypt.format=luks and the LUKS options (block/luks.c takes them);
 * qemu-img also spells the format "encryption" and "encrypt.format". */
static bool parse_encrypt(GHashTable *options, CreateOpts *o, GError **errp)
{
    g_autoptr(GHashTable) enc = opt_take_prefix(options, "encrypt");
    g_autofree char *fmt = opt_take(enc, "format");

    if (!fmt && g_hash_table_size(enc) == 0)
        return true;
    if (g_strcmp0(fmt, "luks") != 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "encrypt.format=%s is not supported (only luks)",
                    fmt ? fmt : "(none)");
        return false;
    }
    o->encrypt = g_steal_pointer(&enc);
    return true;
}

static bool parse_create_opts(GHashTable *options, uint64_t size,
                              CreateOpts *o, GError **errp)
{
    g_autofree char *compat = opt_take(options, "compat");
    g_autofree char *prealloc = opt_take(options, "preallocation");
    uint64_t cluster_size = 65536, refcount_bits = 16;
    GError *err = NULL;

    o->size = size;
    o->backing_file = opt_take(options, "backing_file");
    o->backing_fmt = opt_take(options, "backing_fmt");
    o->nocow = opt_take(options, "nocow");
    if (!parse_encrypt(options, o, errp))
        return false;
    o->lazy_refcounts = opt_take_bool(options, "lazy_refcounts", false, &err);
    if (err || !opt_take_size(options, "cluster_size", &cluster_size, &err) ||
        !opt_take_size(options, "refcount_bits", &refcount_bits, &err)) {
        g_propagate_error(errp, err);
        return false;
    }
    if (!parse_version(o, compat, errp) ||
        !parse_power_of_two("Cluster size", cluster_size, 512, 2 << 20,
                            errp) ||
        !parse_power_of_two("Refcount width", refcount_bits, 1, 64, errp))
        return false;
    o->cluster_bits = __builtin_ctzll(cluster_size);
    o->refcount_order = __builtin_ctzll(refcount_bits);
    if (size % 512) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Image size must be a multiple of 512 bytes");
        return false;
    }
    if (o->version == 2 && (o->lazy_refcounts || refcount_bits != 16)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "%s requires compat=1.1 or later",
                    o->lazy_refcounts ? "Lazy refcounts"
                                      : "Different refcount widths than 16 "
                                        "bits");
        return false;
    }
    if (prealloc && strcmp(prealloc, "off") && strcmp(prealloc, "metadata")) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Unsupported preallocation mode '%s' (off or metadata)",
                    prealloc);
        return false;
    }
    o->prealloc_metadata = prealloc && !strcmp(prealloc, "metadata");
    if (o->prealloc_metadata && o->encrypt) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "preallocation=metadata with encryption is not "
                    "supported yet");
        return false;
    }
    if (g_hash_table_size(options) > 0) {
        GList *keys = g_hash_table_get_keys(options);
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Invalid option '%s' for creating a qcow2 image",
                    (const char *)keys->data);
        g_list_free(keys);
        return false;
    }
    return true;
}

/* --- layout -------------------------------------------------------------- */

typedef struct Layout {
    uint64_t cluster_size;
    uint64_t l1_entries;
    uint64_t table_clusters, refblocks, l1_clusters;
    uint64_t crypto_bytes, crypto_clusters; /* the LUKS header, after L1 */
    uint64_t meta_clusters; /* header + table + refblocks + L1 + LUKS */
} Layout;

static Layout plan_layout(const CreateOpts *o)
{
    Layout l = { .cluster_size = 1ULL << o->cluster_bits };
    uint64_t per_l2 = l.cluster_size / 8 * l.cluster_size;
    uint64_t per_refblock = (l.cluster_size * 8) >> o->refcount_order;
    uint64_t prev;

    l.l1_entries = (o->size + per_l2 - 1) / per_l2;
    l.l1_clusters = MAX(1, (l.l1_entries * 8 + l.cluster_size - 1) /
                               l.cluster_size);
    if (o->encrypt) {
        l.crypto_bytes = luks_header_bytes(o->encrypt);
        l.crypto_clusters = (l.crypto_bytes + l.cluster_size - 1) /
                            l.cluster_size;
    }
    l.table_clusters = l.refblocks = 1;
    do {
        prev = l.refblocks + l.table_clusters;
        l.meta_clusters = 1 + l.table_clusters + l.refblocks + l.l1_clusters +
                          l.crypto_clusters;
        l.refblocks = (l.meta_clusters + per_refblock - 1) / per_refblock;
        l.table_clusters = (l.refblocks * 8 + l.cluster_size - 1) /
                           l.cluster_size;
    } while (l.refblocks + l.table_clusters != prev);
    l.meta_clusters = 1 + l.table_clusters + l.refblocks + l.l1_clusters +
                      l.crypto_clusters;
    return l;
}

static uint64_t crypto_offset(const Layout *l)
{
    return (1 + l->table_clusters + l->refblocks + l->l1_clusters) *
           l->cluster_size;
}

/* Appends a header extension (type, length, data padded to 8 bytes). */
static void put_extension(GByteArray *b, uint32_t type, const void *data,
                          uint32_t len)
{
    uint32_t be[2] = { GUINT32_TO_BE(type), GUINT32_TO_BE(len) };
    static const uint8_t pad[8];

    g_byte_array_append(b, (const uint8_t *)be, sizeof(be));
    g_byte_array_append(b, data, len);
    g_byte_array_append(b, pad, ROUND_UP(len, 8) - len);
}

static bool build_header(const CreateOpts *o, const Layout *l, uint8_t *buf,
                         GError **errp)
{
    uint32_t hlen = o->version == 3 ? QCOW2_V3_HEADER_LENGTH
                                    : QCOW2_V2_HEADER_LENGTH;
    g_autoptr(GByteArray) ext = g_byte_array_new();
    size_t name_len = o->backing_file ? strlen(o->backing_file) : 0;
    Qcow2Header h = {
        .magic = GUINT32_TO_BE(QCOW2_MAGIC),
        .version = GUINT32_TO_BE(o->version),
        .cluster_bits = GUINT32_TO_BE(o->cluster_bits),
        .size = GUINT64_TO_BE(o->size),
        .l1_size = GUINT32_TO_BE(l->l1_entries),
        .l1_table_offset = GUINT64_TO_BE((1 + l->table_clusters +
                                          l->refblocks) * l->cluster_size),
        .refcount_table_offset = GUINT64_TO_BE(l->cluster_size),
        .refcount_table_clusters = GUINT32_TO_BE(l->table_clusters),
        .compatible_features = GUINT64_TO_BE(
            o->lazy_refcounts ? QCOW2_COMPAT_LAZY_REFCOUNTS : 0),
        .refcount_order = GUINT32_TO_BE(o->refcount_order),
        .header_length = GUINT32_TO_BE(hlen),
        .crypt_method = GUINT32_TO_BE(o->encrypt ? QCOW2_CRYPT_LUKS : 0),
    };

    if (o->backing_fmt)
        put_extension(ext, QCOW2_EXT_BACKING_FORMAT, o->backing_fmt,
                      strlen(o->backing_fmt));
    if (o->encrypt) {
        uint64_t where[2] = { GUINT64_TO_BE(crypto_offset(l)),
                              GUINT64_TO_BE(l->crypto_bytes) };
        put_extension(ext, QCOW2_EXT_CRYPTO_HEADER, where, sizeof(where));
    }
    put_extension(ext, QCOW2_EXT_END, NULL, 0);
    if (name_len > QCOW2_MAX_BACKING_NAME ||
        hlen + ext->len + name_len > l->cluster_size) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Backing file name too long for the header cluster");
        return false;
    }
    if (name_len) {
        h.backing_file_offset = GUINT64_TO_BE(hlen + ext->len);
        h.backing_file_size = GUINT32_TO_BE(name_len);
        memcpy(buf + hlen + ext->len, o->backing_file, name_len);
    }
    memcpy(buf, &h, hlen);
    memcpy(buf + hlen, ext->data, ext->len);
    return true;
}

/* The metadata clusters: header, refcount table, blocks, empty L1. */
static uint8_t *build_image(const CreateOpts *o, const Layout *l,
                            GError **errp)
{
    uint64_t cs = l->cluster_size;
    g_autofree uint8_t *img = g_try_malloc0(l->meta_clusters * cs);
    uint64_t *table = (uint64_t *)(img + cs);
    uint8_t *refblocks = img + (1 + l->table_clusters) * cs;
    uint64_t per_refblock = (cs * 8) >> o->refcount_order;
    int bits = 1 << o->refcount_order;

    if (!img) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "Could not allocate the new image's metadata (%" PRIu64
                    " bytes)", l->meta_clusters * cs);
        return NULL;
    }
    if (!build_header(o, l, img, errp))
        return NULL;
    for (uint64_t k = 0; k < l->refblocks; k++)
        table[k] = GUINT64_TO_BE((1 + l->table_clusters + k) * cs);
    /* Refcount 1 for every metadata cluster, in the entry width chosen. */
    for (uint64_t c = 0; c < l->meta_clusters; c++) {
        uint8_t *block = refblocks + (c / per_refblock) * cs;
        uint64_t bit = (c % per_refblock) * bits;
        if (bits >= 8)
            block[bit / 8 + bits / 8 - 1] = 1; /* big-endian low byte */
        else
            block[bit / 8] |= 1 << (bit % 8);
    }
    return g_steal_pointer(&img);
}

/* --- create ----------------------------------------------------------------
 */

/* The new image over @file, to map its clusters (preallocation). */
static BlockNode *open_new_image(BlockNode *file, GError **errp)
{
    g_autoptr(GHashTable) opts = opt_new();

    g_hash_table_insert(opts, g_strdup("driver"), g_strdup("qcow2"));
    g_hash_table_insert(opts, g_strdup("backing"), g_strdup(""));
    g_hash_table_insert(opts, g_strdup("file"),
                        g_strdup(bdrv_node_name(file)));
    return bdrv_open(opts, errp);
}

static int write_metadata(BlockNode *file, const uint8_t *img, uint64_t bytes,
                          GError **errp)
{
    int ret;

    bdrv_set_growable(file);
    ret = bdrv_pwrite(file, 0, bytes, img, 0);
    if (ret == 0)
        ret = bdrv_flush(file);
    if (ret < 0)
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "Could not write the new image '%s': %s",
                    bdrv_filename(file), g_strerror(-ret));
    return ret;
}

static int preallocate(BlockNode *file, GError **errp)
{
    BlockNode *bs = open_new_image(file, errp);
    int ret;

    if (!bs)
        return -EIO;
    ret = qcow2_preallocate_metadata(bs);
    if (ret == 0)
        ret = bdrv_flush(bs);
    bdrv_unref(bs);
    if (ret < 0)
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "Could not preallocate metadata in '%s': %s",
                    bdrv_filename(file), g_strerror(-ret));
    return ret;
}

/* Writes a new image of @o over @file (whatever it held). */
static int format(BlockNode *file, CreateOpts *o, GError **errp)
{
    g_autofree uint8_t *img = NULL;
    Layout l;
    int ret;

    if (o->backing_file && !o->backing_fmt) {
        g_autofree char *path = qcow2_resolve_backing(bdrv_filename(file),
                                                      o->backing_file);
        o->backing_fmt = g_strdup(bdrv_probe_format(path));
    }
    l = plan_layout(o);
    /* QEMU's limit, and its words: the L1 table is grown to the size. */
    if (l.l1_entries > QCOW2_MAX_L1_BYTES / sizeof(uint64_t)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Failed to grow the L1 table: %s", g_strerror(EFBIG));
        return -EFBIG;
    }
    img = build_image(o, &l, errp);
    if (!img)
        return -EINVAL;
    ret = write_metadata(file, img, l.meta_clusters * l.cluster_size, errp);
    if (ret == 0 && o->encrypt)
        ret = luks_write_header(file, crypto_offset(&l), o->encrypt, errp);
    if (ret == 0 && o->prealloc_metadata)
        ret = preallocate(file, errp);
    return ret;
}

int qcow2_format(BlockNode *file, uint64_t size, GHashTable *options,
                 GError **errp)
{
    CreateOpts o = { 0 };
    int ret = -EINVAL;

    if (bdrv_is_read_only(file)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_READ_ONLY,
                    "Cannot format read-only node '%s'",
                    bdrv_node_name(file));
        return -EPERM;
    }
    if (parse_create_opts(options, size, &o, errp) && !o.nocow)
        ret = format(file, &o, errp);
    else if (o.nocow)
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Invalid option 'nocow' for formatting a node (it "
                    "belongs to the file's creation)");
    create_opts_clear(&o);
    return ret;
}

int qcow2_create(const char *filename, uint64_t size, GHashTable *options,
                 GError **errp)
{
    CreateOpts o = { 0 };
    g_autoptr(GHashTable) file_opts = opt_new();
    BlockNode *file = NULL;
    int ret = -EINVAL;

    if (!parse_create_opts(options, size, &o, errp))
        goto out;
    if (o.nocow)
        g_hash_table_insert(file_opts, g_strdup("nocow"), g_strdup(o.nocow));
    ret = bdrv_create("file", filename, 0, file_opts, errp);
    if (ret < 0)
        goto out;
    g_hash_table_insert(file_opts, g_strdup("driver"), g_strdup("file"));
    g_hash_table_insert(file_opts, g_strdup("filename"), g_strdup(filename));
    g_hash_table_remove(file_opts, "nocow");
    file = bdrv_open(file_opts, errp);
    ret = file ? format(file, &o, errp) : -EIO;
    bdrv_unref(file);
out:
    create_opts_clear(&o);
    return ret;
}
