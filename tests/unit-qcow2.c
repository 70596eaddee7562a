/*
 * unit-qcow2.c - the qcow2 driver without a server: many threads reading a
 * chain of 512-byte-cluster images at once through an L2 cache of two
 * tables (constant eviction, races on misses) must all read exactly what
 * qemu-img converts the chain to; block status over the whole image stays
 * consistent with the data; l2-cache-size is validated.  Then the same
 * chain written by many threads at once, each owning interleaved 256-byte
 * stripes so that every cluster is shared by two threads (in-flight
 * allocation races, copy-on-write from the backing, concurrent readers,
 * cache eviction), must hold exactly what was written and pass qemu-img
 * check.  Images are made with qemu-img (skipped without it).
 */
#include "block/block.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IMG_SIZE (8 * 1024 * 1024)
#define THREADS 8
#define READS_PER_THREAD 400

static char *tmpdir;
static char *reference; /* the chain converted to raw */

static void run(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static void run(const char *fmt, ...)
{
    g_autofree char *cmd = NULL;
    va_list ap;

    va_start(ap, fmt);
    cmd = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_assert_cmpint(system(cmd), ==, 0);
}

static BlockNode *open_qcow2_rw(const char *path, const char *cache,
                                bool writable, GError **errp)
{
    g_autoptr(GHashTable) o =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);

    g_hash_table_insert(o, g_strdup("driver"), g_strdup("qcow2"));
    g_hash_table_insert(o, g_strdup("read-only"),
                        g_strdup(writable ? "off" : "on"));
    g_hash_table_insert(o, g_strdup("file.driver"), g_strdup("file"));
    g_hash_table_insert(o, g_strdup("file.filename"), g_strdup(path));
    if (cache)
        g_hash_table_insert(o, g_strdup("l2-cache-size"), g_strdup(cache));
    return bdrv_open(o, errp);
}

static BlockNode *open_qcow2(const char *path, const char *cache,
                             GError **errp)
{
    return open_qcow2_rw(path, cache, false, errp);
}

static char *make_chain(void)
{
    g_autofree char *base = g_build_filename(tmpdir, "base.qcow2", NULL);
    char *top = g_build_filename(tmpdir, "top.qcow2", NULL);
    g_autofree char *ref = g_build_filename(tmpdir, "ref.raw", NULL);
    gsize len;

    run("qemu-img create -q -f qcow2 -o cluster_size=512 '%s' 8M", base);
    run("qemu-io -f qcow2 -c 'write -P 0x11 0 3M' -c 'write -P 0x22 5M 3M' "
        "-c 'write -z 1M 64K' '%s' >/dev/null", base);
    run("qemu-img create -q -f qcow2 -o cluster_size=512 -b base.qcow2 "
        "-F qcow2 '%s' 8M", top);
    run("qemu-io -f qcow2 -c 'write -P 0x33 2M 4M' -c 'write -z 7M 4K' "
        "-c 'write -P 0x44 7777 100000' '%s' >/dev/null", top);
    run("qemu-img convert -f qcow2 -O raw '%s' '%s'", top, ref);
    g_clear_pointer(&reference, g_free);
    g_assert_true(g_file_get_contents(ref, &reference, &len, NULL));
    g_assert_cmpuint(len, ==, IMG_SIZE);
    return top;
}

typedef struct {
    BlockNode *bs;
    guint seed;
    int failures;
} Reader;

static gpointer reader_thread(gpointer opaque)
{
    Reader *r = opaque;
    GRand *rnd = g_rand_new_with_seed(r->seed);
    char *buf = g_malloc(256 * 1024);

    for (int i = 0; i < READS_PER_THREAD; i++) {
        int64_t off = g_rand_int_range(rnd, 0, IMG_SIZE);
        int64_t n = g_rand_int_range(rnd, 1, 256 * 1024);
        n = MIN(n, IMG_SIZE - off); /* MIN evaluates twice */
        int ret = bdrv_pread(r->bs, off, n, buf);
        if (ret != 0 || memcmp(buf, reference + off, n) != 0) {
            g_test_message("read %" G_GINT64_FORMAT "+%" G_GINT64_FORMAT
                           ": %s", off, n, ret ? g_strerror(-ret)
                                               : "wrong data");
            r->failures++;
        }
    }
    g_free(buf);
    g_rand_free(rnd);
    return NULL;
}

static void test_concurrent_reads(void)
{
    g_autofree char *top = make_chain();
    g_autoptr(GError) err = NULL;
    BlockNode *bs = open_qcow2(top, "1024", &err);
    GThread *threads[THREADS];
    Reader readers[THREADS];

    g_assert_no_error(err);
    g_assert_cmpint(bdrv_getlength(bs), ==, IMG_SIZE);
    for (int i = 0; i < THREADS; i++) {
        readers[i] = (Reader){ .bs = bs, .seed = 1000 + i };
        threads[i] = g_thread_new("reader", reader_thread, &readers[i]);
    }
    for (int i = 0; i < THREADS; i++) {
        g_thread_join(threads[i]);
        g_assert_cmpint(readers[i].failures, ==, 0);
    }
    /* Block status: every extent reported as zero reads as zeroes, and
     * the extents tile the image. */
    for (int64_t off = 0, pnum; off < IMG_SIZE; off += pnum) {
        int st = bdrv_block_status(bs, off, IMG_SIZE - off, &pnum);
        g_assert_cmpint(st, >=, 0);
        g_assert_cmpint(pnum, >, 0);
        if (st & BDRV_BLOCK_ZERO)
            for (int64_t i = 0; i < pnum; i++)
                g_assert_cmpint(reference[off + i], ==, 0);
    }
    bdrv_unref(bs);
}

