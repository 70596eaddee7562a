/*
 * dirty-bitmap.c - named dirty bitmaps of a node.
 *
 * Design notes.
 *
 * A bitmap has one bit per granule of the node (granularity 512 B to
 * 2 GiB, a power of two).  Bits live in 64-bit words; a summary level has
 * one bit per word, set while the word is not zero, so that finding the
 * next dirty granule skips 4096 clean granules per summary bit read (a
 * 1 TiB disk at 64 KiB granularity is 16 Mi bits, 256 KiB of words and
 * 4 KiB of summary).  The dirty count is kept up to date on every change.
 *
 * Words are in host order, and a word's bit i is granule 64 * w + i, the
 * same bytes as the qcow2 on-disk layout on a little-endian host, so that
 * serialising is a byte copy there.
 *
 * One mutex per node guards its list of bitmaps and all their bits: a
 * write marks every enabled bitmap of its node under it, once, after the
 * request.  Nodes without bitmaps do not take it.
 *
 * A backup job splits a bitmap: the bitmap gets an anonymous successor,
 * outside the node's list, and from then on a write marks the successor
 * instead (under the same mutex), so that the bitmap holds exactly the
 * writes before the split.  Ending the split swaps or ORs the words, under
 * the mutex, so that no write's bits fall between the two.
 */
#include "block-int.h"

#include <errno.h>
#include <string.h>

struct BdrvDirtyBitmap {
    BlockNode *bs;
    char *name;
    uint32_t granularity;
    int gran_bits;
    int64_t length;          /* bytes of the node it describes */
    uint64_t bits;           /* granules */
    uint64_t *words;         /* bits / 64 rounded up */
    uint64_t *summary;       /* one bit per word: word != 0 */
    uint64_t count;          /* set bits */
    bool enabled;
    bool persistent;
    bool inconsistent;       /* found in use after a crash: unusable */
    bool job_own;            /* a job's: no lookup by name finds it */
    char *busy_reason;       /* in use by a job or export, or NULL */
    BdrvDirtyBitmap *successor; /* records the writes while split */
};

static uint64_t words_for(uint64_t bits)
{
    return (bits + 63) / 64;
}

/* A bitmap of no node's list (a successor has no name), or NULL with
 * @errp set when its bits do not fit in memory (the size comes from a
 * node of any size and a granularity from QMP: never abort for them). */
static BdrvDirtyBitmap *bitmap_alloc(BlockNode *bs, const char *name,
                                     uint32_t granularity, int64_t length,
                                     GError **errp)
{
    BdrvDirtyBitmap *bm = g_new0(BdrvDirtyBitmap, 1);

    bm->bs = bs;
    bm->name = g_strdup(name);
    bm->granularity = granularity;
    bm->gran_bits = __builtin_ctz(granularity);
    bm->length = length;
    bm->bits = (length + granularity - 1) >> bm->gran_bits;
    bm->words = g_try_new0(uint64_t, MAX(words_for(bm->bits), 1));
    bm->summary = g_try_new0(uint64_t, MAX(words_for(words_for(bm->bits)),
                                           1));
    bm->enabled = true;
    if (!bm->words || !bm->summary) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "Cannot allocate a dirty bitmap of %" G_GUINT64_FORMAT
                    " bits (granularity %" G_GUINT32_FORMAT " for %"
                    G_GINT64_FORMAT " bytes)", bm->bits, granularity,
                    length);
        g_free(bm->words);
        g_free(bm->summary);
        g_free(bm->name);
        g_free(bm);
        return NULL;
    }
    return bm;
}

/* A new bitmap in @bs's list; a job's own is one from the start, so that
 * no lookup ever finds it. */
