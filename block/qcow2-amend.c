/*
 * qcow2-amend.c - x-blockdev-amend of a qcow2 image: the compatibility
 * level (version 2 "0.10" or 3 "1.1") and lazy refcounts, as qemu-img
 * amend changes them (QEMU's qcow2_amend_options, qcow2_downgrade).
 *
 * Design notes.
 *
 * Called drained (no guest request runs) and under the metadata lock.
 * Lazy refcounts are one bit of the version 3 header.  A version change
 * rewrites the header cluster: the fixed header of the new version, the
 * header extensions that version keeps (version 2 has no feature name
 * table), the end marker and the backing file name, in one write, as
 * QEMU's qcow2_update_header.  Before a downgrade, zero clusters, which
 * version 2 cannot express, become data clusters of zeroes (or, without a
 * backing file, unallocated clusters), as QEMU's
 * qcow2_expand_zero_clusters; the L2 tables are on disk before the header
 * says version 2, so a crash leaves a valid version 3 image.
 *
 * Refused, with QEMU's words where it has them: a refcount width other
 * than the image's (QEMU rewrites the refcount structures; snapnbd does
 * not), and downgrading an image with a refcount width other than 16, a
 * data file or other incompatible features, internal snapshots (QEMU
 * accepts those whose size matches), persistent bitmaps or encryption.
 */
#include "qcow2.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <string.h>

#define HDR_VERSION                    4
#define HDR_COMPATIBLE                 80
#define HDR_V3_LENGTH_WITH_COMPRESSION 112
#define HDR_NB_SNAPSHOTS               60

/* Sets @errp (once) and returns @ret. */
static int amend_fail(GError **errp, int ret, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);
static int amend_fail(GError **errp, int ret, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    if (errp && !*errp) {
        g_autofree char *msg = g_strdup_vprintf(fmt, ap);
        g_set_error_literal(errp, BDRV_ERROR, BDRV_ERROR_FAILED, msg);
    }
    va_end(ap);
    return ret;
}

static uint64_t be64_at(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return GUINT64_FROM_BE(v);
}

static uint32_t be32_at(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return GUINT32_FROM_BE(v);
}

static void put_be32(uint8_t *p, uint32_t v)
{
    v = GUINT32_TO_BE(v);
    memcpy(p, &v, 4);
}

static void put_be64(uint8_t *p, uint64_t v)
{
    v = GUINT64_TO_BE(v);
    memcpy(p, &v, 8);
}

/* The header cluster as it is on disk. */
static uint8_t *read_header_cluster(BlockNode *bs, int *ret)
{
    Qcow2State *s = bs->opaque;
    uint8_t *buf = g_malloc0(s->cluster_size);
    int64_t len = MIN((int64_t)s->cluster_size, bdrv_getlength(s->file));

    *ret = bdrv_pread(s->file, 0, len, buf);
    if (*ret < 0)
        g_clear_pointer(&buf, g_free);
    return buf;
}

