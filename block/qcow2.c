/*
 * qcow2.c - the "qcow2" format driver: header, backing chain, open/close,
 * read and block status.  Writes are in qcow2-write.c.
 *
 * Design notes.
 *
 * Open reads the first cluster of the file once and checks every header
 * field against it and the file length before anything is used: an image
 * is untrusted input, and a bad one must give a one-line error naming the
 * file and the problem, never a crash or a huge allocation.  The limits
 * are QEMU's (cluster size 512 B..2 MiB, active L1 table at most 32 MiB),
 * so whatever QEMU opens, snapnbd opens.
 *
 * Read-only opens never look at refcounts.  A writable open loads the
 * refcount table, refuses an image marked corrupt (as QEMU does), counts
 * the references and repairs the refcounts of one marked dirty (lazy
 * refcounts after a crash, as QEMU does) or whose refcounts miss a
 * reference (qcow2-repair.c), and clears the autoclear feature bits it does not
 * maintain, as the specification asks of such a writer.
 *
 * The backing file named in the header becomes the "backing" child, opened
 * read-only, with a path relative to the overlay's directory and the format
 * of the backing format extension (or probed: qcow2 magic, else raw).  Each
 * qcow2 open pushes its file's (device, inode) on a per-thread stack while
 * its backing opens, so a chain that comes back to one of its own files is
 * an error instead of endless recursion.  Explicit "backing" options
 * (QEMU's -blockdev keys; an empty value means none) override the header.
 *
 * Reads and block status walk the guest range with qcow2_map, one run of
 * alike clusters at a time.  Unallocated runs go to the backing (zeroes past
 * its end or without one); block status reports them with the backing's
 * flags minus BDRV_BLOCK_ALLOCATED, as QEMU's block layer does.
 */
#include "qcow2.h"
#include "luks.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Deep enough for any real chain; stops a pathological one before the
 * recursion exhausts the stack. */
#define QCOW2_MAX_CHAIN_DEPTH 1000

/* Default L2 cache: enough to map the whole disk, at most this much. */

/* What the header extensions said (only the parts that matter to us). */
typedef struct Qcow2Extensions {
    char *backing_format;     /* backing format name, or NULL */
    char *data_file;          /* external data file name, or NULL */
    GHashTable *feature_names; /* "type:bit" -> name, from the name table */
} Qcow2Extensions;

/* One image on the per-thread stack of chains being opened. */
typedef struct ChainLink {
    dev_t dev;
    ino_t ino;
    struct ChainLink *up;
} ChainLink;

static __thread ChainLink *chain_top;
static __thread int chain_depth;

void qcow2_bad_image(GError **errp, const char *file, const char *fmt, ...)
{
    g_autofree char *msg = NULL;
    va_list ap;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                "qcow2 image '%s': %s", file, msg);
}

/* --- header ----------------------------------------------------------- */

static void header_to_host(Qcow2Header *h)
{
    h->magic = GUINT32_FROM_BE(h->magic);
    h->version = GUINT32_FROM_BE(h->version);
    h->backing_file_offset = GUINT64_FROM_BE(h->backing_file_offset);
    h->backing_file_size = GUINT32_FROM_BE(h->backing_file_size);
    h->cluster_bits = GUINT32_FROM_BE(h->cluster_bits);
    h->size = GUINT64_FROM_BE(h->size);
    h->crypt_method = GUINT32_FROM_BE(h->crypt_method);
    h->l1_size = GUINT32_FROM_BE(h->l1_size);
    h->l1_table_offset = GUINT64_FROM_BE(h->l1_table_offset);
    h->refcount_table_offset = GUINT64_FROM_BE(h->refcount_table_offset);
    h->refcount_table_clusters = GUINT32_FROM_BE(h->refcount_table_clusters);
    h->nb_snapshots = GUINT32_FROM_BE(h->nb_snapshots);
    h->snapshots_offset = GUINT64_FROM_BE(h->snapshots_offset);
    h->incompatible_features = GUINT64_FROM_BE(h->incompatible_features);
    h->compatible_features = GUINT64_FROM_BE(h->compatible_features);
    h->autoclear_features = GUINT64_FROM_BE(h->autoclear_features);
    h->refcount_order = GUINT32_FROM_BE(h->refcount_order);
    h->header_length = GUINT32_FROM_BE(h->header_length);
}

/* The fixed header fields, from the first bytes of the file.  Version 2
 * stops at 72 bytes: what follows is already the extension area. */
static int read_fixed_header(BlockNode *bs, Qcow2Header *h, GError **errp)
{
    Qcow2State *s = bs->opaque;
    size_t len = MIN((uint64_t)s->file_length, sizeof(*h));
    int ret;

    memset(h, 0, sizeof(*h));
    if (s->file_length < QCOW2_V2_HEADER_LENGTH) {
        qcow2_bad_image(errp, bs->filename,
                        "the file is too short for a qcow2 "
                        "header (%" PRId64 " bytes)",
                        s->file_length);
        return -EINVAL;
    }
    ret = bdrv_pread(s->file, 0, len, h);
    if (ret < 0) {
        qcow2_bad_image(errp, bs->filename, "could not read the header: %s",
                        g_strerror(-ret));
        return ret;
    }
    header_to_host(h);
    if (h->magic != QCOW2_MAGIC) {
        qcow2_bad_image(errp, bs->filename, "not a qcow2 image (bad magic)");
        return -EINVAL;
    }
    if (h->version == 2) {
        memset((char *)h + QCOW2_V2_HEADER_LENGTH, 0,
               sizeof(*h) - QCOW2_V2_HEADER_LENGTH);
        h->refcount_order = 4;
        h->header_length = QCOW2_V2_HEADER_LENGTH;
    } else if (h->version != 3) {
        qcow2_bad_image(errp, bs->filename,
                        "unsupported qcow2 version %" PRIu32, h->version);
        return -ENOTSUP;
    } else if (s->file_length < QCOW2_V3_HEADER_LENGTH) {
        qcow2_bad_image(errp, bs->filename,
                        "the file is too short for a qcow2 "
                        "v3 header (%" PRId64 " bytes)",
                        s->file_length);
        return -EINVAL;
    }
    return 0;
}