static BdrvDirtyBitmap *add_bitmap(BlockNode *bs, const char *name,
                                   uint32_t granularity, int64_t length,
                                   bool job_own, GError **errp)
{
    BdrvDirtyBitmap *bm;

    if (granularity < 512 || (granularity & (granularity - 1))) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Granularity must be power of 2 and at least 512");
        return NULL;
    }
    if (!name || !*name || strlen(name) > 1023) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Bitmap name must be 1 to 1023 bytes long");
        return NULL;
    }
    if (bdrv_find_dirty_bitmap(bs, name)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_EXISTS,
                    "Bitmap already exists: %s", name);
        return NULL;
    }
    bm = bitmap_alloc(bs, name, granularity, length, errp);
    if (!bm)
        return NULL;
    bm->job_own = job_own;
    g_mutex_lock(&bs->dirty_lock);
    bs->dirty_bitmaps = g_list_append(bs->dirty_bitmaps, bm);
    g_mutex_unlock(&bs->dirty_lock);
    return bm;
}

BdrvDirtyBitmap *bdrv_dirty_bitmap_new(BlockNode *bs, const char *name,
                                       uint32_t granularity, int64_t length,
                                       GError **errp)
{
    return add_bitmap(bs, name, granularity, length, false, errp);
}

BdrvDirtyBitmap *bdrv_create_dirty_bitmap(BlockNode *bs, const char *name,
                                          uint32_t granularity, GError **errp)
{
    return bdrv_dirty_bitmap_new(bs, name, granularity, bdrv_getlength(bs),
                                 errp);
}

BdrvDirtyBitmap *bdrv_create_job_dirty_bitmap(BlockNode *bs,
                                              const char *name,
                                              uint32_t granularity,
                                              GError **errp)
{
    return add_bitmap(bs, name, granularity, bdrv_getlength(bs), true, errp);
}

static void bitmap_free(BdrvDirtyBitmap *bm)
{
    if (bm->successor)
        bitmap_free(bm->successor);
    g_free(bm->name);
    g_free(bm->words);
    g_free(bm->summary);
    g_free(bm->busy_reason);
    g_free(bm);
}

bool bdrv_can_store_dirty_bitmap(BlockNode *bs, GError **errp)
{
    if (!bs->drv->can_store_dirty_bitmap) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "format '%s' cannot store persistent bitmaps",
                    bs->drv->name);
        return false;
    }
    return bs->drv->can_store_dirty_bitmap(bs, errp);
}

void bdrv_release_dirty_bitmap(BdrvDirtyBitmap *bm)
{
    BlockNode *bs = bm->bs;

    g_mutex_lock(&bs->dirty_lock);
    bs->dirty_bitmaps = g_list_remove(bs->dirty_bitmaps, bm);
    g_mutex_unlock(&bs->dirty_lock);
    bitmap_free(bm);
}

void bdrv_release_all_dirty_bitmaps(BlockNode *bs)
{
    g_list_free_full(g_steal_pointer(&bs->dirty_bitmaps),
                     (GDestroyNotify)bitmap_free);
}

BdrvDirtyBitmap *bdrv_find_dirty_bitmap(BlockNode *bs, const char *name)
{
    BdrvDirtyBitmap *found = NULL;

    g_mutex_lock(&bs->dirty_lock);
    for (GList *l = bs->dirty_bitmaps; l && !found; l = l->next) {
        BdrvDirtyBitmap *bm = l->data;
        if (!bm->job_own && strcmp(bm->name, name) == 0)
            found = bm;
    }
    g_mutex_unlock(&bs->dirty_lock);
    return found;
}

/* A job's own bitmap (a mirror's): its thread frees it at the job's end,
 * whenever that is, so a list that others walk unlocked leaves it out
 * (the QMP fuzzer's seed 448881646: query-named-block-nodes read a
 * mirror's bitmap freed meanwhile), as a lookup by name does. */
GList *bdrv_dirty_bitmap_list(BlockNode *bs)
{
    GList *copy = NULL;

    g_mutex_lock(&bs->dirty_lock);
    for (GList *l = bs->dirty_bitmaps; l; l = l->next)
        if (!((BdrvDirtyBitmap *)l->data)->job_own)
            copy = g_list_prepend(copy, l->data);
    g_mutex_unlock(&bs->dirty_lock);
    return g_list_reverse(copy);
}

/* --- attributes ------------------------------------------------------------
 */

