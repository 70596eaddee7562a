/*
 * qcow2-bitmap.c - persistent dirty bitmaps in the qcow2 bitmaps extension,
 * in QEMU's format (qcow2.txt, "Bitmaps"), so that qemu-img bitmap and
 * QEMU read what snapnbd stores and the other way round.
 *
 * Design notes.
 *
 * Open loads every bitmap of a consistent extension (autoclear bit 0 set;
 * otherwise a program without bitmap support wrote the image and QEMU
 * ignores them too).  A bitmap stored with the in_use flag was not saved
 * after its last use: it is loaded as inconsistent, unusable until removed.
 * A writable open sets in_use on every bitmap in the image at once, so a
 * crash from then on leaves them inconsistent; a clean close stores them
 * afresh without it.
 *
 * Store writes everything new (data clusters, tables, directory), flushes,
 * switches the header to the new directory with one write of the header
 * cluster, and only then frees the old structures: a crash at any point
 * leaves the old or the new bitmaps, plus perhaps leaked clusters.
 * Clusters of all-zero bitmap data are not stored (table entry 0).
 */
#include "qcow2.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define BME_FLAG_IN_USE (1u << 0)
#define BME_FLAG_AUTO (1u << 1)
#define BME_TYPE_DIRTY 1
#define BME_MIN_GRAN_BITS 9
#define BME_MAX_GRAN_BITS 31
#define BME_MAX_NAME 1023
#define BME_MAX_DIR_SIZE (64u << 20)
#define BME_TABLE_ALL_ONES 1ULL

/* A directory entry's fixed part, as stored. */
typedef struct __attribute__((packed)) BitmapDirEntry {
    uint64_t table_offset;
    uint32_t table_size;
    uint32_t flags;
    uint8_t type;
    uint8_t granularity_bits;
    uint16_t name_size;
    uint32_t extra_data_size;
} BitmapDirEntry;

static size_t entry_size(const BitmapDirEntry *e)
{
    return ROUND_UP(sizeof(*e) + e->extra_data_size + e->name_size, 8);
}

static void entry_to_host(BitmapDirEntry *e)
{
    e->table_offset = GUINT64_FROM_BE(e->table_offset);
    e->table_size = GUINT32_FROM_BE(e->table_size);
    e->flags = GUINT32_FROM_BE(e->flags);
    e->name_size = GUINT16_FROM_BE(e->name_size);
    e->extra_data_size = GUINT32_FROM_BE(e->extra_data_size);
}

/* --- reading -------------------------------------------------------------- */

static bool in_file(Qcow2State *s, uint64_t offset, uint64_t bytes)
{
    uint64_t len = bdrv_getlength(s->file);

    return !(offset & (s->cluster_size - 1)) && offset <= len &&
           bytes <= len - offset;
}

static uint8_t *read_directory(BlockNode *bs, GError **errp)
{
    Qcow2State *s = bs->opaque;
    uint8_t *dir;
    int ret;

    if (s->bitmap_dir_size > BME_MAX_DIR_SIZE || !s->nb_bitmaps ||
        s->nb_bitmaps > 65535 ||
        !in_file(s, s->bitmap_dir_offset, s->bitmap_dir_size)) {
        qcow2_bad_image(errp, bs->filename,
                        "bitmaps: invalid directory (%" PRIu32
                        " bitmaps, %" PRIu64 " bytes at %#" PRIx64 ")",
                        s->nb_bitmaps, s->bitmap_dir_size,
                        s->bitmap_dir_offset);
        return NULL;
    }
    dir = g_malloc(MAX(s->bitmap_dir_size, 1)); /* at most 64 MiB */
    ret = bdrv_pread(s->file, s->bitmap_dir_offset, s->bitmap_dir_size, dir);
    if (ret < 0) {
        qcow2_bad_image(errp, bs->filename,
                        "bitmaps: could not read the directory: %s",
                        g_strerror(-ret));
        g_free(dir);
        return NULL;
    }
    return dir;
}