/* Rewrites the header cluster for @version (see the design notes). */
static int rewrite_header(BlockNode *bs, uint32_t version, GError **errp)
{
    Qcow2State *s = bs->opaque;
    g_autofree uint8_t *old = NULL;
    g_autofree uint8_t *out = g_malloc0(s->cluster_size);
    uint32_t old_version, old_len, new_len, pos, end;
    uint64_t backing_off;
    uint32_t backing_len;
    int ret;

    old = read_header_cluster(bs, &ret);
    if (!old)
        return amend_fail(errp, ret, "Could not read the header: %s",
                          g_strerror(-ret));
    old_version = be32_at(old + HDR_VERSION);
    old_len = old_version >= 3 ? be32_at(old + 100) : 72;
    backing_off = be64_at(old + 8);
    backing_len = be32_at(old + 16);
    new_len = version >= 3 ? HDR_V3_LENGTH_WITH_COMPRESSION : 72;

    memcpy(out, old, 72);
    put_be32(out + HDR_VERSION, version);
    if (version >= 3) {
        /* From version 2: no features, 16-bit refcounts, zlib. */
        if (old_version >= 3)
            memcpy(out + 72, old + 72, MIN(old_len, new_len) - 72);
        else
            put_be32(out + 96, 4);
        put_be32(out + 100, new_len);
    }
    /* The extensions the new version keeps. */
    end = new_len;
    for (pos = old_len; pos + 8 <= s->cluster_size;) {
        uint32_t type = be32_at(old + pos), len = be32_at(old + pos + 4);
        uint32_t padded = ROUND_UP(len, 8);
        if (type == QCOW2_EXT_END || len > s->cluster_size - pos - 8)
            break;
        if (!(version < 3 &&
              (type == QCOW2_EXT_FEATURE_TABLE || type == QCOW2_EXT_BITMAPS))) {
            if (end + 8 + padded > s->cluster_size)
                return amend_fail(errp, -EFBIG,
                                  "The header extensions do not "
                                  "fit in the header cluster");
            memcpy(out + end, old + pos, 8 + len);
            end += 8 + padded;
        }
        pos += 8 + padded;
    }
    end += 8; /* the end marker: zeroes */
    if (backing_off && backing_len) {
        if (backing_off + backing_len > s->cluster_size ||
            end + backing_len > s->cluster_size)
            return amend_fail(errp, -EFBIG,
                              "The backing file name does not fit "
                              "in the header cluster");
        memcpy(out + end, old + backing_off, backing_len);
        put_be64(out + 8, end);
    }
    bdrv_debug_event(s->file, BLKDBG_EMPTY_IMAGE_PREPARE);
    ret = bdrv_pwrite(s->file, 0,
                      MIN((int64_t)s->cluster_size, bdrv_getlength(s->file)),
                      out, 0);
    if (ret == 0)
        ret = qcow2_barrier(bs);
    if (ret < 0)
        return amend_fail(errp, ret, "Could not write the header: %s",
                          g_strerror(-ret));
    s->version = version;
    s->header_length = new_len;
    if (version < 3) {
        s->autoclear = 0;
        s->bitmaps_ext = false;
    }
    return 0;
}

/* Zero clusters of the active L2 tables become data (see design notes). */
static int expand_zero_clusters(BlockNode *bs)
{
    Qcow2State *s = bs->opaque;
    bool backing = s->backing || s->backing_file;
    int ret = 0;

    for (uint32_t i = 0; i < s->l1_size && ret == 0; i++) {
        uint64_t l2 = s->l1_table[i] & QCOW2_L1E_OFFSET_MASK;
        bool changed = false;
        Qcow2Table *t = NULL;

        if (!l2)
            continue;
        ret = qcow2_cache_get(s->l2_cache, l2, &t);
        for (uint32_t j = 0; ret == 0 && j < s->l2_entries; j++) {
            uint64_t e = qcow2_table_entry(t, j);
            uint64_t off = e & QCOW2_L2E_OFFSET_MASK;
            bool fresh;

            if (qcow2_classify(e) != QCOW2_CLUSTER_ZERO)
                continue;
            changed = true;
            if (!off && !backing) {
                qcow2_table_set(t, j, 0);
                continue;
            }
            if (!off) {
                int64_t n = qcow2_alloc_clusters(bs, 1, &fresh);
                if (n < 0) {
                    ret = n;
                    break;
                }
                off = n;
            }
            ret = bdrv_pwrite_zeroes(s->file, off, s->cluster_size, 0);
            if (ret == 0)
                qcow2_table_set(t, j, off | QCOW2_OFLAG_COPIED);
        }
        if (changed)
            qcow2_cache_mark_dirty(s->l2_cache, t);
        if (t)
            qcow2_table_put(t);
    }
    if (ret == 0)
        ret = qcow2_flush_metadata(bs);
    if (ret == 0)
        ret = qcow2_barrier(bs);
    return ret;
}

static bool has_persistent_bitmaps(BlockNode *bs)
{
    GList *list = bdrv_dirty_bitmap_list(bs);
    bool found = false;

    for (GList *l = list; l && !found; l = l->next)
        found = bdrv_dirty_bitmap_persistent(l->data);
    g_list_free(list);
    return found;
}

