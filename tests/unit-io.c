/*
 * unit-io.c - the request path of block/io.c without a server: before-write
 * notifiers (veto, delay, removal), read-modify-write under O_DIRECT,
 * serialisation of overlapping unaligned writes, write-zeroes fallback and
 * detect-zeroes.
 */
#include "block/block.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define IMG_SIZE (4 * 1024 * 1024)

static char *tmpdir;

static char *make_image(const char *name, int fill)
{
    char *path = g_build_filename(tmpdir, name, NULL);
    char *data = g_malloc(IMG_SIZE);
    GError *err = NULL;

    int fd;

    memset(data, fill, IMG_SIZE);
    g_assert_true(g_file_set_contents(path, data, IMG_SIZE, &err));
    g_free(data);
    /* Written back before O_DIRECT use: dirty pages over fresh extents
     * must not mix with direct I/O. */
    fd = open(path, O_RDONLY);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(fsync(fd), ==, 0);
    close(fd);
    return path;
}

static BlockNode *open_raw(const char *path, const char *k1, const char *v1)
{
    g_autoptr(GHashTable) o =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_autoptr(GError) err = NULL;
    BlockNode *bs;

    g_hash_table_insert(o, g_strdup("driver"), g_strdup("raw"));
    g_hash_table_insert(o, g_strdup("file.driver"), g_strdup("file"));
    g_hash_table_insert(o, g_strdup("file.filename"), g_strdup(path));
    if (k1)
        g_hash_table_insert(o, g_strdup(k1), g_strdup(v1));
    bs = bdrv_open(o, &err);
    if (!bs)
        g_test_message("open failed: %s", err->message);
    return bs;
}

/* --- notifiers --------------------------------------------------------- */

typedef struct {
    int calls;
    BdrvWriteKind last_kind;
    int64_t last_offset, last_bytes;
    char saved[8192];        /* old data copied before the write */
    int veto;                /* errno to refuse with, or 0 */
} NotifyState;

static int before_write(BlockNode *bs, BdrvWriteKind kind, int64_t offset,
                        int64_t bytes, void *opaque)
{
    NotifyState *s = opaque;

    s->calls++;
    s->last_kind = kind;
    s->last_offset = offset;
    s->last_bytes = bytes;
    if (s->veto)
        return -s->veto;
    /* Copy-before-write: the old bytes are still there. */
    if (bytes <= (int64_t)sizeof(s->saved))
        g_assert_cmpint(bdrv_pread(bs, offset, bytes, s->saved), ==, 0);
    return 0;
}

static void test_notifier_copy_before_write(void)
{
    g_autofree char *path = make_image("cbw.img", 0x11);
    BlockNode *bs = open_raw(path, NULL, NULL);
    NotifyState s = { 0 };
    BlockNotifier *n;
    char buf[4096], check[4096];

    g_assert_nonnull(bs);
    n = bdrv_add_before_write_notifier(bs, before_write, &s);
    memset(buf, 0x22, sizeof(buf));
    g_assert_cmpint(bdrv_pwrite(bs, 8192, 4096, buf, 0), ==, 0);
    g_assert_cmpint(s.calls, ==, 1);
    g_assert_cmpint(s.last_kind, ==, BDRV_WRITE);
    g_assert_cmpint(s.last_offset, ==, 8192);
    g_assert_cmpint(s.last_bytes, ==, 4096);
    for (int i = 0; i < 4096; i++)
        g_assert_cmpint(s.saved[i], ==, 0x11);
    g_assert_cmpint(bdrv_pread(bs, 8192, 4096, check), ==, 0);
    g_assert_cmpint(memcmp(check, buf, 4096), ==, 0);

    g_assert_cmpint(bdrv_pwrite_zeroes(bs, 0, 512, 0), ==, 0);
    g_assert_cmpint(s.last_kind, ==, BDRV_WRITE_ZEROES);
    g_assert_cmpint(bdrv_pdiscard(bs, 0, 512), ==, 0);
    g_assert_cmpint(s.last_kind, ==, BDRV_DISCARD);
    g_assert_cmpint(s.calls, ==, 3);

    bdrv_remove_before_write_notifier(bs, n);
    g_assert_cmpint(bdrv_pwrite(bs, 0, 4096, buf, 0), ==, 0);
    g_assert_cmpint(s.calls, ==, 3); /* removed: not called again */
    bdrv_unref(bs);
}

