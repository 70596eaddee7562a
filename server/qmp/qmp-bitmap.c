/*
 * qmp-bitmap.c - the block-dirty-bitmap-* commands and transaction actions,
 * with QEMU's arguments, checks and messages.
 *
 * Design notes.
 *
 * Every command is a transaction action too.  An action does its work in
 * prepare and keeps what it needs to undo it: abort puts the old state
 * back (a cleared or merged bitmap gets its old bits from a serialised
 * copy), commit forgets the copy.  The commands run prepare then commit.
 * Removal is the exception: prepare only takes the bitmap out of use, and
 * commit releases it, so that an aborted transaction loses nothing.
 */
#include "qmp-int.h"
#include "server/qmp/qmp-types-gen.h"

#include <string.h>

#define DEFAULT_GRANULARITY 65536

/* --- lookup and checks ------------------------------------------------------
 */

static BlockNode *lookup_node(const char *node, GError **errp)
{
    BlockNode *bs = qmp_find_node(node);

    if (!bs)
        qmp_error(errp, "Cannot find device='%s' nor node-name='%s'", node,
                  node);
    return bs;
}

static BdrvDirtyBitmap *find_bitmap(BlockNode *bs, const char *name,
                                    GError **errp)
{
    BdrvDirtyBitmap *bm = bdrv_find_dirty_bitmap(bs, name);

    if (!bm)
        qmp_error(errp, "Dirty bitmap '%s' not found", name);
    return bm;
}

/* QEMU's block_dirty_bitmap_lookup, whose words for a missing node are
 * not bdrv_lookup_bs's (which block-dirty-bitmap-add uses). */
static BdrvDirtyBitmap *lookup_bitmap(const char *node_name, const char *name,
                                      BlockNode **node, GError **errp)
{
    BlockNode *bs = qmp_find_node(node_name);
    BdrvDirtyBitmap *bm;

    if (!bs) {
        qmp_error(errp, "Node '%s' not found", node_name);
        return NULL;
    }
    bm = find_bitmap(bs, name, errp);
    if (node)
        *node = bs;
    return bm;
}

/* May the bitmap change? (not busy, not inconsistent, node writable when
 * it is stored in the image) */
static bool check_changeable(BdrvDirtyBitmap *bm, GError **errp)
{
    GError *err = NULL;

    if (!bdrv_dirty_bitmap_check(bm, false, &err)) {
        qmp_error(errp, "%s", err->message);
        g_error_free(err);
        return false;
    }
    if (bdrv_dirty_bitmap_persistent(bm) &&
        bdrv_is_read_only(bdrv_dirty_bitmap_node(bm))) {
        qmp_error(errp, "Bitmap '%s' is readonly and cannot be modified",
                  bdrv_dirty_bitmap_name(bm));
        return false;
    }
    return true;
}

/* --- saved bits, for abort
 * ---------------------------------------------------- */

typedef struct BitmapUndo {
    BdrvDirtyBitmap *bm;
    uint8_t *bits;      /* serialised copy before the change, or NULL */
    bool was_enabled;
    bool created;       /* add: abort releases it */
    bool removing;      /* remove: commit releases it */
} BitmapUndo;

static BitmapUndo *undo_new(BdrvDirtyBitmap *bm, bool save_bits)
{
    BitmapUndo *u = g_new0(BitmapUndo, 1);
    size_t size = bdrv_dirty_bitmap_serialized_size(bm);

    u->bm = bm;
    u->was_enabled = bdrv_dirty_bitmap_enabled(bm);
    if (save_bits) {
        u->bits = g_malloc(MAX(size, 1));
        bdrv_dirty_bitmap_serialize(bm, 0, size, u->bits);
    }
    return u;
}

static void undo_abort(void *state)
{
    BitmapUndo *u = state;

    if (u->created) {
        bdrv_release_dirty_bitmap(u->bm);
        return;
    }
    if (u->removing)
        bdrv_dirty_bitmap_set_busy(u->bm, NULL);
    if (u->bits) {
        bdrv_dirty_bitmap_clear(u->bm);
        bdrv_dirty_bitmap_deserialize(
            u->bm, 0, bdrv_dirty_bitmap_serialized_size(u->bm), u->bits);
    }
    bdrv_dirty_bitmap_set_enabled(u->bm, u->was_enabled);
}