const char *bdrv_dirty_bitmap_name(BdrvDirtyBitmap *bm) { return bm->name; }
uint32_t bdrv_dirty_bitmap_granularity(BdrvDirtyBitmap *bm)
{
    return bm->granularity;
}
int64_t bdrv_dirty_bitmap_length(BdrvDirtyBitmap *bm) { return bm->length; }
BlockNode *bdrv_dirty_bitmap_node(BdrvDirtyBitmap *bm) { return bm->bs; }

#define BITMAP_GETTER(type, field)                                          \
    type bdrv_dirty_bitmap_##field(BdrvDirtyBitmap *bm)                     \
    {                                                                       \
        type v;                                                             \
        g_mutex_lock(&bm->bs->dirty_lock);                                  \
        v = bm->field;                                                      \
        g_mutex_unlock(&bm->bs->dirty_lock);                                \
        return v;                                                           \
    }
BITMAP_GETTER(bool, enabled)
BITMAP_GETTER(bool, persistent)
BITMAP_GETTER(bool, inconsistent)

uint64_t bdrv_dirty_bitmap_count(BdrvDirtyBitmap *bm)
{
    uint64_t bytes;

    g_mutex_lock(&bm->bs->dirty_lock);
    bytes = bm->count << bm->gran_bits;
    /* The last granule may extend past the end of the node. */
    if (bm->bits && (bm->words[(bm->bits - 1) / 64] >> ((bm->bits - 1) % 64)
                     & 1))
        bytes -= ((uint64_t)bm->bits << bm->gran_bits) - bm->length;
    g_mutex_unlock(&bm->bs->dirty_lock);
    return bytes;
}

uint64_t bdrv_dirty_bitmap_granules(BdrvDirtyBitmap *bm)
{
    uint64_t n;

    g_mutex_lock(&bm->bs->dirty_lock);
    n = bm->count;
    g_mutex_unlock(&bm->bs->dirty_lock);
    return n;
}

void bdrv_dirty_bitmap_set_enabled(BdrvDirtyBitmap *bm, bool enabled)
{
    g_mutex_lock(&bm->bs->dirty_lock);
    bm->enabled = enabled;
    g_mutex_unlock(&bm->bs->dirty_lock);
}

void bdrv_dirty_bitmap_set_persistent(BdrvDirtyBitmap *bm, bool persistent)
{
    g_mutex_lock(&bm->bs->dirty_lock);
    bm->persistent = persistent;
    g_mutex_unlock(&bm->bs->dirty_lock);
}

void bdrv_dirty_bitmap_set_inconsistent(BdrvDirtyBitmap *bm)
{
    g_mutex_lock(&bm->bs->dirty_lock);
    bm->inconsistent = true;
    bm->enabled = false;
    g_mutex_unlock(&bm->bs->dirty_lock);
}

bool bdrv_dirty_bitmap_set_busy(BdrvDirtyBitmap *bm, const char *reason)
{
    bool ok;

    g_mutex_lock(&bm->bs->dirty_lock);
    ok = !reason || !bm->busy_reason;
    if (ok) {
        g_free(bm->busy_reason);
        bm->busy_reason = g_strdup(reason);
    }
    g_mutex_unlock(&bm->bs->dirty_lock);
    return ok;
}

bool bdrv_dirty_bitmap_check(BdrvDirtyBitmap *bm, bool allow_busy,
                             GError **errp)
{
    bool ok = true;

    g_mutex_lock(&bm->bs->dirty_lock);
    if (bm->busy_reason && !allow_busy) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_BUSY,
                    "Bitmap '%s' is currently in use by another operation "
                    "(%s) and cannot be used", bm->name, bm->busy_reason);
        ok = false;
    } else if (bm->inconsistent) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Bitmap '%s' is inconsistent and cannot be used (it was "
                    "in use when the image was last closed uncleanly); "
                    "remove it with block-dirty-bitmap-remove", bm->name);
        ok = false;
    }
    g_mutex_unlock(&bm->bs->dirty_lock);
    return ok;
}

/* --- bits (all called with dirty_lock held) ------------------------------- */