static bool check_geometry(BlockNode *bs, const Qcow2Header *h,
                           GError **errp)
{
    uint64_t cluster_size;

    if (h->cluster_bits < QCOW2_MIN_CLUSTER_BITS ||
        h->cluster_bits > QCOW2_MAX_CLUSTER_BITS) {
        qcow2_bad_image(errp, bs->filename,
                        "unsupported cluster size: "
                        "cluster_bits %" PRIu32 " (must be 9 to 21)",
                        h->cluster_bits);
        return false;
    }
    cluster_size = 1ULL << h->cluster_bits;
    if (h->version == 3 && h->header_length < QCOW2_V3_HEADER_LENGTH) {
        qcow2_bad_image(errp, bs->filename,
                        "header length %" PRIu32 " is too "
                        "short (at least 104)",
                        h->header_length);
        return false;
    }
    if (h->header_length > cluster_size ||
        h->header_length > (uint64_t)((Qcow2State *)bs->opaque)->file_length) {
        qcow2_bad_image(errp, bs->filename,
                        "header length %" PRIu32 " exceeds "
                        "the cluster size or the file",
                        h->header_length);
        return false;
    }
    if (h->refcount_order > 6) {
        qcow2_bad_image(errp, bs->filename, "invalid refcount_order %" PRIu32,
                        h->refcount_order);
        return false;
    }
    if (h->size > BDRV_MAX_LENGTH) {
        qcow2_bad_image(errp, bs->filename,
                        "virtual size %" PRIu64 " is too "
                        "large",
                        h->size);
        return false;
    }
    if (h->crypt_method != 0 && h->crypt_method != QCOW2_CRYPT_LUKS) {
        qcow2_bad_image(errp, bs->filename,
                        "the image is encrypted (crypt_method "
                        "%" PRIu32
                        "); only LUKS-encrypted qcow2 images are supported",
                        h->crypt_method);
        return false;
    }
    return true;
}

/* --- header extensions ------------------------------------------------ */

/* A string extension: no NUL inside, at most @max bytes. */
static char *ext_string(const uint8_t *data, uint32_t len, uint32_t max)
{
    if (len == 0 || len > max || memchr(data, 0, len))
        return NULL;
    return g_strndup((const char *)data, len);
}

static void ext_feature_names(Qcow2Extensions *ext, const uint8_t *data,
                              uint32_t len)
{
    for (uint32_t i = 0; i + 48 <= len; i += 48) {
        g_hash_table_replace(ext->feature_names,
                             g_strdup_printf("%u:%u", data[i], data[i + 1]),
                             g_strndup((const char *)data + i + 2, 46));
    }
}

static bool parse_one_ext(BlockNode *bs, Qcow2Extensions *ext, uint32_t type,
                          const uint8_t *data, uint32_t len, GError **errp)
{
    switch (type) {
    case QCOW2_EXT_BACKING_FORMAT:
        /* QEMU keeps it in a 16-byte field: at most 15 characters. */
        ext->backing_format = ext_string(data, len, 15);
        if (!ext->backing_format) {
            qcow2_bad_image(errp, bs->filename,
                            "invalid backing format "
                            "extension (length %" PRIu32 ")",
                            len);
            return false;
        }
        break;
    case QCOW2_EXT_DATA_FILE:
        g_free(ext->data_file);
        ext->data_file = ext_string(data, len, 4096);
        break;
    case QCOW2_EXT_FEATURE_TABLE:
        ext_feature_names(ext, data, len);
        break;
    case QCOW2_EXT_CRYPTO_HEADER: {
        Qcow2State *s = bs->opaque;
        uint64_t v[2];
        if (len < 16) {
            qcow2_bad_image(errp, bs->filename,
                            "encryption header extension too short");
            return false;
        }
        memcpy(v, data, 16);
        s->crypto_header_offset = GUINT64_FROM_BE(v[0]);
        s->crypto_header_length = GUINT64_FROM_BE(v[1]);
        break;
    }
    case QCOW2_EXT_BITMAPS: {
        Qcow2State *s = bs->opaque;
        uint32_t nb;
        uint64_t size, offset;
        if (len < 24) {
            qcow2_bad_image(errp, bs->filename,
                            "bitmaps extension too short (%" PRIu32 " bytes)",
                            len);
            return false;
        }
        memcpy(&nb, data, 4);
        memcpy(&size, data + 8, 8);
        memcpy(&offset, data + 16, 8);
        s->nb_bitmaps = GUINT32_FROM_BE(nb);
        s->bitmap_dir_size = GUINT64_FROM_BE(size);
        s->bitmap_dir_offset = GUINT64_FROM_BE(offset);
        s->bitmaps_ext = true;
        break;
    }
    default:
        break; /* unknown or not needed for reading: skipped */
    }
    return true;
}

/* Extensions lie between the header and @end (the backing file name or the
 * end of the first cluster), inside @buf of @buflen bytes. */
static bool parse_extensions(BlockNode *bs, const uint8_t *buf,
                             size_t buflen, uint64_t start, uint64_t end,
                             Qcow2Extensions *ext, GError **errp)
{
    uint64_t off = start;

    end = MIN(end, buflen);
    while (off + 8 <= end) {
        uint32_t type, len;
        memcpy(&type, buf + off, 4);
        memcpy(&len, buf + off + 4, 4);
        type = GUINT32_FROM_BE(type);
        len = GUINT32_FROM_BE(len);
        off += 8;
        if (type == QCOW2_EXT_END)
            return true;
        if (len > end - off) {
            qcow2_bad_image(errp, bs->filename,
                            "header extension %#" PRIx32 " (length %" PRIu32
                            ") runs past the header area",
                            type, len);
            return false;
        }
        if (!parse_one_ext(bs, ext, type, buf + off, len, errp))
            return false;
        off += ROUND_UP((uint64_t)len, 8);
    }
    return true;
}

/* --- features ----------------------------------------------------------- */

static const char *feature_name(Qcow2Extensions *ext, int bit)
{
    g_autofree char *key = g_strdup_printf("0:%d", bit);
    const char *name = g_hash_table_lookup(ext->feature_names, key);

    return name && *name ? name : "unknown feature";
}

