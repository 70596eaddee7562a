/*
 * unit-dirty-bitmap.c - dirty bitmaps against a plain bool-per-granule
 * model: random set/clear ranges and writes through the request path, then
 * count, extents, next-dirty, serialisation and merge must all agree with
 * the model, including across summary words and at a ragged end.
 */
#include "block/block.h"

#include <string.h>

#define LENGTH ((int64_t)64 * 1024 * 1024 + 12345)

static BlockNode *open_null(void)
{
    g_autoptr(GHashTable) o = g_hash_table_new_full(g_str_hash, g_str_equal,
                                                    g_free, g_free);
    g_autoptr(GError) err = NULL;
    BlockNode *bs;

    g_hash_table_insert(o, g_strdup("driver"), g_strdup("null-co"));
    g_hash_table_insert(o, g_strdup("size"),
                        g_strdup_printf("%" G_GINT64_FORMAT, LENGTH));
    bs = bdrv_open(o, &err);
    g_assert_no_error(err);
    return bs;
}

typedef struct {
    uint32_t gran;
    int64_t granules;
    bool *bits;
} Model;

static void model_set(Model *m, int64_t off, int64_t n, bool v)
{
    if (n <= 0)
        return;
    for (int64_t g = off / m->gran; g <= (off + n - 1) / m->gran; g++)
        m->bits[g] = v;
}

static void check_against(BdrvDirtyBitmap *bm, Model *m)
{
    uint64_t count = 0;
    int64_t off = 0, n;
    bool dirty;

    for (int64_t g = 0; g < m->granules; g++)
        if (m->bits[g])
            count += MIN((int64_t)m->gran, LENGTH - g * m->gran);
    g_assert_cmpuint(bdrv_dirty_bitmap_count(bm), ==, count);
    while (bdrv_dirty_bitmap_next_extent(bm, off, LENGTH, &dirty, &n)) {
        g_assert_cmpint(n, >, 0);
        for (int64_t g = off / m->gran; g <= (off + n - 1) / m->gran; g++)
            g_assert_cmpint(m->bits[g], ==, dirty);
        /* Extents are maximal: the next granule differs. */
        if (off + n < LENGTH)
            g_assert_cmpint(m->bits[(off + n) / m->gran], !=, dirty);
        off += n;
    }
    g_assert_cmpint(off, ==, LENGTH);
    for (int64_t g = 0, next; g < m->granules; g = next / m->gran + 1) {
        int64_t expect = -1;
        for (int64_t h = g; h < m->granules && expect < 0; h++)
            if (m->bits[h])
                expect = h * m->gran;
        next = bdrv_dirty_bitmap_next_dirty(bm, g * m->gran);
        g_assert_cmpint(next, ==, expect);
        if (next < 0)
            break;
    }
}

static void random_range(GRand *r, int64_t *off, int64_t *n)
{
    *off = g_rand_int_range(r, 0, LENGTH);
    *n = g_rand_int_range(r, 1, g_rand_boolean(r) ? 4096 : 8 << 20);
    *n = MIN(*n, LENGTH - *off);
}

static void test_against_model(gconstpointer data)
{
    uint32_t gran = GPOINTER_TO_UINT(data);
    BlockNode *bs = open_null();
    g_autoptr(GError) err = NULL;
    BdrvDirtyBitmap *bm = bdrv_create_dirty_bitmap(bs, "b0", gran, &err);
    BdrvDirtyBitmap *off_bm = bdrv_create_dirty_bitmap(bs, "off", gran, &err);
    Model m = { .gran = gran, .granules = (LENGTH + gran - 1) / gran };
    GRand *r = g_rand_new_with_seed(gran);
    g_autofree char *buf = g_malloc0(8 << 20);

    g_assert_no_error(err);
    m.bits = g_new0(bool, m.granules);
    bdrv_dirty_bitmap_set_enabled(off_bm, false);
    for (int i = 0; i < 300; i++) {
        int64_t off, n;
        random_range(r, &off, &n);
        switch (g_rand_int_range(r, 0, 4)) {
        case 0:
            g_assert_cmpint(bdrv_pwrite(bs, off, n, buf, 0), ==, 0);
            model_set(&m, off, n, true);
            break;
        case 1:
            g_assert_cmpint(bdrv_pwrite_zeroes(bs, off, n, 0), ==, 0);
            model_set(&m, off, n, true);
            break;
        case 2:
            bdrv_dirty_bitmap_set(bm, off, n, false);
            model_set(&m, off, n, false);
            break;
        default:
            bdrv_dirty_bitmap_set(bm, off, n, true);
            model_set(&m, off, n, true);
        }
    }
    check_against(bm, &m);
    g_assert_cmpuint(bdrv_dirty_bitmap_count(off_bm), ==, 0);

    /* Serialised and read back into a fresh bitmap: the same bits. */
    {
        size_t size = bdrv_dirty_bitmap_serialized_size(bm);
        g_autofree uint8_t *bytes = g_malloc(size);
        BdrvDirtyBitmap *copy = bdrv_create_dirty_bitmap(bs, "copy", gran,
                                                         &err);
        bdrv_dirty_bitmap_set_enabled(copy, false);
        bdrv_dirty_bitmap_serialize(bm, 0, size, bytes);
        bdrv_dirty_bitmap_deserialize(copy, 0, size / 2, bytes);
        bdrv_dirty_bitmap_deserialize(copy, size / 2, size - size / 2,
                                      bytes + size / 2);
        check_against(copy, &m);
        /* Merged into a coarser one: each coarse granule dirty iff any
         * fine one under it is. */
        BdrvDirtyBitmap *coarse = bdrv_create_dirty_bitmap(bs, "coarse",
                                                           gran * 4, &err);
        Model cm = { .gran = gran * 4,
                     .granules = (LENGTH + gran * 4 - 1) / (gran * 4) };
        bdrv_dirty_bitmap_set_enabled(coarse, false);
        cm.bits = g_new0(bool, cm.granules);
        for (int64_t g = 0; g < m.granules; g++)
            cm.bits[g / 4] |= m.bits[g];
        g_assert_true(bdrv_dirty_bitmap_merge(coarse, copy, &err));
        check_against(coarse, &cm);
        g_free(cm.bits);
        bdrv_dirty_bitmap_clear(copy);
        g_assert_cmpuint(bdrv_dirty_bitmap_count(copy), ==, 0);
        g_assert_cmpint(bdrv_dirty_bitmap_next_dirty(copy, 0), ==, -1);
    }
    g_assert_null(bdrv_create_dirty_bitmap(bs, "b0", gran, &err));
    g_clear_error(&err);
    g_assert_null(bdrv_create_dirty_bitmap(bs, "odd", 1000, &err));
    g_clear_error(&err);
    g_free(m.bits);
    g_rand_free(r);
    bdrv_unref(bs);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_data_func("/dirty-bitmap/512", GUINT_TO_POINTER(512),
                         test_against_model);
    g_test_add_data_func("/dirty-bitmap/64k", GUINT_TO_POINTER(65536),
                         test_against_model);
    g_test_add_data_func("/dirty-bitmap/4m", GUINT_TO_POINTER(4 << 20),
                         test_against_model);
    return g_test_run();
}