static void undo_commit(void *state)
{
    BitmapUndo *u = state;

    if (u->removing)
        bdrv_release_dirty_bitmap(u->bm);
}

static void undo_clean(void *state)
{
    BitmapUndo *u = state;

    g_free(u->bits);
    g_free(u);
}

/* --- actions
 * ------------------------------------------------------------------ */

static bool persistent_allowed(BlockNode *bs, const char *name, GError **errp)
{
    GError *err = NULL;

    if (bdrv_can_store_dirty_bitmap(bs, &err))
        return true;
    qmp_error(errp, "Can't make bitmap '%s' persistent in '%s': %s", name,
              bdrv_node_name(bs), err->message);
    g_error_free(err);
    return false;
}

static bool add_prepare(const QmpBlockDirtyBitmapAdd *a, void **state,
                        GError **errp)
{
    BlockNode *bs = lookup_node(a->node, errp);
    const char *name = a->name;
    int64_t granularity = a->has_granularity ? a->granularity
                                             : DEFAULT_GRANULARITY;
    bool persistent = a->persistent, disabled = a->disabled;
    BdrvDirtyBitmap *bm;
    GError *err = NULL;

    if (!bs)
        return false;
    if (granularity < 512 || granularity > ((int64_t)1 << 31) ||
        (granularity & (granularity - 1))) {
        qmp_error(errp, "Granularity must be power of 2 and at least 512");
        return false;
    }
    if (persistent && !persistent_allowed(bs, name, errp))
        return false;
    bm = bdrv_create_dirty_bitmap(bs, name, granularity, &err);
    if (!bm) {
        qmp_error(errp, "%s", err->message);
        g_error_free(err);
        return false;
    }
    bdrv_dirty_bitmap_set_persistent(bm, persistent);
    bdrv_dirty_bitmap_set_enabled(bm, !disabled);
    *state = undo_new(bm, false);
    ((BitmapUndo *)*state)->created = true;
    return true;
}

static bool remove_prepare(const QmpBlockDirtyBitmap *a, void **state,
                           GError **errp)
{
    BdrvDirtyBitmap *bm = lookup_bitmap(a->node, a->name, NULL, errp);
    GError *err = NULL;

    if (!bm)
        return false;
    /* QEMU lets an inconsistent bitmap be removed: that is its cure. */
    if (!bdrv_dirty_bitmap_inconsistent(bm) &&
        !bdrv_dirty_bitmap_check(bm, false, &err)) {
        qmp_error(errp, "%s", err->message);
        g_error_free(err);
        return false;
    }
    if (!bdrv_dirty_bitmap_set_busy(bm, "being removed")) {
        qmp_error(errp, "Bitmap '%s' is currently in use by another "
                  "operation and cannot be used", bdrv_dirty_bitmap_name(bm));
        return false;
    }
    *state = undo_new(bm, false);
    ((BitmapUndo *)*state)->removing = true;
    return true;
}

static bool clear_prepare(const QmpBlockDirtyBitmap *a, void **state,
                          GError **errp)
{
    BdrvDirtyBitmap *bm = lookup_bitmap(a->node, a->name, NULL, errp);

    if (!bm || !check_changeable(bm, errp))
        return false;
    *state = undo_new(bm, true);
    bdrv_dirty_bitmap_clear(bm);
    return true;
}

static bool set_enabled(const QmpBlockDirtyBitmap *a, void **state,
                        bool enabled, GError **errp)
{
    BdrvDirtyBitmap *bm = lookup_bitmap(a->node, a->name, NULL, errp);

    if (!bm || !check_changeable(bm, errp))
        return false;
    *state = undo_new(bm, false);
    bdrv_dirty_bitmap_set_enabled(bm, enabled);
    return true;
}

static bool enable_prepare(const QmpBlockDirtyBitmap *a, void **state,
                           GError **errp)
{
    return set_enabled(a, state, true, errp);
}