static bool check_features(BlockNode *bs, const Qcow2Header *h,
                           uint8_t compression_type, Qcow2Extensions *ext,
                           GError **errp)
{
    const uint64_t known = QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT |
                           QCOW2_INCOMPAT_DATA_FILE |
                           QCOW2_INCOMPAT_COMPRESSION | QCOW2_INCOMPAT_EXTL2;
    uint64_t unknown = h->incompatible_features & ~known;

    if (unknown) {
        int bit = __builtin_ctzll(unknown);
        qcow2_bad_image(errp, bs->filename,
                        "unsupported incompatible feature bit "
                        "%d (%s)",
                        bit, feature_name(ext, bit));
        return false;
    }
    if (h->incompatible_features & QCOW2_INCOMPAT_DATA_FILE) {
        qcow2_bad_image(errp, bs->filename,
                        "the image uses an external data file "
                        "('%s', incompatible feature bit 2), which is not "
                        "supported",
                        ext->data_file ? ext->data_file : "unnamed");
        return false;
    }
    if (h->incompatible_features & QCOW2_INCOMPAT_EXTL2) {
        qcow2_bad_image(errp, bs->filename,
                        "extended L2 entries (incompatible "
                        "feature bit 4) are not supported");
        return false;
    }
    if (!(h->incompatible_features & QCOW2_INCOMPAT_COMPRESSION) !=
        !compression_type) {
        /* The spec ties them: non-zlib iff the bit is set. */
        qcow2_bad_image(errp, bs->filename,
                        "compression type %u does not match "
                        "the compression type bit (incompatible feature bit 3)",
                        compression_type);
        return false;
    }
    if (compression_type) {
        qcow2_bad_image(errp, bs->filename,
                        "compression type %u (%s) is not "
                        "supported, only zlib",
                        compression_type,
                        compression_type == 1 ? "zstd" : "unknown");
        return false;
    }
    if ((h->incompatible_features & QCOW2_INCOMPAT_CORRUPT) && bdrv_verbose)
        fprintf(stderr, "snapnbd: qcow2 image '%s' is marked corrupt; "
                "serving it read-only\n", bs->filename);
    return true;
}

/* --- backing file name ------------------------------------------------- */

static bool read_backing_name(BlockNode *bs, const Qcow2Header *h,
                              const uint8_t *buf, size_t buflen,
                              GError **errp)
{
    Qcow2State *s = bs->opaque;
    uint64_t off = h->backing_file_offset;
    uint32_t len = h->backing_file_size;

    if (!off || !len)
        return true; /* no backing file */
    if (len > QCOW2_MAX_BACKING_NAME) {
        qcow2_bad_image(errp, bs->filename,
                        "backing file name too long (%" PRIu32
                        " bytes, at most 1023)",
                        len);
        return false;
    }
    if (off < h->header_length || off > buflen || len > buflen - off) {
        qcow2_bad_image(errp, bs->filename,
                        "backing file name (offset %#" PRIx64 ", %" PRIu32
                        " bytes) is outside the header cluster",
                        off, len);
        return false;
    }
    if (memchr(buf + off, 0, len)) {
        qcow2_bad_image(errp, bs->filename,
                        "backing file name contains a NUL "
                        "byte");
        return false;
    }
    s->backing_file = g_strndup((const char *)buf + off, len);
    return true;
}

/* --- L1 table ------------------------------------------------------------ */

static bool load_l1(BlockNode *bs, const Qcow2Header *h, GError **errp)
{
    Qcow2State *s = bs->opaque;
    uint64_t per_l1 = (uint64_t)s->cluster_size << s->l2_bits;
    uint64_t needed = h->size / per_l1 + (h->size % per_l1 != 0);
    uint64_t bytes = (uint64_t)h->l1_size * sizeof(uint64_t);
    int ret;

    if (h->l1_size > QCOW2_MAX_L1_BYTES / sizeof(uint64_t)) {
        qcow2_bad_image(errp, bs->filename,
                        "active L1 table too large (%" PRIu32
                        " entries, at most %zu)",
                        h->l1_size, QCOW2_MAX_L1_BYTES / sizeof(uint64_t));
        return false;
    }
    if (h->l1_size < needed) {
        qcow2_bad_image(errp, bs->filename,
                        "L1 table too small (%" PRIu32
                        " entries for a virtual size of %" PRIu64 " bytes)",
                        h->l1_size, h->size);
        return false;
    }
    if (h->l1_table_offset & (s->cluster_size - 1)) {
        qcow2_bad_image(errp, bs->filename,
                        "L1 table offset %#" PRIx64 " is not "
                        "cluster aligned",
                        h->l1_table_offset);
        return false;
    }
    if (h->l1_table_offset > (uint64_t)s->file_length ||
        bytes > s->file_length - h->l1_table_offset ||
        (bytes && !h->l1_table_offset)) {
        qcow2_bad_image(errp, bs->filename,
                        "L1 table (offset %#" PRIx64 ", %" PRIu32
                        " entries) lies outside the file",
                        h->l1_table_offset, h->l1_size);
        return false;
    }
    s->l1_size = h->l1_size;
    s->l1_offset = h->l1_table_offset;
    s->l1_table = g_try_new0(uint64_t, MAX(s->l1_size, 1));
    if (!s->l1_table) {
        qcow2_bad_image(errp, bs->filename, "no memory for the L1 table");
        return false;
    }
    if (bytes) {
        ret = bdrv_pread(s->file, s->l1_offset, bytes, s->l1_table);
        if (ret < 0) {
            qcow2_bad_image(errp, bs->filename,
                            "could not read the L1 table: %s",
                            g_strerror(-ret));
            return false;
        }
    }
    for (uint32_t i = 0; i < s->l1_size; i++)
        s->l1_table[i] = GUINT64_FROM_BE(s->l1_table[i]);
    return true;
}

/* --- backing chain ------------------------------------------------------ */

/* As QEMU: a relative name is relative to the overlay's directory. */
char *qcow2_resolve_backing(const char *overlay, const char *name)
{
    const char *slash = strrchr(overlay, '/');

    if (g_path_is_absolute(name) || !slash)
        return g_strdup(name);
    return g_strdup_printf("%.*s%s", (int)(slash + 1 - overlay), overlay,
                           name);
}

static bool in_chain(const char *path, const char *overlay, GError **errp)
{
    struct stat st;

    if (chain_depth >= QCOW2_MAX_CHAIN_DEPTH) {
        qcow2_bad_image(errp, overlay, "backing chain deeper than %d images",
                        QCOW2_MAX_CHAIN_DEPTH);
        return true;
    }
    if (stat(path, &st) < 0)
        return false; /* opening it reports the error */
    for (ChainLink *l = chain_top; l; l = l->up) {
        if (l->dev == st.st_dev && l->ino == st.st_ino) {
            qcow2_bad_image(errp, overlay,
                            "backing file '%s' is already in the "
                            "backing chain (the chain loops)",
                            path);
            return true;
        }
    }
    return false;
}