static void test_notifier_veto(void)
{
    g_autofree char *path = make_image("veto.img", 0x33);
    BlockNode *bs = open_raw(path, NULL, NULL);
    NotifyState s = { .veto = EACCES };
    BlockNotifier *n;
    char buf[4096];

    g_assert_nonnull(bs);
    n = bdrv_add_before_write_notifier(bs, before_write, &s);
    memset(buf, 0x44, sizeof(buf));
    g_assert_cmpint(bdrv_pwrite(bs, 0, 4096, buf, 0), ==, -EACCES);
    g_assert_cmpint(bdrv_pwrite_zeroes(bs, 0, 4096, 0), ==, -EACCES);
    g_assert_cmpint(bdrv_pread(bs, 0, 4096, buf), ==, 0);
    for (int i = 0; i < 4096; i++)
        g_assert_cmpint(buf[i], ==, 0x33); /* nothing reached the file */
    bdrv_remove_before_write_notifier(bs, n);
    bdrv_unref(bs);
}

/* A notifier that blocks until released delays the write. */
typedef struct {
    GMutex lock;
    GCond cond;
    bool entered, released;
} Gate;

static int gate_notifier(BlockNode *bs, BdrvWriteKind kind, int64_t offset,
                         int64_t bytes, void *opaque)
{
    Gate *g = opaque;

    g_mutex_lock(&g->lock);
    g->entered = true;
    g_cond_broadcast(&g->cond);
    while (!g->released)
        g_cond_wait(&g->cond, &g->lock);
    g_mutex_unlock(&g->lock);
    return 0;
}

static BlockNode *delay_bs;

static gpointer delayed_writer(gpointer data)
{
    char buf[512];

    memset(buf, 0x66, sizeof(buf));
    return GINT_TO_POINTER(bdrv_pwrite(delay_bs, 0, 512, buf, 0));
}

static void test_notifier_delay(void)
{
    g_autofree char *path = make_image("delay.img", 0x55);
    Gate g = { 0 };
    BlockNotifier *n;
    GThread *t;
    char buf[512];

    delay_bs = open_raw(path, NULL, NULL);
    g_assert_nonnull(delay_bs);
    n = bdrv_add_before_write_notifier(delay_bs, gate_notifier, &g);
    t = g_thread_new("writer", delayed_writer, NULL);
    g_mutex_lock(&g.lock);
    while (!g.entered)
        g_cond_wait(&g.cond, &g.lock);
    g_mutex_unlock(&g.lock);
    /* The write is held in the notifier: the old data is still there. */
    g_assert_cmpint(bdrv_pread(delay_bs, 0, 512, buf), ==, 0);
    g_assert_cmpint(buf[0], ==, 0x55);
    g_mutex_lock(&g.lock);
    g.released = true;
    g_cond_broadcast(&g.cond);
    g_mutex_unlock(&g.lock);
    g_assert_cmpint(GPOINTER_TO_INT(g_thread_join(t)), ==, 0);
    g_assert_cmpint(bdrv_pread(delay_bs, 0, 512, buf), ==, 0);
    g_assert_cmpint(buf[0], ==, 0x66);
    bdrv_remove_before_write_notifier(delay_bs, n);
    bdrv_unref(delay_bs);
}

/* --- alignment and serialisation --------------------------------------- */

static BlockNode *direct_bs;

/* Each thread owns every 8th byte of the first 4 KiB and writes it one byte
 * at a time: unserialised read-modify-write would lose updates. */
static gpointer byte_writer(gpointer data)
{
    int id = GPOINTER_TO_INT(data);

    for (int round = 0; round < 20; round++) {
        for (int off = id; off < 4096; off += 8 * 16) {
            unsigned char v = (unsigned char)(id + round);
            g_assert_cmpint(bdrv_pwrite(direct_bs, off, 1, &v, 0), ==, 0);
        }
    }
    return NULL;
}