static bool disable_prepare(const QmpBlockDirtyBitmap *a, void **state,
                            GError **errp)
{
    return set_enabled(a, state, false, errp);
}

/* A merge source: a name on the target's node, or {"node", "name"}. */
static BdrvDirtyBitmap *merge_source(BlockNode *bs,
                                     const QmpBlockDirtyBitmapOrStr *src,
                                     GError **errp)
{
    if (src->kind == QMP_BLOCK_DIRTY_BITMAP_OR_STR_KIND_EXTERNAL)
        return lookup_bitmap(src->u.external->node, src->u.external->name,
                             NULL, errp);
    return find_bitmap(bs, src->u.local, errp);
}

static bool merge_prepare(const QmpBlockDirtyBitmapMerge *a, void **state,
                          GError **errp)
{
    BlockNode *bs;
    BdrvDirtyBitmap *dst = lookup_bitmap(a->node, a->target, &bs, errp);
    BitmapUndo *u;
    GError *err = NULL;

    if (!dst || !check_changeable(dst, errp))
        return false;
    u = undo_new(dst, true);
    for (guint i = 0; i < a->bitmaps->len; i++) {
        BdrvDirtyBitmap *src = merge_source(
            bs, g_ptr_array_index(a->bitmaps, i), errp);
        /* A busy source (a backup's, an export's) is refused too, as
         * QEMU's bdrv_merge_dirty_bitmap does. */
        if (!src || !bdrv_dirty_bitmap_check(src, false, &err) ||
            !bdrv_dirty_bitmap_merge(dst, src, &err)) {
            if (err) {
                qmp_error(errp, "%s", err->message);
                g_clear_error(&err);
            }
            undo_abort(u);
            undo_clean(u);
            return false;
        }
    }
    *state = u;
    return true;
}

/* --- commands and registration -----------------------------------------------
 */

/* For each action with argument type T (QmpT): the command (prepare then
 * commit at once) and the transaction action's prepare, which takes the
 * decoded "data" of its branch, block-dirty-bitmap-ACTION. */
#define BITMAP_ACTION(action, T)                                            \
    static JsonNode *cmd_##action(const Qmp##T *a, GError **errp)           \
    {                                                                       \
        void *state = NULL;                                                 \
        if (action##_prepare(a, &state, errp)) {                            \
            undo_commit(state);                                             \
            undo_clean(state);                                              \
        }                                                                   \
        return NULL;                                                        \
    }                                                                       \
    static bool tx_##action##_prepare(const QmpTransactionAction *t,        \
                                      void **state, GError **errp)          \
    {                                                                       \
        return action##_prepare(t->u.block_dirty_bitmap_##action->data,     \
                                state, errp);                               \
    }                                                                       \
    static const QmpTransactionOps action##_ops = {                         \
        tx_##action##_prepare, undo_commit, undo_abort, undo_clean          \
    };
BITMAP_ACTION(add, BlockDirtyBitmapAdd)
BITMAP_ACTION(remove, BlockDirtyBitmap)
BITMAP_ACTION(clear, BlockDirtyBitmap)
BITMAP_ACTION(enable, BlockDirtyBitmap)
BITMAP_ACTION(disable, BlockDirtyBitmap)
BITMAP_ACTION(merge, BlockDirtyBitmapMerge)

