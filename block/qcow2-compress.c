/*
 * qcow2-compress.c - reading zlib (raw deflate) compressed clusters.
 *
 * Design notes.
 *
 * The compressed cluster descriptor (qcow2.txt) gives the host offset in
 * bits 0..x-1 and, in bits x..61, the number of 512-byte sectors used
 * beyond the one holding the offset, with x = 62 - (cluster_bits - 8).  So
 * the data is at most (count + 1) * 512 - (offset % 512) bytes; it is
 * known only to sector precision, and the last sector may stop short at
 * the end of the file (QEMU writes exactly the compressed bytes), so the
 * read is clamped to the file and decompression stops once a whole cluster
 * came out.  The stream is raw deflate (windowBits -12), no zlib header.
 *
 * Each call decompresses the whole cluster into a scratch buffer and copies
 * out the part asked for: simple and thread safe (no shared state).  The
 * only trust placed in the image is bounded: a descriptor pointing past the
 * end of the file or a stream that does not yield a full cluster is -EIO.
 */
#include "qcow2.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* Inflates @src into exactly @dlen bytes of @dst. */
static int inflate_cluster(const void *src, size_t slen, void *dst,
                           size_t dlen)
{
    z_stream strm = { 0 };
    int ret;

    if (inflateInit2(&strm, -12) != Z_OK)
        return -ENOMEM;
    strm.next_in = (Bytef *)src;
    strm.avail_in = slen;
    strm.next_out = dst;
    strm.avail_out = dlen;
    ret = inflate(&strm, Z_FINISH);
    inflateEnd(&strm);
    /* Z_BUF_ERROR is fine once the cluster is full: the input length is
     * only known to a sector, so trailing bytes may remain unread. */
    if ((ret == Z_STREAM_END || ret == Z_BUF_ERROR) && strm.avail_out == 0)
        return 0;
    return -EIO;
}

int qcow2_read_compressed(BlockNode *bs, uint64_t l2_entry,
                          uint32_t offset_in_cluster, uint32_t bytes,
                          void *buf)
{
    Qcow2State *s = bs->opaque;
    uint64_t coffset, csize;
    void *cbuf, *out;
    int ret;

    qcow2_entry_extent(s, l2_entry, &coffset, &csize);
    if (coffset >= (uint64_t)s->file_length)
        return -EIO;
    csize = MIN(csize, (uint64_t)s->file_length - coffset);
    cbuf = g_try_malloc(csize);
    out = g_try_malloc(s->cluster_size);
    if (!cbuf || !out) {
        ret = -ENOMEM;
        goto out;
    }
    ret = bdrv_pread(s->file, coffset, csize, cbuf);
    if (ret == 0)
        ret = inflate_cluster(cbuf, csize, out, s->cluster_size);
    if (ret == 0)
        memcpy(buf, (char *)out + offset_in_cluster, bytes);
out:
    g_free(cbuf);
    g_free(out);
    return ret;
}