static void set_bits_locked(BdrvDirtyBitmap *bm, uint64_t first,
                            uint64_t last, bool value)
{
    for (uint64_t w = first / 64; w <= last / 64; w++) {
        uint64_t lo = w == first / 64 ? first % 64 : 0;
        uint64_t hi = w == last / 64 ? last % 64 : 63;
        uint64_t mask = (hi == 63 ? ~0ULL : (1ULL << (hi + 1)) - 1) &
                        ~((1ULL << lo) - 1);
        uint64_t old = bm->words[w];
        uint64_t new = value ? old | mask : old & ~mask;

        if (new == old)
            continue;
        bm->count += __builtin_popcountll(new) - __builtin_popcountll(old);
        bm->words[w] = new;
        if (new)
            bm->summary[w / 64] |= 1ULL << (w % 64);
        else
            bm->summary[w / 64] &= ~(1ULL << (w % 64));
    }
}

/* Granules [first, last] covering bytes [offset, offset + bytes). */
static bool granules(BdrvDirtyBitmap *bm, int64_t offset, int64_t bytes,
                     uint64_t *first, uint64_t *last)
{
    if (bytes <= 0 || offset >= bm->length)
        return false;
    bytes = MIN(bytes, bm->length - offset);
    *first = (uint64_t)offset >> bm->gran_bits;
    *last = (uint64_t)(offset + bytes - 1) >> bm->gran_bits;
    return true;
}

void bdrv_set_dirty(BlockNode *bs, int64_t offset, int64_t bytes)
{
    if (!g_atomic_pointer_get(&bs->dirty_bitmaps))
        return;
    g_mutex_lock(&bs->dirty_lock);
    for (GList *l = bs->dirty_bitmaps; l; l = l->next) {
        BdrvDirtyBitmap *bm = l->data;
        BdrvDirtyBitmap *dst = bm->successor ? bm->successor : bm;
        uint64_t first, last;
        if (bm->enabled && granules(dst, offset, bytes, &first, &last))
            set_bits_locked(dst, first, last, true);
    }
    g_mutex_unlock(&bs->dirty_lock);
}

void bdrv_dirty_bitmap_set(BdrvDirtyBitmap *bm, int64_t offset,
                           int64_t bytes, bool dirty)
{
    uint64_t first, last;

    g_mutex_lock(&bm->bs->dirty_lock);
    if (granules(bm, offset, bytes, &first, &last))
        set_bits_locked(bm, first, last, dirty);
    g_mutex_unlock(&bm->bs->dirty_lock);
}

void bdrv_dirty_bitmap_clear(BdrvDirtyBitmap *bm)
{
    g_mutex_lock(&bm->bs->dirty_lock);
    memset(bm->words, 0, words_for(bm->bits) * 8);
    memset(bm->summary, 0, words_for(words_for(bm->bits)) * 8);
    bm->count = 0;
    g_mutex_unlock(&bm->bs->dirty_lock);
}

bool bdrv_dirty_bitmap_get(BdrvDirtyBitmap *bm, int64_t offset)
{
    uint64_t g = (uint64_t)offset >> bm->gran_bits;
    bool dirty;

    g_mutex_lock(&bm->bs->dirty_lock);
    dirty = offset < bm->length && (bm->words[g / 64] >> (g % 64)) & 1;
    g_mutex_unlock(&bm->bs->dirty_lock);
    return dirty;
}

/* The first granule >= @g whose bit is @value, or bm->bits. */
static uint64_t next_locked(BdrvDirtyBitmap *bm, uint64_t g, bool value)
{
    uint64_t nwords = words_for(bm->bits);

    while (g < bm->bits) {
        uint64_t w = g / 64;
        uint64_t word = value ? bm->words[w] : ~bm->words[w];
        word &= ~0ULL << (g % 64);
        if (word)
            return MIN(w * 64 + __builtin_ctzll(word), bm->bits);
        w++;
        if (value) {
            /* Skip clean words through the summary. */
            while (w < nwords) {
                uint64_t s = bm->summary[w / 64] & (~0ULL << (w % 64));
                if (s) {
                    w = (w / 64) * 64 + __builtin_ctzll(s);
                    break;
                }
                w = (w / 64 + 1) * 64;
            }
        }
        g = w * 64;
    }
    return bm->bits;
}