JsonArray *qmp_dirty_bitmaps_info(BlockNode *bs)
{
    g_autoptr(GList) list = bdrv_dirty_bitmap_list(bs);
    JsonArray *arr = json_array_new();

    /* newest first, as QEMU lists them (it adds each at the head; those
     * loaded from an image in the order of its directory) */
    for (GList *l = g_list_last(list); l; l = l->prev) {
        BdrvDirtyBitmap *bm = l->data;
        JsonObject *o;
        GError *busy = NULL;

        o = json_object_new();
        json_object_set_string_member(o, "name", bdrv_dirty_bitmap_name(bm));
        json_object_set_boolean_member(o, "recording",
                                       bdrv_dirty_bitmap_enabled(bm));
        json_object_set_boolean_member(
            o, "busy", !bdrv_dirty_bitmap_inconsistent(bm) &&
                           !bdrv_dirty_bitmap_check(bm, false, &busy));
        g_clear_error(&busy);
        json_object_set_boolean_member(o, "persistent",
                                       bdrv_dirty_bitmap_persistent(bm));
        if (bdrv_dirty_bitmap_inconsistent(bm))
            json_object_set_boolean_member(o, "inconsistent", true);
        /* QEMU's count is whole granules, the last one too where it
         * runs past the node's end */
        json_object_set_int_member(o, "count",
                                   bdrv_dirty_bitmap_granules(bm) *
                                       bdrv_dirty_bitmap_granularity(bm));
        json_object_set_int_member(o, "granularity",
                                   bdrv_dirty_bitmap_granularity(bm));
        json_array_add_object_element(arr, o);
    }
    return arr;
}

/* QEMU's hbitmap_sha256: the SHA-256 of the bits as QEMU holds them, a
 * bit a granule in little-endian 64-bit words (at least one word), so
 * that the same writes give the same hash in both.  In pieces: a large
 * disk's bitmap is megabytes. */
static JsonNode *cmd_bitmap_sha256(const QmpBlockDirtyBitmap *a,
                                   GError **errp)
{
    BdrvDirtyBitmap *bm = lookup_bitmap(a->node, a->name, NULL, errp);
    g_autoptr(GChecksum) sum = g_checksum_new(G_CHECKSUM_SHA256);
    size_t size, padded;
    uint8_t piece[4096];
    JsonObject *o;
    JsonNode *n;

    if (!bm)
        return NULL;
    size = bdrv_dirty_bitmap_serialized_size(bm);
    padded = MAX((size + 7) / 8 * 8, 8);
    for (size_t at = 0; at < padded; at += sizeof(piece)) {
        size_t len = MIN(sizeof(piece), padded - at);
        size_t have = at < size ? MIN(len, size - at) : 0;

        memset(piece + have, 0, len - have);
        if (have)
            bdrv_dirty_bitmap_serialize(bm, at, have, piece);
        g_checksum_update(sum, piece, len);
    }
    o = json_object_new();
    json_object_set_string_member(o, "sha256", g_checksum_get_string(sum));
    n = json_node_new(JSON_NODE_OBJECT);
    json_node_take_object(n, o);
    return n;
}

/* query-block lists devices (BlockBackends with a name); as in
 * qemu-storage-daemon there are none: nodes and their bitmaps are in
 * query-named-block-nodes. */
static JsonNode *cmd_query_block(GError **errp)
{
    JsonNode *n = json_node_new(JSON_NODE_ARRAY);

    (void)errp;
    json_node_take_array(n, json_array_new());
    return n;
}

void qmp_register_bitmap_commands(void)
{
    static const struct {
        const char *name;
        const QmpTransactionOps *ops;
    } actions[] = {
        { "block-dirty-bitmap-add", &add_ops },
        { "block-dirty-bitmap-remove", &remove_ops },
        { "block-dirty-bitmap-clear", &clear_ops },
        { "block-dirty-bitmap-enable", &enable_ops },
        { "block-dirty-bitmap-disable", &disable_ops },
        { "block-dirty-bitmap-merge", &merge_ops },
    };

    qmp_register_typed_block_dirty_bitmap_add(cmd_add);
    qmp_register_typed_block_dirty_bitmap_remove(cmd_remove);
    qmp_register_typed_block_dirty_bitmap_clear(cmd_clear);
    qmp_register_typed_block_dirty_bitmap_enable(cmd_enable);
    qmp_register_typed_block_dirty_bitmap_disable(cmd_disable);
    qmp_register_typed_block_dirty_bitmap_merge(cmd_merge);
    for (size_t i = 0; i < G_N_ELEMENTS(actions); i++)
        qmp_register_transaction_action(actions[i].name, actions[i].ops);
    qmp_register_typed_query_block(cmd_query_block);
    qmp_register_typed_x_debug_block_dirty_bitmap_sha256(cmd_bitmap_sha256);
}