/* The entry at @pos of @dir, checked; *name points into @dir. */
static bool parse_entry(BlockNode *bs, const uint8_t *dir, size_t pos,
                        BitmapDirEntry *e, const char **name, GError **errp)
{
    Qcow2State *s = bs->opaque;
    uint64_t bits, table_size;

    if (pos + sizeof(*e) > s->bitmap_dir_size) {
        qcow2_bad_image(errp, bs->filename,
                        "bitmaps: directory entry %zu is truncated", pos);
        return false;
    }
    memcpy(e, dir + pos, sizeof(*e));
    entry_to_host(e);
    if (pos + entry_size(e) > s->bitmap_dir_size || !e->name_size ||
        e->name_size > BME_MAX_NAME) {
        qcow2_bad_image(errp, bs->filename,
                        "bitmaps: directory entry at %zu is invalid", pos);
        return false;
    }
    *name = (const char *)dir + pos + sizeof(*e) + e->extra_data_size;
    bits = e->granularity_bits >= 64 ? 0
           : (s->size + (1ULL << e->granularity_bits) - 1) >>
                 e->granularity_bits;
    table_size = ((bits + 7) / 8 + s->cluster_size - 1) >> s->cluster_bits;
    if (e->type != BME_TYPE_DIRTY || e->granularity_bits < BME_MIN_GRAN_BITS ||
        e->granularity_bits > BME_MAX_GRAN_BITS || e->extra_data_size ||
        (e->flags & ~(BME_FLAG_IN_USE | BME_FLAG_AUTO | 4u)) ||
        e->table_size != table_size || memchr(*name, 0, e->name_size) ||
        !in_file(s, e->table_offset, (uint64_t)e->table_size * 8)) {
        qcow2_bad_image(errp, bs->filename,
                        "bitmaps: bitmap '%.*s' has an invalid or unsupported "
                        "directory entry",
                        e->name_size, *name);
        return false;
    }
    return true;
}

/* Reads the bitmap's data clusters into @bm. */
static int load_data(BlockNode *bs, const BitmapDirEntry *e,
                     BdrvDirtyBitmap *bm)
{
    Qcow2State *s = bs->opaque;
    size_t total = bdrv_dirty_bitmap_serialized_size(bm);
    /* The table lies in the file, but a sparse file may be large. */
    g_autofree uint64_t *table = g_try_new(uint64_t, MAX(e->table_size, 1));
    g_autofree uint8_t *cluster = g_malloc(s->cluster_size);
    int ret = table ? bdrv_pread(s->file, e->table_offset,
                                 (int64_t)e->table_size * 8, table)
                    : -ENOMEM;

    for (uint32_t i = 0; i < e->table_size && ret == 0; i++) {
        uint64_t t = GUINT64_FROM_BE(table[i]);
        uint64_t off = t & QCOW2_L2E_OFFSET_MASK;
        size_t start = (size_t)i << s->cluster_bits;
        size_t len = MIN(s->cluster_size, total - start);

        if (!off && !(t & BME_TABLE_ALL_ONES))
            continue;
        if (off && !in_file(s, off, s->cluster_size))
            return -EIO;
        if (off)
            ret = bdrv_pread(s->file, off, len, cluster);
        else
            memset(cluster, 0xff, len);
        if (ret == 0)
            bdrv_dirty_bitmap_deserialize(bm, start, len, cluster);
    }
    return ret;
}

static bool load_one(BlockNode *bs, const BitmapDirEntry *e, const char *name,
                     GError **errp)
{
    Qcow2State *s = bs->opaque;
    g_autofree char *n = g_strndup(name, e->name_size);
    BdrvDirtyBitmap *bm = bdrv_dirty_bitmap_new(
        bs, n, 1u << e->granularity_bits, s->size, errp);
    int ret;

    if (!bm)
        return false;
    bdrv_dirty_bitmap_set_persistent(bm, true);
    if (e->flags & BME_FLAG_IN_USE) {
        bdrv_dirty_bitmap_set_inconsistent(bm);
        return true;
    }
    bdrv_dirty_bitmap_set_enabled(bm, false); /* no writes while loading */
    ret = load_data(bs, e, bm);
    if (ret < 0) {
        qcow2_bad_image(errp, bs->filename,
                        "bitmaps: could not read bitmap '%s': %s", n,
                        g_strerror(-ret));
        return false;
    }
    bdrv_dirty_bitmap_set_enabled(bm, e->flags & BME_FLAG_AUTO);
    return true;
}