static void put_opt(GHashTable *t, const char *k, const char *v)
{
    g_hash_table_insert(t, g_strdup(k), g_strdup(v));
}

/* Does the header name an NBD export (QEMU 7.2's protocols nbd, nbd+tcp
 * and nbd+unix, and the legacy nbd:HOST:PORT and nbd:unix:PATH)? */
static bool is_nbd_name(const char *name)
{
    return g_str_has_prefix(name, "nbd:") ||
           g_str_has_prefix(name, "nbd+tcp:") ||
           g_str_has_prefix(name, "nbd+unix:");
}

/* The format of an NBD backing whose header names none: QEMU probes the
 * export's first bytes, as for a file.  NULL when it cannot connect. */
static const char *probe_nbd_format(const char *uri, GError **errp)
{
    g_autoptr(GHashTable) o = opt_new();
    char magic[4];
    BlockNode *n;
    bool qcow2;

    put_opt(o, "driver", "nbd");
    put_opt(o, "filename", uri);
    put_opt(o, "read-only", "on");
    n = bdrv_open(o, errp);
    if (!n)
        return NULL;
    qcow2 = bdrv_getlength(n) >= 4 && bdrv_pread(n, 0, 4, magic) == 0 &&
            memcmp(magic, "QFI\xfb", 4) == 0;
    bdrv_unref(n);
    return qcow2 ? "qcow2" : "raw";
}

/* Where the backing's bytes come from: the nbd driver for an NBD name,
 * else a local file (relative names from the overlay's directory).
 * Sets *fmt (the header's format, or probed); false with errp set. */
static bool put_backing_file(Qcow2State *s, GHashTable *options,
                             const char *overlay, const char *path,
                             const char **fmt, GError **errp)
{
    bool nbd = is_nbd_name(s->backing_file);

    if (!nbd && (g_str_has_prefix(s->backing_file, "json:") ||
                 strstr(s->backing_file, "://"))) {
        qcow2_bad_image(errp, overlay,
                        "backing file '%s' is not a local file or an NBD "
                        "address (not supported)",
                        s->backing_file);
        return false;
    }
    *fmt = s->backing_format;
    if (!*fmt && nbd) {
        GError *err = NULL;
        *fmt = probe_nbd_format(path, &err);
        if (!*fmt) {
            g_propagate_prefixed_error(errp, err, "Could not open backing "
                                       "file of '%s': ", overlay);
            return false;
        }
    } else if (!*fmt) {
        *fmt = bdrv_probe_format(path);
    }
    if (strcmp(*fmt, "qcow2") != 0 && strcmp(*fmt, "raw") != 0) {
        qcow2_bad_image(errp, overlay,
                        "backing file format '%s' is not supported "
                        "(qcow2 or raw)",
                        *fmt);
        return false;
    }
    put_opt(options, "backing.file.driver", nbd ? "nbd" : "file");
    put_opt(options, "backing.file.filename", path);
    return true;
}

/* Opens the backing named in the header, read-only, as child "backing". */
static bool open_header_backing(BlockNode *bs, GHashTable *options,
                                GError **errp)
{
    Qcow2State *s = bs->opaque;
    g_autofree char *overlay = g_strdup(bs->filename);
    g_autofree char *path = is_nbd_name(s->backing_file)
                                ? g_strdup(s->backing_file)
                                : qcow2_resolve_backing(overlay,
                                                        s->backing_file);
    const char *fmt;
    ChainLink self = { .up = chain_top };
    struct stat st;
    GError *err = NULL;

    if (!put_backing_file(s, options, overlay, path, &fmt, errp))
        return false;
    if (stat(overlay, &st) == 0) {
        self.dev = st.st_dev;
        self.ino = st.st_ino;
        chain_top = &self;
    }
    if (in_chain(path, overlay, errp)) {
        chain_top = self.up;
        return false;
    }
    put_opt(options, "backing.driver", fmt);
    put_opt(options, "backing.read-only", "on");
    chain_depth++;
    s->backing = bdrv_open_child(bs, options, "backing", &err);
    chain_depth--;
    chain_top = self.up;
    if (!s->backing) {
        g_propagate_prefixed_error(errp, err, "Could not open backing file "
                                   "of '%s': ", overlay);
        return false;
    }
    return true;
}

/* Explicit "backing" options win over the header; "backing" = "" or
 * "null" means no backing at all. */
static bool open_backing(BlockNode *bs, GHashTable *options, GError **errp)
{
    Qcow2State *s = bs->opaque;
    const char *ref = g_hash_table_lookup(options, "backing");
    bool ok = true;

    if (ref && (!*ref || !strcmp(ref, "null"))) {
        g_hash_table_remove(options, "backing");
    } else if (opt_has_prefix(options, "backing")) {
        GError *err = NULL;

        s->backing = bdrv_open_child(bs, options, "backing", &err);
        ok = s->backing != NULL;
        if (!ok) /* QEMU's bdrv_open_backing_file says it so */
            g_propagate_prefixed_error(errp, err,
                                       "Could not open backing file: ");
    } else if (s->backing_file) {
        ok = open_header_backing(bs, options, errp);
    }
    if (s->backing)
        s->backing_length = MAX(bdrv_getlength(s->backing), 0);
    return ok;
}

/* --- open/close ----------------------------------------------------------- */

/* Cached tables: the option, or what maps the whole disk (capped). */
static void set_geometry(Qcow2State *s, const Qcow2Header *h)
{
    s->header_length = h->header_length;
    s->autoclear = h->autoclear_features;
    s->version = h->version;
    s->cluster_bits = h->cluster_bits;
    s->cluster_size = 1U << h->cluster_bits;
    s->l2_bits = h->cluster_bits - 3;
    s->l2_entries = 1U << s->l2_bits;
    s->size = h->size;
    s->incompatible = h->incompatible_features;
    s->csize_shift = 62 - (s->cluster_bits - 8);
    s->csize_mask = (1ULL << (s->cluster_bits - 8)) - 1;
    s->coffset_mask = (1ULL << s->csize_shift) - 1;
}