static void test_unaligned_serialised(void)
{
    g_autofree char *path = make_image("direct.img", 0);
    GThread *threads[8];
    unsigned char buf[4096];

    direct_bs = open_raw(path, "cache.direct", "on");
    if (!direct_bs) {
        g_test_skip("O_DIRECT is not supported here");
        return;
    }
    g_assert_cmpuint(bdrv_limits(direct_bs)->request_alignment, >=, 512);
    for (int i = 0; i < 8; i++)
        threads[i] = g_thread_new("w", byte_writer, GINT_TO_POINTER(i));
    for (int i = 0; i < 8; i++)
        g_thread_join(threads[i]);
    g_assert_cmpint(bdrv_pread(direct_bs, 0, 4096, buf), ==, 0);
    for (int off = 0; off < 4096; off++) {
        int id = off % 8;
        bool owned = off % (8 * 16) == id;
        g_assert_cmpint(buf[off], ==, owned ? id + 19 : 0);
    }
    /* An unaligned read in the middle of a block, through a bounce. */
    g_assert_cmpint(bdrv_pread(direct_bs, 1, 3, buf), ==, 0);
    g_assert_cmpint(buf[0], ==, 1 + 19); /* offset 1 is thread 1's */
    g_assert_cmpint(buf[2], ==, 3 + 19);
    bdrv_unref(direct_bs);
}

static void test_write_zeroes_and_detect(void)
{
    g_autofree char *path = make_image("zero.img", 0x77);
    BlockNode *bs = open_raw(path, "detect-zeroes", "on");
    char buf[8192];
    int64_t pnum;

    g_assert_nonnull(bs);
    /* Unaligned edges and an aligned middle all read back as zero. */
    g_assert_cmpint(bdrv_pwrite_zeroes(bs, 100, 5000, 0), ==, 0);
    g_assert_cmpint(bdrv_pread(bs, 0, 8192, buf), ==, 0);
    for (int i = 0; i < 8192; i++)
        g_assert_cmpint(buf[i], ==, (i >= 100 && i < 5100) ? 0 : 0x77);
    /* detect-zeroes=on turns a zero buffer into a write-zeroes. */
    memset(buf, 0, sizeof(buf));
    g_assert_cmpint(bdrv_pwrite(bs, 65536, 8192, buf, 0), ==, 0);
    g_assert_cmpint(bdrv_block_status(bs, 0, IMG_SIZE, &pnum), >=, 0);
    g_assert_cmpint(pnum, >, 0);
    g_assert_cmpint(bdrv_pread(bs, 65536, 8192, buf), ==, 0);
    g_assert_true(buffer_is_zero(buf, 8192));
    /* Out of range requests are refused. */
    g_assert_cmpint(bdrv_pread(bs, IMG_SIZE - 1, 2, buf), ==, -EINVAL);
    g_assert_cmpint(bdrv_pwrite(bs, -1, 1, buf, 0), ==, -EINVAL);
    bdrv_unref(bs);
}

/* The cached data extent must not outlive a discard or write-zeroes. */
static void test_status_cache_dropped(void)
{
    g_autofree char *path = make_image("cache.img", 0x12);
    BlockNode *bs = open_raw(path, "discard", "unmap");
    int64_t pnum;
    int st;

    g_assert_nonnull(bs);
    st = bdrv_block_status(bs, 0, IMG_SIZE, &pnum);
    g_assert_cmpint(st & BDRV_BLOCK_DATA, !=, 0);
    g_assert_cmpint(pnum, ==, IMG_SIZE); /* now cached */
    g_assert_cmpint(bdrv_pdiscard(bs, 65536, 65536), ==, 0);
    st = bdrv_block_status(bs, 65536, 65536, &pnum);
    g_assert_cmpint(st & BDRV_BLOCK_DATA, ==, 0);
    g_assert_cmpint(st & BDRV_BLOCK_ZERO, !=, 0);
    st = bdrv_block_status(bs, 0, IMG_SIZE, &pnum);
    g_assert_cmpint(st & BDRV_BLOCK_DATA, !=, 0);
    g_assert_cmpint(pnum, ==, 65536);
    g_assert_cmpint(bdrv_pwrite_zeroes(bs, 1 << 20, 1 << 20,
                                       BDRV_REQ_MAY_UNMAP), ==, 0);
    st = bdrv_block_status(bs, 1 << 20, 4096, &pnum);
    g_assert_cmpint(st & BDRV_BLOCK_ZERO, !=, 0);
    bdrv_unref(bs);
}