/* Sets in_use on every entry, in place. */
static int mark_in_use(BlockNode *bs, uint8_t *dir)
{
    Qcow2State *s = bs->opaque;
    size_t pos = 0;

    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        BitmapDirEntry e;
        uint32_t flags;
        memcpy(&e, dir + pos, sizeof(e));
        entry_to_host(&e);
        flags = GUINT32_TO_BE(e.flags | BME_FLAG_IN_USE);
        memcpy(dir + pos + offsetof(BitmapDirEntry, flags), &flags, 4);
        pos += entry_size(&e);
    }
    return bdrv_pwrite(s->file, s->bitmap_dir_offset, s->bitmap_dir_size, dir,
                       0);
}

bool qcow2_bitmaps_load(BlockNode *bs, GError **errp)
{
    Qcow2State *s = bs->opaque;
    g_autofree uint8_t *dir = NULL;
    size_t pos = 0;

    if (!s->bitmaps_ext || !(s->autoclear & QCOW2_AUTOCLEAR_BITMAPS)) {
        s->bitmaps_ext = false; /* stale: QEMU ignores it as well */
        return true;
    }
    dir = read_directory(bs, errp);
    if (!dir)
        return false;
    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        BitmapDirEntry e;
        const char *name;
        if (!parse_entry(bs, dir, pos, &e, &name, errp) ||
            !load_one(bs, &e, name, errp))
            return false;
        pos += entry_size(&e);
    }
    return true;
}

GArray *qcow2_bitmaps_info(BlockNode *bs)
{
    Qcow2State *s = bs->opaque;
    g_autofree uint8_t *dir = NULL;
    GArray *list;
    size_t pos = 0;

    if (!s->bitmaps_ext || !(dir = read_directory(bs, NULL)))
        return NULL;
    list = g_array_new(FALSE, TRUE, sizeof(BdrvBitmapInfo));
    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        BitmapDirEntry e;
        const char *name;
        BdrvBitmapInfo info;
        if (!parse_entry(bs, dir, pos, &e, &name, NULL))
            break;
        info = (BdrvBitmapInfo){
            .name = g_strndup(name, e.name_size),
            .granularity = 1u << e.granularity_bits,
            .in_use = e.flags & BME_FLAG_IN_USE,
            .autom = e.flags & BME_FLAG_AUTO,
        };
        g_array_append_val(list, info);
        pos += entry_size(&e);
    }
    return list;
}

int qcow2_bitmaps_mark_in_use(BlockNode *bs)
{
    Qcow2State *s = bs->opaque;
    g_autofree uint8_t *dir = NULL;

    if (!s->bitmaps_ext)
        return 0;
    dir = read_directory(bs, NULL);
    return dir ? mark_in_use(bs, dir) : -EIO;
}

bool qcow2_bitmaps_references(BlockNode *bs, Qcow2RefFunc ref, void *opaque,
                              GError **errp)
{
    Qcow2State *s = bs->opaque;
    g_autofree uint8_t *dir = NULL;
    size_t pos = 0;

    if (!s->bitmaps_ext || !(s->autoclear & QCOW2_AUTOCLEAR_BITMAPS))
        return true;
    dir = read_directory(bs, errp);
    if (!dir)
        return false;
    ref(opaque, s->bitmap_dir_offset, s->bitmap_dir_size);
    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        BitmapDirEntry e;
        const char *name;
        g_autofree uint64_t *table = NULL;
        if (!parse_entry(bs, dir, pos, &e, &name, errp))
            return false;
        pos += entry_size(&e);
        ref(opaque, e.table_offset, MAX((uint64_t)e.table_size * 8, 1));
        table = g_try_new(uint64_t, MAX(e.table_size, 1));
        if (!table || bdrv_pread(s->file, e.table_offset,
                                 (int64_t)e.table_size * 8, table) < 0) {
            qcow2_bad_image(errp, bs->filename,
                            "bitmaps: could not read a bitmap table");
            return false;
        }
        for (uint32_t j = 0; j < e.table_size; j++) {
            uint64_t off = GUINT64_FROM_BE(table[j]) & QCOW2_L2E_OFFSET_MASK;
            if (off)
                ref(opaque, off, s->cluster_size);
        }
    }
    return true;
}