/* Everything the header cluster says, checked; fills the state and h. */
static bool parse_image(BlockNode *bs, Qcow2Header *hp, GError **errp)
{
    Qcow2State *s = bs->opaque;
    Qcow2Header h;
    Qcow2Extensions ext = { 0 };
    g_autofree uint8_t *buf = NULL;
    size_t buflen;
    uint8_t ctype = 0;
    bool ok = false;
    int ret;

    if (read_fixed_header(bs, &h, errp) < 0 || !check_geometry(bs, &h, errp))
        return false;
    set_geometry(s, &h);
    buflen = MIN((uint64_t)s->file_length, s->cluster_size);
    buf = g_try_malloc(buflen);
    if (!buf) {
        qcow2_bad_image(errp, bs->filename, "no memory for the header");
        return false;
    }
    ret = bdrv_pread(s->file, 0, buflen, buf);
    if (ret < 0) {
        qcow2_bad_image(errp, bs->filename,
                        "could not read the header cluster: "
                        "%s",
                        g_strerror(-ret));
        return false;
    }
    if (h.header_length > QCOW2_V3_HEADER_LENGTH)
        ctype = buf[QCOW2_V3_HEADER_LENGTH];
    ext.feature_names = g_hash_table_new_full(g_str_hash, g_str_equal,
                                              g_free, g_free);
    ok = read_backing_name(bs, &h, buf, buflen, errp) &&
         parse_extensions(bs, buf, buflen, h.header_length,
                          h.backing_file_offset ? h.backing_file_offset
                                                : s->cluster_size,
                          &ext, errp) &&
         check_features(bs, &h, ctype, &ext, errp) &&
         load_l1(bs, &h, errp);
    s->backing_format = g_steal_pointer(&ext.backing_format);
    g_free(ext.data_file);
    g_hash_table_destroy(ext.feature_names);
    *hp = h;
    return ok;
}

/* What a writable open needs beyond reading: refcounts, a clean image. */
static bool open_for_writing(BlockNode *bs, const Qcow2Header *h,
                             GError **errp)
{
    Qcow2State *s = bs->opaque;

    if (h->incompatible_features & QCOW2_INCOMPAT_CORRUPT) {
        qcow2_bad_image(
            errp, bs->filename,
            "the image is marked corrupt "
            "(incompatible feature bit 1); it can only be opened "
            "read-only (-r) until 'qemu-img check -r all' repairs it");
        return false;
    }
    if (!qcow2_refcount_open(bs, h->refcount_table_offset,
                             h->refcount_table_clusters, h->refcount_order,
                             errp))
        return false;
    /* Where the snapshots' tables are, for the overlap checks. */
    s->snapshot_l1s = qcow2_snapshot_l1_tables(bs, &s->snapshots_offset,
                                               &s->snapshots_bytes, errp);
    if (!s->snapshot_l1s)
        return false;
    bdrv_set_growable(s->file);
    qcow2_write_init(s);
    s->writable = true;
    return true;
}

/* The first writes of a writable open, once everything else checked out
 * (so that a refused image is never written): count the references and
 * repair refcounts that are dirty or miss some (qcow2-repair.c), mark
 * the bitmaps in use, clear the autoclear bits nobody maintains. */
static bool start_writing(BlockNode *bs, const Qcow2Header *h, GError **errp)
{
    Qcow2State *s = bs->opaque;
    uint64_t keep;

    if (!qcow2_count_references(
            bs, h->incompatible_features & QCOW2_INCOMPAT_DIRTY, errp))
        return false;
    if (qcow2_bitmaps_mark_in_use(bs) < 0) {
        qcow2_bad_image(errp, bs->filename,
                        "bitmaps: could not mark the bitmaps in use%s%s",
                        qcow2_open_corruption(s) ? ": " : "",
                        qcow2_open_corruption(s) ?: "");
        return false;
    }
    /* Keep only the bitmaps bit: qcow2-bitmap.c maintains the bitmaps. */
    s->autoclear &= s->bitmaps_ext ? QCOW2_AUTOCLEAR_BITMAPS : 0;
    keep = GUINT64_TO_BE(s->autoclear);
    if (h->version >= 3 && h->autoclear_features != s->autoclear &&
        bdrv_pwrite(s->file, QCOW2_HDR_AUTOCLEAR, 8, &keep, 0) < 0) {
        qcow2_bad_image(errp, bs->filename, "could not update the header");
        return false;
    }
    s->bitmaps_loaded = true; /* from now on, close stores them */
    return true;
}

/* encrypt.format=luks: the key, from the LUKS header in the image and the
 * encrypt.key-secret object. */
static bool open_crypto(BlockNode *bs, const Qcow2Header *h,
                        const char *format, const char *secret,
                        GError **errp)
{
    Qcow2State *s = bs->opaque;

    /* QEMU's words (qcow2_update_options_prepare) for a format that is
     * not the header's */
    if (h->crypt_method == 0 && format) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "No encryption in image header, but options specified "
                    "format '%s'", format);
        return false;
    }
    if (h->crypt_method == 0) {
        if (secret)
            qcow2_bad_image(errp, bs->filename,
                            "the image is not encrypted, but "
                            "encrypt.key-secret was given");
        return !secret;
    }
    if (format && strcmp(format, "luks") != 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Header reported 'luks' encryption format but options "
                    "specify '%s'", format);
        return false;
    }
    if (!s->crypto_header_length) {
        qcow2_bad_image(errp, bs->filename,
                        "LUKS encryption without its header extension");
        return false;
    }
    s->crypto = luks_key_open(s->file, s->crypto_header_offset, secret, errp);
    return s->crypto != NULL;
}