static BlockNode *open_opts(const char *const *kv)
{
    g_autoptr(GHashTable) o =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_autoptr(GError) err = NULL;
    BlockNode *bs;

    for (; kv[0]; kv += 2)
        g_hash_table_insert(o, g_strdup(kv[0]), g_strdup(kv[1]));
    bs = bdrv_open(o, &err);
    if (!bs)
        g_test_message("open failed: %s", err->message);
    return bs;
}

static void test_null_driver(void)
{
    const char *const opts[] = { "driver", "null-co", "size", "1048576",
                                 NULL };
    BlockNode *bs = open_opts(opts);
    char buf[4096];
    int64_t pnum;

    g_assert_nonnull(bs);
    g_assert_cmpint(bdrv_getlength(bs), ==, 1048576);
    memset(buf, 0x5a, sizeof(buf));
    g_assert_cmpint(bdrv_pwrite(bs, 0, 4096, buf, 0), ==, 0);
    g_assert_cmpint(bdrv_pread(bs, 0, 4096, buf), ==, 0);
    g_assert_true(buffer_is_zero(buf, sizeof(buf))); /* writes forgotten */
    g_assert_cmpint(bdrv_block_status(bs, 0, 1048576, &pnum) &
                        BDRV_BLOCK_ZERO, !=, 0);
    g_assert_cmpint(pnum, ==, 1048576);
    bdrv_unref(bs);
}

/* raw's offset and size make a window; create makes a file of the size. */
static void test_raw_window_and_create(void)
{
    g_autofree char *path = g_build_filename(tmpdir, "created.img", NULL);
    g_autoptr(GHashTable) create_opts =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_autoptr(GError) err = NULL;
    const char *const opts[] = { "driver", "raw", "file.driver", "file",
                                 "file.filename", path, "offset", "4096",
                                 "size", "8192", NULL };
    const char *const too_big[] = { "driver", "raw", "file.driver", "file",
                                    "file.filename", path, "offset", "4096",
                                    "size", "1048576", NULL };
    BlockNode *bs;
    char buf[8192], check[8192];

    g_hash_table_insert(create_opts, g_strdup("nocow"), g_strdup("on"));
    g_assert_cmpint(bdrv_create("file", path, 65536, create_opts, &err), ==,
                    0);
    bs = open_opts(opts);
    g_assert_nonnull(bs);
    g_assert_cmpint(bdrv_getlength(bs), ==, 8192);
    memset(buf, 0x7e, sizeof(buf));
    g_assert_cmpint(bdrv_pwrite(bs, 0, 8192, buf, 0), ==, 0);
    g_assert_cmpint(bdrv_pread(bs, 8191, 2, buf), ==, -EINVAL);
    bdrv_unref(bs);
    {
        g_autofree char *data = NULL;
        gsize len;
        g_assert_true(g_file_get_contents(path, &data, &len, NULL));
        g_assert_cmpuint(len, ==, 65536);
        memset(check, 0x7e, sizeof(check));
        g_assert_cmpint(memcmp(data + 4096, check, 8192), ==, 0);
        g_assert_true(buffer_is_zero(data, 4096));
        g_assert_true(buffer_is_zero(data + 12288, 65536 - 12288));
    }
    g_assert_null(open_opts(too_big)); /* window past the end */
    g_hash_table_insert(create_opts, g_strdup("bogus"), g_strdup("1"));
    g_clear_error(&err);
    g_assert_cmpint(bdrv_create("file", path, 1, create_opts, &err), <, 0);
    g_assert_nonnull(strstr(err->message, "bogus"));
}

