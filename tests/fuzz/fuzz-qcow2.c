/*
 * fuzz-qcow2.c - a qcow2 image from the fuzzer, held in memory (a memfd
 * opened by the file driver), opened and used through the block layer.
 *
 * Input: one byte of mode, then the image.  Mode bit 0: open writable
 * (which repairs an image marked dirty, and marks bitmaps in use); the
 * other bits seed the requests.  Then: block status over the disk, reads
 * of its first MiB, and when writable a few writes, write-zeroes and
 * discards at offsets the seed picks, each read back, and a flush.
 * Whatever the image says, nothing may crash, leak, or hang.
 */
#include "block/block.h"
#include "tests/fuzz/fuzz.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SPAN (1 << 20)        /* guest bytes the requests touch */
#define MAX_REQUEST (128 << 10)
#define STATUS_CALLS 64

static uint32_t next(uint32_t *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return *seed >> 8;
}

static BlockNode *open_image(const char *path, bool writable)
{
    g_autoptr(GHashTable) o =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);

    g_hash_table_insert(o, g_strdup("driver"), g_strdup("qcow2"));
    g_hash_table_insert(o, g_strdup("read-only"),
                        g_strdup(writable ? "off" : "on"));
    g_hash_table_insert(o, g_strdup("backing"), g_strdup(""));
    g_hash_table_insert(o, g_strdup("file.driver"), g_strdup("file"));
    g_hash_table_insert(o, g_strdup("file.filename"), g_strdup(path));
    g_hash_table_insert(o, g_strdup("file.locking"), g_strdup("off"));
    return bdrv_open(o, NULL);
}

static void status_all(BlockNode *bs, int64_t len)
{
    int64_t off = 0;

    for (int i = 0; i < STATUS_CALLS && off < len; i++) {
        int64_t n;
        if (bdrv_block_status(bs, off, len - off, &n) < 0 || n <= 0)
            return;
        off += n;
    }
}

/* An acknowledged write that reads back wrong: the worst outcome. */
static void lost(int64_t off, int64_t n, const char *buf, const char *back)
{
    int64_t i = 0;

    while (buf[i] == back[i])
        i++;
    fprintf(stderr, "fuzz-qcow2: wrote %" PRId64 " bytes at %" PRId64
            ", byte %" PRId64 " reads back %#x, not %#x\n", n, off, i,
            (unsigned char)back[i], (unsigned char)buf[i]);
    abort();
}

static void requests(BlockNode *bs, int64_t span, uint32_t seed,
                     char *buf, char *back)
{
    for (int i = 0; i < 8; i++) {
        int64_t off = next(&seed) % span;
        int64_t n = MIN(1 + next(&seed) % MAX_REQUEST, span - off);
        memset(buf, 'a' + i, n);
        switch (next(&seed) % 4) {
        case 0:
        case 1:
            if (bdrv_pwrite(bs, off, n, buf, 0) == 0 &&
                bdrv_pread(bs, off, n, back) == 0 && memcmp(buf, back, n))
                lost(off, n, buf, back);
            break;
        case 2:
            bdrv_pwrite_zeroes(bs, off, n, next(&seed) & 1 ? BDRV_REQ_MAY_UNMAP
                                                           : 0);
            break;
        case 3:
            bdrv_pdiscard(bs, off, n);
            break;
        }
    }
    bdrv_flush(bs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64];
    BlockNode *bs;
    int64_t len, span;
    uint8_t mode;
    int fd;

    if (size < 1)
        return 0;
    mode = data[0];
    fd = fuzz_memfd(data + 1, size - 1, path);
    if (fd < 0)
        return 0;
    bs = open_image(path, mode & 1);
    if (bs) {
        g_autofree char *buf = g_malloc(MAX_REQUEST);
        g_autofree char *back = g_malloc(MAX_REQUEST);
        len = bdrv_getlength(bs);
        span = MIN(len, SPAN);
        status_all(bs, len);
        for (int64_t off = 0; off < span; off += MAX_REQUEST)
            bdrv_pread(bs, off, MIN(MAX_REQUEST, span - off), buf);
        if ((mode & 1) && span > 0)
            requests(bs, span, mode >> 1, buf, back);
        bdrv_unref(bs);
    }
    close(fd);
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    bdrv_verbose = 0;
    return 0;
}