static int qcow2_open(BlockNode *bs, GHashTable *options, GError **errp)
{
    Qcow2State *s = bs->opaque;
    g_autofree char *encrypt_format = opt_take(options, "encrypt.format");
    g_autofree char *key_secret = opt_take(options, "encrypt.key-secret");
    Qcow2Header h;
    Qcow2CacheSizes sizes;

    s->file = bdrv_open_child(bs, options, "file", errp);
    if (!s->file)
        return -EINVAL;
    s->file_length = bdrv_getlength(s->file);
    if (s->file_length < 0) {
        qcow2_bad_image(errp, bs->filename, "could not get the file length: %s",
                        g_strerror(-s->file_length));
        return -EIO;
    }
    if (!parse_image(bs, &h, errp))
        goto fail;
    /* where QEMU checks them: after the header, before the encryption */
    if (!qcow2_take_runtime_options(bs, options, &sizes, errp))
        goto fail;
    s->l2_cache_tables = sizes.l2_tables;
    s->refcount_cache_tables = sizes.refcount_tables;
    if (!open_crypto(bs, &h, encrypt_format, key_secret, errp))
        goto fail;
    if (!qcow2_snapshot_apply(bs, options, errp))
        goto fail;
    s->l2_cache = qcow2_cache_new(s->file, s->cluster_size,
                                  s->l2_cache_tables, qcow2_check_l2_write,
                                  bs);
    if (!bs->read_only && !open_for_writing(bs, &h, errp))
        goto fail;
    if (!qcow2_bitmaps_load(bs, errp))
        goto fail;
    if (!open_backing(bs, options, errp))
        goto fail;
    s->opening = true;
    if (s->writable && !start_writing(bs, &h, errp))
        goto fail;
    if (qcow2_is_corrupt(s)) {
        qcow2_bad_image(errp, bs->filename, "%s; repair it with 'qemu-img "
                        "check -r all'", qcow2_open_corruption(s));
        goto fail;
    }
    s->opening = false;
    return 0;

fail:
    bs->drv->close(bs);
    return -EINVAL;
}

static void qcow2_close(BlockNode *bs)
{
    Qcow2State *s = bs->opaque;
    /* A corrupt image gets no more writes: what is not on disk stays
     * off it (at worst leaked clusters, as after a crash). */
    bool write_back = s->writable && !qcow2_is_corrupt(s);
    int ret = write_back && s->bitmaps_loaded ? qcow2_bitmaps_store(bs) : 0;

    if (ret == 0 && write_back)
        ret = qcow2_flush_metadata(bs);
    if (ret == 0 && write_back)
        ret = bdrv_flush(s->file);
    if (ret < 0)
        fprintf(stderr, "snapnbd: qcow2 image '%s': could not write its "
                "metadata back on close: %s\n", bs->filename,
                g_strerror(-ret));
    if (s->writable) {
        g_mutex_clear(&s->lock);
        g_cond_clear(&s->inflight_cond);
        s->writable = false;
    }
    qcow2_refcount_close(bs);
    if (s->snapshot_l1s)
        g_clear_pointer(&s->snapshot_l1s, g_array_unref);
    qcow2_cache_free(s->l2_cache);
    s->l2_cache = NULL;
    g_clear_pointer(&s->l1_table, g_free);
    g_clear_pointer(&s->backing_file, g_free);
    g_clear_pointer(&s->backing_format, g_free);
    g_clear_pointer(&s->open_corruption, g_free);
    g_clear_pointer(&s->crypto, luks_key_free);
}

static int64_t qcow2_get_length(BlockNode *bs)
{
    Qcow2State *s = bs->opaque;
    return s->size;
}

/* Any offset and length: reads are split by cluster here anyway. */
static void qcow2_refresh_limits(BlockNode *bs, BlockLimits *limits)
{
    Qcow2State *s = bs->opaque;

    /* encrypted: whole sectors (io.c does the read-modify-write) */
    limits->request_alignment = s->crypto ? LUKS_SECTOR_SIZE : 1;
    limits->buffer_alignment = bdrv_limits(s->file)->buffer_alignment;
    /* Zero and discard act on whole clusters (io.c writes the edges). */
    limits->pwrite_zeroes_alignment = s->cluster_size;
    limits->pdiscard_alignment = s->cluster_size;
}

static char *qcow2_describe(BlockNode *bs)
{
    Qcow2State *s = bs->opaque;

    return g_strdup_printf("v%u, %u-byte clusters%s%s%s", s->version,
                           s->cluster_size,
                           s->backing_file ? ", backing '" : "",
                           s->backing_file ? s->backing_file : "",
                           s->backing_file ? "'" : "");
}

/* --- read ------------------------------------------------------------------
 */

/* Reads @bytes at @offset of @node, of which only @length bytes exist:
 * what lies past them reads as zeroes (as QEMU's block layer does, for a
 * host file shorter than its clusters and for a short backing file). */
static int read_padded(BlockNode *node, int64_t length, int64_t offset,
                       int64_t bytes, char *buf)
{
    int64_t avail = 0;
    int ret = 0;

    if (node && offset < length)
        avail = MIN(bytes, length - offset);
    if (avail > 0)
        ret = bdrv_pread(node, offset, avail, buf);
    memset(buf + avail, 0, bytes - avail);
    return ret;
}

static int read_host(Qcow2State *s, uint64_t host, int64_t bytes, char *buf)
{
    /* A corrupt entry may point beyond any signed offset: past the end. */
    int64_t offset = host > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)host;

    bdrv_debug_event(s->file, BLKDBG_READ_AIO);
    return read_padded(s->file, bdrv_getlength(s->file), offset, bytes, buf);
}

/* Unallocated: the backing's bytes, zeroes past its end. */
static int read_backing(Qcow2State *s, int64_t offset, int64_t bytes,
                        char *buf)
{
    bdrv_debug_event(s->file, BLKDBG_READ_BACKING_AIO);
    return read_padded(s->backing, s->backing_length, offset, bytes, buf);
}

int qcow2_read_guest(BlockNode *bs, int64_t offset, int64_t bytes,
                     void *buf)
{
    Qcow2State *s = bs->opaque;
    char *p = buf;

    while (bytes > 0) {
        Qcow2Mapping m;
        int ret = qcow2_map(bs, offset, bytes, false, &m);
        if (ret < 0)
            return ret;
        switch (m.type) {
        case QCOW2_CLUSTER_NORMAL:
            ret = read_host(s, m.host, m.bytes, p);
            if (ret == 0 && s->crypto)
                ret = luks_key_crypt(s->crypto, m.host / LUKS_SECTOR_SIZE, p,
                                     m.bytes, false);
            break;
        case QCOW2_CLUSTER_COMPRESSED:
            if (s->crypto) /* QEMU never writes these */
                return -EIO;
            ret = qcow2_read_compressed(bs, m.host,
                                        offset & (s->cluster_size - 1),
                                        m.bytes, p);
            break;
        case QCOW2_CLUSTER_ZERO:
            memset(p, 0, m.bytes);
            break;
        case QCOW2_CLUSTER_UNALLOCATED:
            ret = read_backing(s, offset, m.bytes, p);
            break;
        }
        if (ret < 0)
            return ret;
        offset += m.bytes;
        bytes -= m.bytes;
        p += m.bytes;
    }
    return 0;
}

