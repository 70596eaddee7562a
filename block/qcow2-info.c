/*
 * qcow2-info.c - what query-named-block-nodes reports of a qcow2 image
 * (QEMU's qcow2_get_specific_info): read from the header and the bitmap
 * directory as they are on disk now, as QEMU does, so that a change made
 * since open (x-blockdev-amend) shows.
 */
#include "qcow2.h"

#include <string.h>

/* Header fields past the version 2 header. */
#define HDR_COMPATIBLE 80
#define HDR_REFCOUNT_ORDER 96
#define HDR_COMPRESSION_TYPE 104

void qcow2_get_image_info(BlockNode *bs, BdrvImageInfo *info)
{
    Qcow2State *s = bs->opaque;
    uint8_t hdr[HDR_COMPRESSION_TYPE + 1] = { 0 };
    uint64_t incompat = s->incompatible, compat = 0;
    uint32_t order = 4;

    info->cluster_size = s->cluster_size;
    info->encrypted = s->crypto_header_length > 0;
    info->qcow2 = true;
    info->version = s->version;
    info->compression_type = "zlib";
    if (bdrv_pread(s->file, 0, MIN(sizeof(hdr), MAX(s->header_length, 72u)),
                   hdr) == 0 && s->version >= 3) {
        uint64_t v;
        uint32_t o;
        memcpy(&v, hdr + QCOW2_HDR_INCOMPATIBLE, 8);
        incompat = GUINT64_FROM_BE(v);
        memcpy(&v, hdr + HDR_COMPATIBLE, 8);
        compat = GUINT64_FROM_BE(v);
        memcpy(&o, hdr + HDR_REFCOUNT_ORDER, 4);
        order = GUINT32_FROM_BE(o);
        if (s->header_length > HDR_COMPRESSION_TYPE &&
            hdr[HDR_COMPRESSION_TYPE] == 1)
            info->compression_type = "zstd";
    }
    info->lazy_refcounts = compat & QCOW2_COMPAT_LAZY_REFCOUNTS;
    info->corrupt = (incompat & QCOW2_INCOMPAT_CORRUPT) || qcow2_is_corrupt(s);
    info->extended_l2 = incompat & QCOW2_INCOMPAT_EXTL2;
    info->refcount_bits = order < 7 ? 1u << order : 0;
    info->bitmaps = qcow2_bitmaps_info(bs);
}