bool bdrv_dirty_bitmap_next_extent(BdrvDirtyBitmap *bm, int64_t offset,
                                   int64_t end, bool *dirty, int64_t *pnum)
{
    uint64_t g = (uint64_t)offset >> bm->gran_bits, next;
    bool value;

    if (offset >= MIN(end, bm->length))
        return false;
    g_mutex_lock(&bm->bs->dirty_lock);
    value = (bm->words[g / 64] >> (g % 64)) & 1;
    next = next_locked(bm, g + 1, !value);
    g_mutex_unlock(&bm->bs->dirty_lock);
    *dirty = value;
    *pnum = MIN((int64_t)MIN(next << bm->gran_bits, (uint64_t)INT64_MAX),
                MIN(end, bm->length)) - offset;
    return true;
}

int64_t bdrv_dirty_bitmap_next_dirty(BdrvDirtyBitmap *bm, int64_t offset)
{
    uint64_t g;

    if (offset >= bm->length)
        return -1;
    g_mutex_lock(&bm->bs->dirty_lock);
    g = next_locked(bm, (uint64_t)offset >> bm->gran_bits, true);
    g_mutex_unlock(&bm->bs->dirty_lock);
    if (g >= bm->bits)
        return -1;
    return MAX((int64_t)(g << bm->gran_bits), offset);
}

/* --- whole bitmaps ----------------------------------------------------------
 */

bool bdrv_dirty_bitmap_merge(BdrvDirtyBitmap *dst, BdrvDirtyBitmap *src,
                             GError **errp)
{
    if (dst->bs != src->bs && dst->length != src->length) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Bitmaps are incompatible and can't be merged");
        return false;
    }
    /* Different granularities: every dirty extent of @src, coarsened. */
    for (int64_t off = 0, n; off < src->length; off += n) {
        bool dirty;
        if (!bdrv_dirty_bitmap_next_extent(src, off, src->length, &dirty, &n))
            break;
        if (dirty)
            bdrv_dirty_bitmap_set(dst, off, n, true);
    }
    return true;
}

size_t bdrv_dirty_bitmap_serialized_size(BdrvDirtyBitmap *bm)
{
    return (bm->bits + 7) / 8;
}

/* Bytes [start, start + len) of the on-disk layout: granule 8 * i + b is
 * bit b of byte i. */
void bdrv_dirty_bitmap_serialize(BdrvDirtyBitmap *bm, size_t start,
                                 size_t len, uint8_t *out)
{
    g_mutex_lock(&bm->bs->dirty_lock);
    for (size_t i = 0; i < len; i++) {
        size_t byte = start + i;
        out[i] = bm->words[byte / 8] >> (8 * (byte % 8));
    }
    g_mutex_unlock(&bm->bs->dirty_lock);
}

/* ORs on-disk bytes [start, start + len) into the bits, a word at a time
 * (a bitmap of a large disk is megabytes). */
void bdrv_dirty_bitmap_deserialize(BdrvDirtyBitmap *bm, size_t start,
                                   size_t len, const uint8_t *in)
{
    size_t end = MIN(start + len, bdrv_dirty_bitmap_serialized_size(bm));

    g_mutex_lock(&bm->bs->dirty_lock);
    for (size_t byte = start; byte < end;) {
        uint64_t w = byte / 8, add = 0;
        for (; byte < end && byte / 8 == w; byte++)
            add |= (uint64_t)in[byte - start] << (8 * (byte % 8));
        if (w == (bm->bits - 1) / 64 && bm->bits % 64)
            add &= (1ULL << (bm->bits % 64)) - 1; /* no bits past the end */
        if (add & ~bm->words[w]) {
            uint64_t new = bm->words[w] | add;
            bm->count += __builtin_popcountll(new) -
                         __builtin_popcountll(bm->words[w]);
            bm->words[w] = new;
            bm->summary[w / 64] |= 1ULL << (w % 64);
        }
    }
    g_mutex_unlock(&bm->bs->dirty_lock);
}

/* --- successors -------------------------------------------------------------
 */