/* --- piped read ----------------------------------------------------------
 *
 * A large read into the caller's pipe (bdrv_pread_pipe), spliced from the
 * image file's page cache with no copy, when the guest range maps to data
 * clusters (contiguous on the host or not: each host run is one splice)
 * or to unallocated clusters that the backing node can pipe itself, if
 * nobody writes that node.
 * Zero and compressed clusters, zeroes past the backing's end and data
 * past the end of the file (-EAGAIN: this range), encrypted images,
 * clusters under 4 KiB and image files that cannot splice (-ENOTSUP: this
 * node) take the copying read: the same bytes.
 *
 * Like the copying read, this takes no lock: each run is mapped through
 * the L2 cache (one atomic entry at a time) and then read, and a writer
 * points an entry at new clusters only after their data is written, so a
 * write that does not overlap the read in time is seen whole or not at
 * all.  The pipe holds page cache references until the socket is drained,
 * so a cluster that an overlapping discard freed and a later write reused
 * can show in the reply: only for a read whose order against that discard
 * NBD leaves undefined, as with the copying read (which can read the
 * reused cluster too, in the window between its lookup and its pread).
 */

/* Host runs mapped before any is spliced: a range that cannot be piped
 * whole is mostly found out before the pipe was filled in vain. */
#define PIPE_LOOKAHEAD_RUNS 32

typedef struct PipeRun {
    BlockNode *node; /* s->file (data clusters) or the backing node */
    int64_t offset;  /* in @node */
    int64_t bytes;
} PipeRun;

/* A backing node that someone writes (a fleecing overlay's backing is the
 * live disk) is read by copy: the pipe would hold its page cache pages,
 * and a guest write after the read (copied before-write into this image,
 * as fleecing wants) would still change what the client gets. */
static bool backing_written(BlockNode *backing)
{
    /* Read without graph_lock (a graph change may drain this request):
     * a writer that comes later cannot make this read a point in time. */
    return __atomic_load_n(&backing->cumulative_perm, __ATOMIC_RELAXED) &
           BDRV_PERM_WRITE;
}

/* Where the bytes from guest @offset (a prefix of @bytes) come from, as
 * the image maps them now: 0 with *@run set, -EAGAIN when they are not in
 * a node that can splice them, or -EIO for a corrupt entry (as a copying
 * read would fail). */
static int pipe_run(BlockNode *bs, int64_t offset, int64_t bytes,
                    PipeRun *run)
{
    Qcow2State *s = bs->opaque;
    BlockNode *backing;
    Qcow2Mapping m;
    int ret = qcow2_map(bs, offset, bytes, false, &m);

    if (ret < 0)
        return ret;
    switch (m.type) {
    case QCOW2_CLUSTER_NORMAL:
        /* Past the end of the file the copying read pads with zeroes. */
        if (m.host > (uint64_t)(INT64_MAX - m.bytes) ||
            (int64_t)m.host + m.bytes > bdrv_getlength(s->file))
            return -EAGAIN;
        *run = (PipeRun){ s->file, (int64_t)m.host, m.bytes };
        return 0;
    case QCOW2_CLUSTER_UNALLOCATED:
        backing = __atomic_load_n(&s->backing, __ATOMIC_ACQUIRE);
        if (!backing || !backing->drv->pread_pipe ||
            offset + m.bytes > s->backing_length || backing_written(backing))
            return -EAGAIN;
        *run = (PipeRun){ backing, offset, m.bytes };
        return 0;
    default:
        return -EAGAIN;
    }
}

/* Maps up to PIPE_LOOKAHEAD_RUNS runs from @offset into @runs (adjacent
 * ones merged: a run ends at each L2 table); *@mapped says how many
 * guest bytes they cover.  Returns the number of runs or an error. */
static int map_pipe_runs(BlockNode *bs, int64_t offset, int64_t bytes,
                         PipeRun *runs, int64_t *mapped)
{
    int n = 0;

    *mapped = 0;
    while (*mapped < bytes && n < PIPE_LOOKAHEAD_RUNS) {
        PipeRun r;
        int ret = pipe_run(bs, offset + *mapped, bytes - *mapped, &r);

        if (ret < 0)
            return ret;
        if (n && runs[n - 1].node == r.node &&
            runs[n - 1].offset + runs[n - 1].bytes == r.offset)
            runs[n - 1].bytes += r.bytes;
        else
            runs[n++] = r;
        *mapped += r.bytes;
    }
    return n;
}

static int qcow2_pread_pipe(BlockNode *bs, int64_t offset, int64_t bytes,
                            int pipe_fd)
{
    Qcow2State *s = bs->opaque;

    /* Clusters smaller than a page would take a pipe slot each when not
     * contiguous: a 1 MiB chunk could overflow the pipe.  An O_DIRECT
     * file cannot splice: known before any lookup. */
    if (s->crypto || s->cluster_size < 4096 || !s->file->drv->pread_pipe ||
        bdrv_cache_direct(s->file) || qcow2_is_corrupt(s))
        return -ENOTSUP;
    while (bytes > 0) {
        PipeRun runs[PIPE_LOOKAHEAD_RUNS];
        int64_t mapped;
        int n = map_pipe_runs(bs, offset, bytes, runs, &mapped);

        if (n < 0)
            return n;
        for (int i = 0; i < n; i++) {
            bool data = runs[i].node == s->file;
            int ret;

            bdrv_debug_event(s->file, data ? BLKDBG_READ_AIO
                                           : BLKDBG_READ_BACKING_AIO);
            ret = bdrv_pread_pipe(runs[i].node, runs[i].offset,
                                  runs[i].bytes, pipe_fd);
            /* A backing that cannot pipe this range: this range only. */
            if (ret == -ENOTSUP && !data)
                ret = -EAGAIN;
            if (ret < 0)
                return ret;
        }
        offset += mapped;
        bytes -= mapped;
    }
    return 0;
}

/* --- block status ------------------------------------------------------- */

static int status_of(Qcow2ClusterType type)
{
    switch (type) {
    case QCOW2_CLUSTER_NORMAL:
    case QCOW2_CLUSTER_COMPRESSED:
        return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
    case QCOW2_CLUSTER_ZERO:
        return BDRV_BLOCK_ZERO | BDRV_BLOCK_ALLOCATED;
    default:
        return 0;
    }
}