static void test_open_errors(void)
{
    g_autofree char *missing = g_build_filename(tmpdir, "nope.img", NULL);
    g_autofree char *path = make_image("opts.img", 0);
    g_autoptr(GHashTable) o =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_autoptr(GError) err = NULL;

    g_assert_null(open_raw(missing, NULL, NULL));
    g_assert_null(open_raw(path, "bogus", "1"));
    g_assert_null(open_raw(path, "backing.driver", "file"));
    g_assert_null(open_raw(path, "detect-zeroes", "unmap"));
    g_hash_table_insert(o, g_strdup("driver"), g_strdup("file"));
    g_hash_table_insert(o, g_strdup("filename"), g_strdup(missing));
    g_assert_null(bdrv_open(o, &err));
    g_assert_nonnull(strstr(err->message, missing)); /* names the file */
}

/* --- drained sections ---------------------------------------------------- */

static BlockNode *open_slow_raw(int64_t latency_ns, const char *dz)
{
    g_autoptr(GHashTable) o =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_autoptr(GError) err = NULL;
    BlockNode *bs;

    g_hash_table_insert(o, g_strdup("driver"), g_strdup("raw"));
    g_hash_table_insert(o, g_strdup("file.driver"), g_strdup("null-co"));
    g_hash_table_insert(o, g_strdup("file.size"), g_strdup("4M"));
    g_hash_table_insert(o, g_strdup("file.latency-ns"),
                        g_strdup_printf("%" G_GINT64_FORMAT, latency_ns));
    if (dz)
        g_hash_table_insert(o, g_strdup("detect-zeroes"), g_strdup(dz));
    bs = bdrv_open(o, &err);
    g_assert_no_error(err);
    return bs;
}

typedef struct {
    BlockNode *bs;
    gint stop;
    gint done;      /* requests completed */
    gint started;   /* calls begun (a held one included) */
} Hammer;

static gpointer hammer_thread(gpointer data)
{
    Hammer *h = data;
    char buf[4096] = { 1 };

    while (!g_atomic_int_get(&h->stop)) {
        g_atomic_int_inc(&h->started);
        g_assert_cmpint(bdrv_pwrite(h->bs, (g_random_int() % 1000) * 4096,
                                    sizeof(buf), buf, 0), ==, 0);
        g_atomic_int_inc(&h->done);
    }
    return NULL;
}

/* Four writers keep a slow node busy.  While a section holds the node (or
 * the node below it), none of their requests runs, the section's thread
 * may still do I/O itself, and they resume when it ends. */
static void check_section(BlockNode *top, BdrvDrain *(*begin)(void *),
                          void *arg)
{
    Hammer h = { .bs = top };
    GThread *t[4];
    BdrvDrain *d;
    char buf[4096];
    int before, after, started;

    for (int i = 0; i < 4; i++)
        t[i] = g_thread_new("hammer", hammer_thread, &h);
    while (g_atomic_int_get(&h.done) < 20)
        g_usleep(1000);
    d = begin(arg);
    /* Every request in flight at begin has ended; each thread counts it,
     * then begins exactly one more call, which waits: four more calls
     * begun, whatever the scheduler does. */
    started = g_atomic_int_get(&h.started);
    for (int i = 0; i < 5000 && g_atomic_int_get(&h.started) < started + 4;
         i++)
        g_usleep(1000);
    before = g_atomic_int_get(&h.done);
    g_assert_cmpint(g_atomic_int_get(&h.started) - before, ==, 4);
    g_assert_cmpint(bdrv_pread(top, 0, sizeof(buf), buf), ==, 0);
    g_usleep(50 * 1000);
    after = g_atomic_int_get(&h.done);
    g_assert_cmpint(after, ==, before);
    bdrv_drained_end(d);
    while (g_atomic_int_get(&h.done) < after + 20)
        g_usleep(1000);
    g_atomic_int_set(&h.stop, 1);
    for (int i = 0; i < 4; i++)
        g_thread_join(t[i]);
}

