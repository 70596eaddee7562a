/*
 * fuzz-bitmap.c - the qcow2 bitmaps extension: its directory, the
 * bitmap tables and data, as the loader (block/qcow2-bitmap.c) reads
 * them at open, marks them in use (writable), counts their clusters
 * (repair of a dirty image) and stores them back at close.
 *
 * The input is spliced into a sound image made here: 512-byte clusters,
 * header, refcount table, one refcount block, an empty L1 table, and the
 * bitmaps extension pointing at cluster 4, where the input's payload
 * goes (the directory, then whatever the directory points at).
 *   byte 0       bit 0: open writable; bit 1: mark the image dirty
 *   bytes 1-2    nb_bitmaps (big-endian)
 *   bytes 3-4    the directory's size (big-endian)
 *   bytes 5-     clusters 4 and on (at most 250 clusters)
 */
#include "block/block.h"
#include "tests/fuzz/fuzz.h"

#include <string.h>
#include <unistd.h>

#define CLUSTER 512
#define PAYLOAD_CLUSTER 4
#define MAX_CLUSTERS 254 /* one refcount block of 16-bit entries, less */

static void put32(uint8_t *p, uint32_t v)
{
    v = GUINT32_TO_BE(v);
    memcpy(p, &v, 4);
}

static void put64(uint8_t *p, uint64_t v)
{
    v = GUINT64_TO_BE(v);
    memcpy(p, &v, 8);
}

/* The image around @payload; its length in *@len. */
static uint8_t *make_image(const uint8_t *in, size_t size, size_t *len)
{
    size_t payload = MIN(size - 5, (size_t)(MAX_CLUSTERS - PAYLOAD_CLUSTER) *
                                       CLUSTER);
    size_t clusters = PAYLOAD_CLUSTER + (payload + CLUSTER - 1) / CLUSTER;
    uint8_t *img = g_malloc0(clusters * CLUSTER);
    uint8_t *h = img;

    put32(h, 0x514649fb);               /* magic */
    put32(h + 4, 3);                    /* version */
    put32(h + 20, 9);                   /* cluster_bits */
    put64(h + 24, 1 << 20);             /* size */
    put32(h + 36, 32);                  /* l1_size */
    put64(h + 40, 3 * CLUSTER);         /* l1_table_offset */
    put64(h + 48, 1 * CLUSTER);         /* refcount_table_offset */
    put32(h + 56, 1);                   /* refcount_table_clusters */
    put64(h + 72, (in[0] & 2) ? 1 : 0); /* incompatible: dirty */
    put64(h + 88, 1);                   /* autoclear: bitmaps */
    put32(h + 96, 4);                   /* refcount_order */
    put32(h + 100, 104);                /* header_length */
    put32(h + 104, 0x23852875);         /* the bitmaps extension */
    put32(h + 108, 24);
    put32(h + 112, (uint32_t)in[1] << 8 | in[2]);
    put64(h + 120, (uint64_t)in[3] << 8 | in[4]);
    put64(h + 128, PAYLOAD_CLUSTER * CLUSTER);
    put64(img + CLUSTER, 2 * CLUSTER);  /* the refcount block */
    for (size_t c = 0; c < clusters; c++)
        img[2 * CLUSTER + 2 * c + 1] = 1;
    memcpy(img + PAYLOAD_CLUSTER * CLUSTER, in + 5, payload);
    *len = clusters * CLUSTER;
    return img;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    g_autoptr(GHashTable) o = NULL;
    g_autofree uint8_t *img = NULL;
    size_t len;
    char path[64];
    BlockNode *bs;
    int fd;

    if (size < 5)
        return 0;
    img = make_image(data, size, &len);
    fd = fuzz_memfd(img, len, path);
    if (fd < 0)
        return 0;
    o = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_hash_table_insert(o, g_strdup("driver"), g_strdup("qcow2"));
    g_hash_table_insert(o, g_strdup("read-only"),
                        g_strdup(data[0] & 1 ? "off" : "on"));
    g_hash_table_insert(o, g_strdup("file.driver"), g_strdup("file"));
    g_hash_table_insert(o, g_strdup("file.filename"), g_strdup(path));
    g_hash_table_insert(o, g_strdup("file.locking"), g_strdup("off"));
    bs = bdrv_open(o, NULL);
    if (bs) {
        static const char buf[4096] = { 1 };
        /* A write marks the loaded bitmaps; close stores them. */
        if (data[0] & 1)
            bdrv_pwrite(bs, 0, sizeof(buf), buf, 0);
        bdrv_unref(bs);
    }
    close(fd);
    return 0;
}