static int downgrade(BlockNode *bs, GError **errp)
{
    Qcow2State *s = bs->opaque;
    g_autofree uint8_t *hdr = NULL;
    uint64_t incompat;
    int ret;

    if (s->refcount_order != 4)
        return amend_fail(errp, -ENOTSUP,
                          "compat=0.10 requires refcount_bits=16");
    hdr = read_header_cluster(bs, &ret);
    if (!hdr)
        return amend_fail(errp, ret, "Could not read the header: %s",
                          g_strerror(-ret));
    incompat = be64_at(hdr + QCOW2_HDR_INCOMPATIBLE);
    if (incompat & QCOW2_INCOMPAT_DATA_FILE)
        return amend_fail(errp, -ENOTSUP,
                          "Cannot downgrade an image with a data file");
    if (be32_at(hdr + HDR_NB_SNAPSHOTS))
        return amend_fail(errp, -ENOTSUP,
                          "Internal snapshots prevent downgrade of image");
    if (incompat & ~(uint64_t)QCOW2_INCOMPAT_DIRTY)
        return amend_fail(errp, -ENOTSUP,
                          "Cannot downgrade an image with "
                          "incompatible features 0x%" PRIx64 " set",
                          incompat & ~(uint64_t)QCOW2_INCOMPAT_DIRTY);
    if (s->crypto_header_length)
        return amend_fail(errp, -ENOTSUP,
                          "Cannot downgrade an encrypted image "
                          "(LUKS needs compatibility level 1.1)");
    if (s->bitmaps_ext || has_persistent_bitmaps(bs))
        return amend_fail(errp, -ENOTSUP,
                          "Cannot downgrade an image with persistent bitmaps");
    ret = expand_zero_clusters(bs);
    if (ret < 0)
        return amend_fail(errp, ret, "Failed to turn zero into data clusters");
    return rewrite_header(bs, 2, errp);
}

static int set_lazy_refcounts(BlockNode *bs, bool on, GError **errp)
{
    Qcow2State *s = bs->opaque;
    uint64_t be, compat;
    int ret = bdrv_pread(s->file, HDR_COMPATIBLE, 8, &be);

    if (ret == 0) {
        compat = GUINT64_FROM_BE(be);
        compat = on ? compat | QCOW2_COMPAT_LAZY_REFCOUNTS
                    : compat & ~QCOW2_COMPAT_LAZY_REFCOUNTS;
        be = GUINT64_TO_BE(compat);
        /* snapnbd keeps refcounts up to date either way: turning lazy
         * refcounts off needs no repair first. */
        ret = qcow2_flush_metadata(bs);
    }
    if (ret == 0)
        ret = bdrv_pwrite(s->file, HDR_COMPATIBLE, 8, &be, 0);
    if (ret == 0)
        ret = qcow2_barrier(bs);
    if (ret < 0)
        return amend_fail(errp, ret, "Failed to update the header: %s",
                          g_strerror(-ret));
    return 0;
}

static int check_options(Qcow2State *s, const BdrvAmendOptions *o, int version,
                         GError **errp)
{
    if (o->encrypt)
        return amend_fail(
            errp, -ENOTSUP,
            s->crypto_header_length
                ? "snapnbd cannot amend the LUKS keyslots of an image"
                : "image is not encrypted, can't amend");
    if (o->refcount_bits &&
        (o->refcount_bits > 64 || (o->refcount_bits & (o->refcount_bits - 1))))
        return amend_fail(errp, -EINVAL,
                          "Refcount width must be a power of two "
                          "and may not exceed 64 bits");
    if (o->refcount_bits && version < 3 && o->refcount_bits != 16)
        return amend_fail(errp, -EINVAL,
                          "Refcount widths other than 16 bits "
                          "require compatibility level 1.1 or above (use "
                          "compat=1.1 or greater)");
    if (o->refcount_bits && o->refcount_bits != 1u << s->refcount_order)
        return amend_fail(errp, -ENOTSUP,
                          "snapnbd cannot change the refcount "
                          "width of an image (%d bits)",
                          1 << s->refcount_order);
    if (o->lazy_refcounts == 1 && version < 3)
        return amend_fail(
            errp, -EINVAL,
            "Lazy refcounts only supported with "
            "compatibility level 1.1 and above (use version=v3 or "
            "greater)");
    return 0;
}

int qcow2_amend(BlockNode *bs, const BdrvAmendOptions *o, GError **errp)
{
    Qcow2State *s = bs->opaque;
    int version = o->version ? o->version : (int)s->version;
    int ret;

    if (!s->writable || qcow2_is_corrupt(s))
        return amend_fail(errp, -EACCES, "Image is read-only");
    ret = check_options(s, o, version, errp);
    if (ret < 0)
        return ret;
    g_mutex_lock(&s->lock);
    if (version < (int)s->version)
        ret = downgrade(bs, errp);
    else if (version > (int)s->version)
        ret = rewrite_header(bs, version, errp);
    if (ret == 0 && o->lazy_refcounts >= 0 && s->version >= 3)
        ret = set_lazy_refcounts(bs, o->lazy_refcounts, errp);
    g_mutex_unlock(&s->lock);
    return ret;
}