static void test_cache_option(void)
{
    g_autofree char *img = g_build_filename(tmpdir, "opt.qcow2", NULL);
    g_autoptr(GError) err = NULL;
    BlockNode *bs;

    run("qemu-img create -q -f qcow2 '%s' 1M", img);
    bs = open_qcow2(img, "lots", &err);
    g_assert_null(bs);
    g_assert_nonnull(strstr(err->message, "l2-cache-size"));
    g_clear_error(&err);
    bs = open_qcow2(img, "0", &err); /* 0: the default */
    g_assert_no_error(err);
    bdrv_unref(bs);
}

#define STRIPE 256
#define WRITES_PER_THREAD 600

typedef struct {
    BlockNode *bs;
    int index;
    char *expect;   /* the image as it must end up; own stripes only */
    int failures;
} Writer;

/* Thread @index owns the stripes i with i % THREADS == index. */
static gpointer writer_thread(gpointer opaque)
{
    Writer *w = opaque;
    GRand *rnd = g_rand_new_with_seed(2000 + w->index);
    char *buf = g_malloc(4 * STRIPE);
    int stripes = IMG_SIZE / STRIPE / THREADS;

    for (int i = 0; i < WRITES_PER_THREAD; i++) {
        int64_t off = ((int64_t)g_rand_int_range(rnd, 0, stripes) * THREADS +
                       w->index) * STRIPE;
        int64_t n = g_rand_int_range(rnd, 1, STRIPE + 1);
        int ret;
        if (g_rand_int_range(rnd, 0, 5) == 0) {
            ret = bdrv_pwrite_zeroes(w->bs, off, n, 0);
            memset(w->expect + off, 0, n);
        } else {
            for (int64_t j = 0; j < n; j++)
                buf[j] = g_rand_int(rnd);
            ret = bdrv_pwrite(w->bs, off, n, buf, 0);
            memcpy(w->expect + off, buf, n);
        }
        /* Our stripe reads back as written, whatever the neighbours in
         * the same cluster do meanwhile. */
        if (ret == 0)
            ret = bdrv_pread(w->bs, off, n, buf);
        if (ret != 0 || memcmp(buf, w->expect + off, n) != 0) {
            g_test_message("writer %d at %" G_GINT64_FORMAT ": %s", w->index,
                           off, ret ? g_strerror(-ret) : "wrong data");
            w->failures++;
        }
    }
    g_free(buf);
    g_rand_free(rnd);
    return NULL;
}

static void check_image(const char *path, const char *expect)
{
    g_autoptr(GError) err = NULL;
    BlockNode *bs = open_qcow2(path, NULL, &err);
    g_autofree char *data = g_malloc(IMG_SIZE);

    g_assert_no_error(err);
    g_assert_cmpint(bdrv_pread(bs, 0, IMG_SIZE, data), ==, 0);
    g_assert_true(memcmp(data, expect, IMG_SIZE) == 0);
    bdrv_unref(bs);
    run("qemu-img check -q '%s'", path);
}

static void test_concurrent_writes(void)
{
    g_autofree char *top = make_chain();
    g_autoptr(GError) err = NULL;
    BlockNode *bs = open_qcow2_rw(top, "1024", true, &err);
    g_autofree char *expect = g_memdup2(reference, IMG_SIZE);
    GThread *threads[THREADS];
    Writer writers[THREADS];

    g_assert_no_error(err);
    for (int i = 0; i < THREADS; i++) {
        writers[i] = (Writer){ .bs = bs, .index = i, .expect = expect };
        threads[i] = g_thread_new("writer", writer_thread, &writers[i]);
    }
    for (int i = 0; i < THREADS; i++) {
        g_thread_join(threads[i]);
        g_assert_cmpint(writers[i].failures, ==, 0);
    }
    g_assert_cmpint(bdrv_flush(bs), ==, 0);
    bdrv_unref(bs);
    check_image(top, expect);
}

int main(int argc, char **argv)
{
    int ret;

    g_test_init(&argc, &argv, NULL);
    if (system("qemu-img --version >/dev/null 2>&1") != 0 ||
        system("qemu-io --version >/dev/null 2>&1") != 0) {
        printf("unit-qcow2: skipped: qemu-img or qemu-io missing\n");
        return 77;
    }
    tmpdir = g_dir_make_tmp("snapnbd-unit-XXXXXX", NULL);
    g_test_add_func("/qcow2/concurrent-reads", test_concurrent_reads);
    g_test_add_func("/qcow2/l2-cache-size", test_cache_option);
    g_test_add_func("/qcow2/concurrent-writes", test_concurrent_writes);
    ret = g_test_run();
    g_free(reference);
    {
        g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", tmpdir);
        if (system(cmd) != 0)
            ret = ret ? ret : 1;
    }
    g_free(tmpdir);
    return ret;
}
