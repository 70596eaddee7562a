/*
 * export.c - the export table; exports_lock guards the table, each export
 * is freed when its last reference goes.
 */
#include "export.h"

#include <string.h>

static GMutex exports_lock;
static GHashTable *exports; /* name -> NbdExport *, guarded by exports_lock */

static void export_free(NbdExport *exp)
{
    if (exp->bitmaps) {
        for (guint i = 0; i < exp->bitmaps->len; i++)
            bdrv_dirty_bitmap_set_busy(g_ptr_array_index(exp->bitmaps, i),
                                       NULL);
        g_ptr_array_free(exp->bitmaps, TRUE);
    }
    bdrv_user_detach(exp->user);
    if (exp->on_free)
        exp->on_free(exp->on_free_opaque);
    nbd_pace_destroy(&exp->pace);
    g_free(exp->name);
    g_free(exp->description);
    g_free(exp);
}

void nbd_export_unref(NbdExport *exp)
{
    if (exp && g_atomic_int_dec_and_test(&exp->refcnt))
        export_free(exp);
}

/* An export reads consistently and, when writable, writes; it lets others
 * do anything but resize the node (its size is fixed at the handshake).
 * As QEMU, it first shares everything and then stops sharing resize
 * (blk_exp_add, then nbd_export_create): where both steps would conflict,
 * the first one's error is the one QEMU gives. */
static BlockChild *attach_export(BlockNode *node, const char *name,
                                 bool read_only, GError **errp)
{
    g_autofree char *holder = g_strdup_printf("NBD export '%s'", name);
    uint32_t perm = BDRV_PERM_CONSISTENT_READ;
    BlockChild *user;

    if (!read_only)
        perm |= BDRV_PERM_WRITE;
    user = bdrv_user_attach(node, holder, "root", perm, BDRV_PERM_ALL, NULL,
                            NULL, errp);
    if (user && !bdrv_user_set_perm(user, perm,
                                    BDRV_PERM_ALL & ~BDRV_PERM_RESIZE, errp)) {
        bdrv_user_detach(user);
        return NULL;
    }
    return user;
}

NbdExport *nbd_export_add(const char *name, const char *description,
                          BlockNode *node, bool read_only, bool writethrough,
                          GError **errp)
{
    NbdExport *exp;
    BlockChild *user;

    if (strlen(name) > 4096) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Export name is longer than 4096 bytes");
        return NULL;
    }
    if (!read_only && bdrv_is_read_only(node)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_READ_ONLY,
                    "Cannot export node '%s' writable: it is read-only",
                    bdrv_node_name(node));
        return NULL;
    }
    g_mutex_lock(&exports_lock);
    if (!exports)
        exports = g_hash_table_new(g_str_hash, g_str_equal);
    if (g_hash_table_contains(exports, name)) {
        g_mutex_unlock(&exports_lock);
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_EXISTS,
                    "Block export id '%s' is already in use", name);
        return NULL;
    }
    user = attach_export(node, name, read_only, errp);
    if (!user) {
        g_mutex_unlock(&exports_lock);
        return NULL;
    }
    exp = g_new0(NbdExport, 1);
    exp->name = g_strdup(name);
    exp->description = g_strdup(description);
    exp->user = user;
    exp->read_only = read_only;
    exp->writethrough = writethrough;
    exp->refcnt = 1; /* the table's */
    nbd_pace_init(&exp->pace, NBD_BACKGROUND_READ_RATE);
    g_hash_table_insert(exports, exp->name, exp);
    g_mutex_unlock(&exports_lock);
    return exp;
}

/* As QEMU: the node itself, then down its backing (or filtered) chain. */
static BdrvDirtyBitmap *find_bitmap(BlockNode *bs, const char *name)
{
    while (bs) {
        BdrvDirtyBitmap *bm = bdrv_find_dirty_bitmap(bs, name);
        if (bm)
            return bm;
        bs = bdrv_child(bs, "backing") ? bdrv_child(bs, "backing")
                                       : bdrv_child(bs, "file");
    }
    return NULL;
}

bool nbd_export_add_bitmap(NbdExport *exp, const char *name, GError **errp)
{
    BdrvDirtyBitmap *bm = find_bitmap(nbd_export_node(exp), name);

    if (!bm) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_FOUND,
                    "Bitmap '%s' is not found", name);
        return false;
    }
    return nbd_export_offer_bitmap(exp, bm, errp);
}

bool nbd_export_offer_bitmap(NbdExport *exp, BdrvDirtyBitmap *bm,
                             GError **errp)
{
    const char *name = bdrv_dirty_bitmap_name(bm);
    g_autofree char *why = NULL;

    if (exp->bitmaps && exp->bitmaps->len >= NBD_EXPORT_MAX_BITMAPS) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "An export offers at most %d bitmaps",
                    NBD_EXPORT_MAX_BITMAPS);
        return false;
    }
    if (!bdrv_dirty_bitmap_check(bm, false, errp))
        return false;
    /* A read-only export of a node others write would show a bitmap that
     * changes under the reader's feet: QEMU refuses it too. */
    if (exp->read_only && !bdrv_is_read_only(bdrv_dirty_bitmap_node(bm)) &&
        bdrv_dirty_bitmap_enabled(bm)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Enabled bitmap '%s' incompatible with readonly export",
                    name);
        return false;
    }
    why = g_strdup_printf("exported by NBD export '%s'", exp->name);
    if (!bdrv_dirty_bitmap_set_busy(bm, why)) {
        bdrv_dirty_bitmap_check(bm, false, errp);
        return false;
    }
    if (!exp->bitmaps)
        exp->bitmaps = g_ptr_array_new();
    g_ptr_array_add(exp->bitmaps, bm);
    return true;
}

NbdExport *nbd_export_lookup(const char *name)
{
    NbdExport *exp = NULL;

    g_mutex_lock(&exports_lock);
    if (exports)
        exp = g_hash_table_lookup(exports, name);
    if (exp)
        g_atomic_int_inc(&exp->refcnt);
    g_mutex_unlock(&exports_lock);
    return exp;
}

void nbd_export_remove(const char *name)
{
    NbdExport *exp = NULL;

    g_mutex_lock(&exports_lock);
    if (exports && g_hash_table_steal_extended(exports, name, NULL,
                                               (gpointer *)&exp)) {
        /* the table's reference goes below */
    }
    g_mutex_unlock(&exports_lock);
    nbd_export_unref(exp);
}

char **nbd_export_names(void)
{
    GPtrArray *names = g_ptr_array_new();

    g_mutex_lock(&exports_lock);
    if (exports) {
        GHashTableIter it;
        gpointer k;
        g_hash_table_iter_init(&it, exports);
        while (g_hash_table_iter_next(&it, &k, NULL))
            g_ptr_array_add(names, g_strdup(k));
    }
    g_mutex_unlock(&exports_lock);
    g_ptr_array_add(names, NULL);
    return (char **)g_ptr_array_free(names, FALSE);
}

int64_t nbd_export_size(NbdExport *exp)
{
    return bdrv_getlength(nbd_export_node(exp));
}