/* --- storing -------------------------------------------------------------- */

/* Stores the bitmap's data; returns its table's offset (or -errno). */
static int64_t store_data(BlockNode *bs, BdrvDirtyBitmap *bm,
                          uint32_t *table_size)
{
    Qcow2State *s = bs->opaque;
    size_t total = bdrv_dirty_bitmap_serialized_size(bm);
    uint32_t n = (total + s->cluster_size - 1) >> s->cluster_bits;
    g_autofree uint64_t *table = g_new0(uint64_t, MAX(n, 1));
    g_autofree uint8_t *cluster = g_malloc(s->cluster_size);
    uint64_t table_bytes = ROUND_UP((uint64_t)n * 8, s->cluster_size);
    bool fresh;
    int64_t off;
    int ret;

    for (uint32_t i = 0; i < n; i++) {
        size_t start = (size_t)i << s->cluster_bits;
        size_t len = MIN(s->cluster_size, total - start);
        memset(cluster, 0, s->cluster_size);
        bdrv_dirty_bitmap_serialize(bm, start, len, cluster);
        if (buffer_is_zero(cluster, len))
            continue;
        off = qcow2_alloc_clusters(bs, 1, &fresh);
        if (off < 0)
            return off;
        ret = bdrv_pwrite(s->file, off, s->cluster_size, cluster, 0);
        if (ret < 0)
            return ret;
        table[i] = GUINT64_TO_BE((uint64_t)off);
    }
    off = qcow2_alloc_clusters(bs, MAX(table_bytes >> s->cluster_bits, 1),
                               &fresh);
    if (off < 0)
        return off;
    ret = bdrv_pwrite(s->file, off, MAX((uint64_t)n * 8, 8), table, 0);
    *table_size = n;
    return ret < 0 ? ret : off;
}

static int append_entry(BlockNode *bs, BdrvDirtyBitmap *bm, GByteArray *dir)
{
    const char *name = bdrv_dirty_bitmap_name(bm);
    bool bad = bdrv_dirty_bitmap_inconsistent(bm);
    BitmapDirEntry e = {
        .type = BME_TYPE_DIRTY,
        .granularity_bits = __builtin_ctz(bdrv_dirty_bitmap_granularity(bm)),
        .name_size = GUINT16_TO_BE(strlen(name)),
        .flags = GUINT32_TO_BE((bad ? BME_FLAG_IN_USE : 0) |
                               (bdrv_dirty_bitmap_enabled(bm) ? BME_FLAG_AUTO
                                                              : 0)),
    };
    static const uint8_t pad[8];
    uint32_t table_size = 0;
    int64_t table = store_data(bs, bm, &table_size);

    if (table < 0)
        return table;
    e.table_offset = GUINT64_TO_BE((uint64_t)table);
    e.table_size = GUINT32_TO_BE(table_size);
    g_byte_array_append(dir, (const uint8_t *)&e, sizeof(e));
    g_byte_array_append(dir, (const uint8_t *)name, strlen(name));
    g_byte_array_append(dir, pad, ROUND_UP(dir->len, 8) - dir->len);
    return 0;
}

/* The header cluster with the bitmaps extension replaced (or dropped when
 * @ext_len is 0), every other extension kept as it was. */
static int write_header(BlockNode *bs, const uint8_t *ext, uint32_t ext_len)
{
    Qcow2State *s = bs->opaque;
    Qcow2HeaderEdit e = {
        .ext_type = QCOW2_EXT_BITMAPS,
        .ext = ext,
        .ext_len = ext_len,
        .autoclear = ext_len ? s->autoclear | QCOW2_AUTOCLEAR_BITMAPS
                             : s->autoclear & ~QCOW2_AUTOCLEAR_BITMAPS,
        .backing_file = s->backing_file,
        .backing_format = s->backing_format,
    };

    return qcow2_rewrite_header(bs, &e);
}