static int backing_status(Qcow2State *s, int64_t offset, int64_t bytes,
                          int64_t *pnum)
{
    int ret;

    if (!s->backing || offset >= s->backing_length) {
        *pnum = bytes;
        return BDRV_BLOCK_ZERO;
    }
    ret = bdrv_block_status(s->backing, offset,
                            MIN(bytes, s->backing_length - offset), pnum);
    return ret < 0 ? ret : ret & ~BDRV_BLOCK_ALLOCATED;
}

/* One answer covers as many alike clusters as possible, across L2 tables,
 * so that a map of a large image takes few round trips. */
/* A live snapshot made this image the overlay of @backing (or, undone,
 * of nothing): reads of unallocated clusters go there from now on (the
 * node is drained). */
static void qcow2_set_backing(BlockNode *bs, BlockNode *backing)
{
    Qcow2State *s = bs->opaque;

    s->backing_length = backing ? MAX(bdrv_getlength(backing), 0) : 0;
    __atomic_store_n(&s->backing, backing, __ATOMIC_RELEASE);
}

/* Unallocated clusters read as zeroes unless the header names a backing
 * file, attached or not: whatever the file below holds. */
static bool qcow2_has_zero_init(BlockNode *bs)
{
    Qcow2State *s = bs->opaque;

    return s->backing_file == NULL;
}

static int qcow2_block_status(BlockNode *bs, int64_t offset, int64_t bytes,
                              int64_t *pnum)
{
    Qcow2State *s = bs->opaque;
    Qcow2Mapping m;
    int64_t n;
    int status, ret = qcow2_map(bs, offset, bytes, true, &m);

    if (ret < 0)
        return ret;
    status = status_of(m.type);
    for (n = m.bytes; n < bytes; n += m.bytes) {
        /* A bad entry further on ends the run; it fails when reached. */
        if (qcow2_map(bs, offset + n, bytes - n, true, &m) < 0 ||
            status_of(m.type) != status)
            break;
    }
    if (status)
        *pnum = n;
    return status ? status : backing_status(s, offset, n, pnum);
}

static int qcow2_pread(BlockNode *bs, int64_t offset, int64_t bytes,
                       void *buf)
{
    return qcow2_read_guest(bs, offset, bytes, buf);
}

static int qcow2_flush(BlockNode *bs)
{
    Qcow2State *s = bs->opaque;
    int ret;

    if (!s->writable)
        return 0;
    g_mutex_lock(&s->lock);
    ret = qcow2_flush_metadata(bs);
    g_mutex_unlock(&s->lock);
    return ret;
}

/* What a writable open adds, on an image that was opened read-only (its
 * file just became writable): a commit into a backing file. */
static int qcow2_reopen_writable(BlockNode *bs, GError **errp)
{
    Qcow2State *s = bs->opaque;
    Qcow2Header h;
    bool ok;

    if (s->writable)
        return 0;
    if (read_fixed_header(bs, &h, errp) < 0)
        return -EINVAL;
    if (!open_for_writing(bs, &h, errp))
        return -EINVAL;
    s->opening = true;
    ok = start_writing(bs, &h, errp) && !qcow2_is_corrupt(s);
    if (!ok && !(errp && *errp))
        qcow2_bad_image(errp, bs->filename, "%s",
                        qcow2_open_corruption(s) ?: "corrupt");
    s->opening = false;
    return ok ? 0 : -EINVAL;
}

/* blockdev-reopen: the runtime options again (the others are reopen.c's
 * to check); the caches take their new sizes at commit. */
static void *qcow2_reopen_prepare(BlockNode *bs, GHashTable *opts,
                                  GError **errp)
{
    Qcow2CacheSizes *sizes = g_new(Qcow2CacheSizes, 1);

    if (!qcow2_take_runtime_options(bs, opts, sizes, errp)) {
        g_free(sizes);
        return NULL;
    }
    return sizes;
}

static void qcow2_reopen_commit(BlockNode *bs, void *plan)
{
    Qcow2State *s = bs->opaque;
    const Qcow2CacheSizes *sizes = plan;

    s->l2_cache_tables = sizes->l2_tables;
    s->refcount_cache_tables = sizes->refcount_tables;
    qcow2_cache_set_capacity(s->l2_cache, s->l2_cache_tables);
    if (s->refcount_cache)
        qcow2_cache_set_capacity(s->refcount_cache,
                                 qcow2_refcount_cache_tables(s));
}

static bool qcow2_can_store_dirty_bitmap(BlockNode *bs, GError **errp)
{
    Qcow2State *s = bs->opaque;

    if (s->version < 3 || !s->writable) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED, "%s",
                    s->version < 3 ? "qcow2 version 2 images cannot store "
                                     "bitmaps (compat=1.1 can)"
                                   : "the image is open read-only");
        return false;
    }
    return true;
}

const BlockDriver bdrv_qcow2 = {
    .name = "qcow2",
    .state_size = sizeof(Qcow2State),
    .open = qcow2_open,
    .close = qcow2_close,
    .get_length = qcow2_get_length,
    .truncate = qcow2_truncate,
    .get_image_info = qcow2_get_image_info,
    .amend = qcow2_amend,
    .snapshot_list = qcow2_snapshot_list,
    .snapshot_create = qcow2_snapshot_create,
    .snapshot_delete = qcow2_snapshot_delete,
    .refresh_limits = qcow2_refresh_limits,
    .describe = qcow2_describe,
    .create = qcow2_create,
    .format = qcow2_format,
    .pread = qcow2_pread,
    .pread_pipe = qcow2_pread_pipe,
    .pwrite = qcow2_pwrite,
    .pwrite_zeroes = qcow2_pwrite_zeroes,
    .pdiscard = qcow2_pdiscard,
    .flush = qcow2_flush,
    .block_status = qcow2_block_status,
    .has_zero_init = qcow2_has_zero_init,
    .set_backing = qcow2_set_backing,
    .reopen_writable = qcow2_reopen_writable,
    .reopen_prepare = qcow2_reopen_prepare,
    .reopen_commit = qcow2_reopen_commit,
    .change_backing_file = qcow2_change_backing_file,
    .can_store_dirty_bitmap = qcow2_can_store_dirty_bitmap,
    .supported_zero_flags = BDRV_REQ_MAY_UNMAP,
    .can_fast_zero = true,
};
