/*
 * qcow2-header.c - rewriting the header cluster: the extensions and the
 * backing file name that follow the fixed header (qcow2.txt, "Header
 * extensions").
 *
 * The whole first cluster is rebuilt in memory and written with one write,
 * so that a crash leaves the old header or the new one: the extensions
 * the edit does not name are copied as they are, unknown ones included.
 */
#include "qcow2.h"

#include <errno.h>
#include <string.h>

#define HDR_BACKING_OFFSET 8
#define HDR_BACKING_SIZE 16

typedef struct HeaderBuilder {
    uint8_t *buf;
    size_t len, cap;
} HeaderBuilder;

static bool put_ext(HeaderBuilder *b, uint32_t type, const void *data,
                    uint32_t len)
{
    uint32_t hdr[2] = { GUINT32_TO_BE(type), GUINT32_TO_BE(len) };

    if (b->len + 8 + ROUND_UP(len, 8) > b->cap)
        return false;
    memcpy(b->buf + b->len, hdr, 8);
    memcpy(b->buf + b->len + 8, data, len);
    b->len += 8 + ROUND_UP(len, 8);
    return true;
}

/* Copies the old extensions but the end marker, the backing format and
 * @replaced, which the edit writes anew. */
static bool copy_other_exts(HeaderBuilder *b, const uint8_t *old,
                            size_t start, size_t end, uint32_t replaced)
{
    size_t in = start;

    while (in + 8 <= end) {
        uint32_t type, len;
        memcpy(&type, old + in, 4);
        memcpy(&len, old + in + 4, 4);
        type = GUINT32_FROM_BE(type);
        len = GUINT32_FROM_BE(len);
        if (type == QCOW2_EXT_END || in + 8 + ROUND_UP(len, 8) > end)
            break;
        if (type != QCOW2_EXT_BACKING_FORMAT && type != replaced &&
            !put_ext(b, type, old + in + 8, len))
            return false;
        in += 8 + ROUND_UP(len, 8);
    }
    return true;
}

int qcow2_rewrite_header(BlockNode *bs, const Qcow2HeaderEdit *e)
{
    Qcow2State *s = bs->opaque;
    g_autofree uint8_t *old = g_malloc0(s->cluster_size);
    HeaderBuilder b = { g_malloc0(s->cluster_size), s->header_length,
                        s->cluster_size };
    g_autofree uint8_t *new = b.buf;
    size_t name_len = e->backing_file ? strlen(e->backing_file) : 0;
    const char *fmt = name_len ? e->backing_format : NULL;
    int ret = bdrv_pread(s->file, 0, s->cluster_size, old);

    if (ret < 0)
        return ret;
    memcpy(new, old, s->header_length);
    if ((fmt && !put_ext(&b, QCOW2_EXT_BACKING_FORMAT, fmt, strlen(fmt))) ||
        !copy_other_exts(&b, old, s->header_length, s->cluster_size,
                         e->ext_type) ||
        (e->ext_len && !put_ext(&b, e->ext_type, e->ext, e->ext_len)) ||
        b.len + 8 + name_len > b.cap || name_len > QCOW2_MAX_BACKING_NAME)
        return -ENOSPC;
    b.len += 8; /* the end marker: zeroes */
    if (name_len)
        memcpy(new + b.len, e->backing_file, name_len);
    qcow2_put_be64(new + HDR_BACKING_OFFSET, name_len ? b.len : 0);
    qcow2_put_be32(new + HDR_BACKING_SIZE, name_len);
    if (s->version >= 3)
        qcow2_put_be64(new + QCOW2_HDR_AUTOCLEAR, e->autoclear);
    return bdrv_pwrite(s->file, 0, s->cluster_size, new, 0);
}

/* The image names @name (in @format) as its backing file from now on. */
int qcow2_change_backing_file(BlockNode *bs, const char *name,
                              const char *format)
{
    Qcow2State *s = bs->opaque;
    Qcow2HeaderEdit e = {
        .autoclear = s->autoclear,
        .backing_file = name,
        .backing_format = format,
    };
    int ret;

    /* QEMU's limits: 1023 bytes of name, a 15-character format field */
    if ((name && strlen(name) > 1023) || (format && strlen(format) > 15))
        return -EINVAL;
    g_mutex_lock(&s->lock);
    ret = qcow2_flush_metadata(bs);
    if (ret == 0)
        ret = qcow2_rewrite_header(bs, &e);
    if (ret == 0)
        ret = bdrv_flush(s->file);
    if (ret == 0) {
        g_free(s->backing_file);
        g_free(s->backing_format);
        s->backing_file = g_strdup(name);
        s->backing_format = name ? g_strdup(format) : NULL;
    }
    g_mutex_unlock(&s->lock);
    return ret;
}