/* Frees the tables and data of the directory found at open. */
static void free_old_bitmaps(BlockNode *bs, const uint8_t *dir,
                             uint32_t nb, uint64_t dir_offset,
                             uint64_t dir_size)
{
    Qcow2State *s = bs->opaque;
    size_t pos = 0;

    for (uint32_t i = 0; i < nb; i++) {
        BitmapDirEntry e;
        g_autofree uint64_t *table = NULL;
        memcpy(&e, dir + pos, sizeof(e));
        entry_to_host(&e);
        pos += entry_size(&e);
        table = g_try_new(uint64_t, MAX(e.table_size, 1));
        if (!table || bdrv_pread(s->file, e.table_offset,
                                 (int64_t)e.table_size * 8, table) < 0)
            continue; /* leaked, not lost */
        for (uint32_t j = 0; j < e.table_size; j++) {
            uint64_t off = GUINT64_FROM_BE(table[j]) & QCOW2_L2E_OFFSET_MASK;
            if (off)
                qcow2_update_refcount(bs, off, s->cluster_size, -1);
        }
        qcow2_update_refcount(bs, e.table_offset,
                              MAX((uint64_t)e.table_size * 8, 1), -1);
    }
    qcow2_update_refcount(bs, dir_offset, dir_size, -1);
}

static int store_all(BlockNode *bs, GByteArray *dir, uint32_t *nb)
{
    g_autoptr(GList) list = bdrv_dirty_bitmap_list(bs);
    int ret = 0;

    *nb = 0;
    for (GList *l = list; l && ret == 0; l = l->next) {
        if (!bdrv_dirty_bitmap_persistent(l->data))
            continue;
        /* An image resized to 0 bytes: an empty bitmap table is one QEMU
         * refuses to open the image with ("doesn't satisfy the
         * constraints"); QEMU 7.2 cannot store it either and loses it
         * (the QMP fuzzer's seeds 1034907227 and 122132683). */
        if (bdrv_dirty_bitmap_length(l->data) == 0) {
            g_warning("Lost persistent bitmap '%s' of node '%s': the image "
                      "is empty", bdrv_dirty_bitmap_name(l->data),
                      bdrv_node_name(bs));
            continue;
        }
        ret = append_entry(bs, l->data, dir);
        ++*nb;
    }
    return ret;
}

int qcow2_bitmaps_store(BlockNode *bs)
{
    Qcow2State *s = bs->opaque;
    g_autoptr(GByteArray) dir = g_byte_array_new();
    g_autofree uint8_t *old_dir = NULL;
    uint32_t nb = 0;
    uint64_t ext[3] = { 0 };
    int64_t dir_offset = 0;
    bool fresh;
    int ret;

    if (s->bitmaps_ext)
        old_dir = read_directory(bs, NULL);
    ret = store_all(bs, dir, &nb);
    if (ret == 0 && nb) {
        dir_offset = qcow2_alloc_clusters(
            bs, ROUND_UP(dir->len, s->cluster_size) >> s->cluster_bits,
            &fresh);
        ret = dir_offset < 0 ? dir_offset
                             : bdrv_pwrite(s->file, dir_offset, dir->len,
                                           dir->data, 0);
    }
    if (ret == 0)
        ret = qcow2_flush_metadata(bs);
    if (ret == 0)
        ret = qcow2_barrier(bs);
    if (ret < 0 || (!nb && !s->bitmaps_ext))
        return ret;
    ext[0] = GUINT64_TO_BE((uint64_t)nb << 32);
    ext[1] = GUINT64_TO_BE(dir->len);
    ext[2] = GUINT64_TO_BE((uint64_t)dir_offset);
    ret = write_header(bs, (const uint8_t *)ext, nb ? sizeof(ext) : 0);
    if (ret == 0)
        ret = qcow2_barrier(bs);
    if (ret == 0) {
        /* The new directory is the metadata now (overlap checks), before
         * the old one is freed. */
        uint32_t old_nb = s->nb_bitmaps;
        uint64_t old_offset = s->bitmap_dir_offset;
        uint64_t old_size = s->bitmap_dir_size;
        s->nb_bitmaps = nb;
        s->bitmap_dir_offset = dir_offset;
        s->bitmap_dir_size = dir->len;
        s->bitmaps_ext = nb > 0;
        if (old_dir)
            free_old_bitmaps(bs, old_dir, old_nb, old_offset, old_size);
    }
    return ret;
}