static BdrvDrain *begin_node(void *bs) { return bdrv_drained_begin(bs); }
static BdrvDrain *begin_all(void *unused) { return bdrv_drain_all_begin(); }

static void test_drained_section(void)
{
    BlockNode *top = open_slow_raw(2 * 1000 * 1000, NULL);

    check_section(top, begin_node, top);
    /* Draining the node below holds the requests that enter above. */
    check_section(top, begin_node, bdrv_child(top, "file"));
    check_section(top, begin_all, NULL);
    bdrv_unref(top);
}

/* --- detect-zeroes keeps a caller's BDRV_REQ_SERIALISING ------------------- */

typedef struct {
    BlockNode *bs;
    gint64 read_start_us;
} SlowRead;

static gpointer slow_reader(gpointer data)
{
    SlowRead *r = data;
    char buf[4096];

    r->read_start_us = g_get_monotonic_time();
    g_assert_cmpint(bdrv_pread(r->bs, 0, sizeof(buf), buf), ==, 0);
    return NULL;
}

static gint64 zero_reached_us;

static int note_zero_write(BlockNode *bs, BdrvWriteKind kind, int64_t offset,
                           int64_t bytes, void *opaque)
{
    if (kind == BDRV_WRITE_ZEROES)
        zero_reached_us = g_get_monotonic_time();
    return 0;
}

/* A fleecing target's writes are serialising (they wait for readers in
 * flight); with detect-zeroes=on an all-zero one becomes a write-zeroes,
 * which must wait all the same. */
static void test_detect_zeroes_serialising(void)
{
    BlockNode *top = open_slow_raw(200 * 1000 * 1000, "on");
    BlockNotifier *n = bdrv_add_before_write_notifier(
        bdrv_child(top, "file"), note_zero_write, NULL);
    SlowRead r = { .bs = top };
    GThread *t = g_thread_new("reader", slow_reader, &r);
    char zeroes[4096] = { 0 };

    g_usleep(20 * 1000);
    g_assert_cmpint(bdrv_pwrite(top, 0, sizeof(zeroes), zeroes,
                                BDRV_REQ_SERIALISING), ==, 0);
    g_thread_join(t);
    /* The read takes 200 ms; a zero write that did not wait for it
     * reaches the child about 20 ms after the read began.  (The read's
     * end as its thread sees it comes a moment after the write may go.) */
    g_assert_cmpint(zero_reached_us, >, 0);
    g_assert_cmpint(zero_reached_us - r.read_start_us, >=, 150 * 1000);
    bdrv_remove_before_write_notifier(bdrv_child(top, "file"), n);
    bdrv_unref(top);
}

int main(int argc, char **argv)
{
    int ret;

    g_test_init(&argc, &argv, NULL);
    tmpdir = g_dir_make_tmp("snapnbd-unit-XXXXXX", NULL);
    g_test_add_func("/io/notifier/copy-before-write",
                    test_notifier_copy_before_write);
    g_test_add_func("/io/notifier/veto", test_notifier_veto);
    g_test_add_func("/io/notifier/delay", test_notifier_delay);
    g_test_add_func("/io/unaligned-serialised", test_unaligned_serialised);
    g_test_add_func("/io/write-zeroes-detect", test_write_zeroes_and_detect);
    g_test_add_func("/io/open-errors", test_open_errors);
    g_test_add_func("/io/status-cache-dropped", test_status_cache_dropped);
    g_test_add_func("/io/drained-section", test_drained_section);
    g_test_add_func("/io/detect-zeroes-serialising",
                    test_detect_zeroes_serialising);
    g_test_add_func("/driver/null", test_null_driver);
    g_test_add_func("/driver/raw-window-and-create",
                    test_raw_window_and_create);
    ret = g_test_run();
    {
        g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", tmpdir);
        if (system(cmd) != 0)
            ret = ret ? ret : 1;
    }
    return ret;
}