bool bdrv_dirty_bitmap_create_successor(BdrvDirtyBitmap *bm,
                                        const char *reason, GError **errp)
{
    BdrvDirtyBitmap *succ = bitmap_alloc(bm->bs, NULL, bm->granularity,
                                         bm->length, errp);
    bool ok;

    if (!succ)
        return false;
    g_mutex_lock(&bm->bs->dirty_lock);
    ok = !bm->busy_reason && !bm->inconsistent;
    if (ok) {
        bm->busy_reason = g_strdup(reason);
        bm->successor = succ;
    }
    g_mutex_unlock(&bm->bs->dirty_lock);
    if (!ok) {
        bdrv_dirty_bitmap_check(bm, false, errp);
        bitmap_free(succ);
    }
    return ok;
}

BdrvDirtyBitmap *bdrv_dirty_bitmap_successor(BdrvDirtyBitmap *bm)
{
    BdrvDirtyBitmap *succ;

    g_mutex_lock(&bm->bs->dirty_lock);
    succ = bm->successor;
    g_mutex_unlock(&bm->bs->dirty_lock);
    return succ;
}

/* Detaches the successor and ends the busy state; with @keep_own, ORs the
 * successor's bits into @bm's, else @bm takes the successor's words. */
static void end_split(BdrvDirtyBitmap *bm, bool keep_own)
{
    BdrvDirtyBitmap *succ;

    g_mutex_lock(&bm->bs->dirty_lock);
    succ = g_steal_pointer(&bm->successor);
    g_assert(succ);
    if (!keep_own) {
        uint64_t *words = bm->words, *summary = bm->summary;
        bm->words = succ->words;
        bm->summary = succ->summary;
        bm->count = succ->count;
        succ->words = words;
        succ->summary = summary;
    } else {
        for (uint64_t w = 0; w < words_for(bm->bits); w++) {
            uint64_t new = bm->words[w] | succ->words[w];
            if (new == bm->words[w])
                continue;
            bm->count += __builtin_popcountll(new) -
                         __builtin_popcountll(bm->words[w]);
            bm->words[w] = new;
            bm->summary[w / 64] |= 1ULL << (w % 64);
        }
    }
    g_clear_pointer(&bm->busy_reason, g_free);
    g_mutex_unlock(&bm->bs->dirty_lock);
    bitmap_free(succ);
}

void bdrv_dirty_bitmap_abdicate(BdrvDirtyBitmap *bm)
{
    end_split(bm, false);
}

void bdrv_dirty_bitmap_reclaim(BdrvDirtyBitmap *bm)
{
    end_split(bm, true);
}

/* Gives @bm new words for @length bytes, keeping the bits that still lie
 * inside; false (nothing changed) when they do not fit in memory. */
static bool resize_locked(BdrvDirtyBitmap *bm, int64_t length)
{
    uint64_t bits = ((uint64_t)length + bm->granularity - 1) >> bm->gran_bits;
    uint64_t nwords = words_for(bits);
    uint64_t *words = g_try_new0(uint64_t, MAX(nwords, 1));
    uint64_t *summary = g_try_new0(uint64_t, MAX(words_for(nwords), 1));
    uint64_t count = 0;

    if (!words || !summary) {
        g_free(words);
        g_free(summary);
        return false;
    }
    memcpy(words, bm->words, MIN(nwords, words_for(bm->bits)) * 8);
    if (bits % 64)
        words[nwords - 1] &= (1ULL << (bits % 64)) - 1;
    for (uint64_t w = 0; w < nwords; w++) {
        count += __builtin_popcountll(words[w]);
        if (words[w])
            summary[w / 64] |= 1ULL << (w % 64);
    }
    g_free(bm->words);
    g_free(bm->summary);
    bm->words = words;
    bm->summary = summary;
    bm->bits = bits;
    bm->length = length;
    bm->count = count;
    return true;
}

void bdrv_dirty_bitmap_truncate(BlockNode *bs, int64_t length)
{
    g_mutex_lock(&bs->dirty_lock);
    for (GList *l = bs->dirty_bitmaps; l; l = l->next) {
        BdrvDirtyBitmap *bm = l->data;
        if (bm->length != length && resize_locked(bm, length) &&
            bm->successor)
            resize_locked(bm->successor, length);
    }
    g_mutex_unlock(&bs->dirty_lock);
}
