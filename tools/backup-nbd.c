/*
 * backup-nbd.c - connecting to an export, and reading its block status into
 * the map of what to copy.
 *
 * A map is built window by window: one NBD_CMD_BLOCK_STATUS asks for both
 * contexts at once (base:allocation and qemu:dirty-bitmap:NAME); each
 * context answers for some length from the window's start, and the window
 * is done up to the shorter answer.  Within it the two lists of extents
 * are walked side by side, so a dirty range is split where its allocation
 * changes: dirty data is read, dirty zeroes are only written as zeroes.
 */
#include "tools/backup.h"

#include <inttypes.h>
#include <string.h>

/* The length asked for per block status command (the protocol's length
 * field has 32 bits). */
#define MAP_WINDOW (INT64_C(1) << 31)
#define DIRTY_PREFIX "qemu:dirty-bitmap:"
/* The flag of a qemu:dirty-bitmap extent that changed since the bitmap
 * began (libnbd has no name for it). */
#define STATE_DIRTY 1

static void set_nbd_error(GError **errp, int code, const char *uri,
                          const char *what)
{
    g_set_error(errp, BACKUP_ERROR, code, "%s: %s: %s", uri, what,
                nbd_get_error() ?: "unknown error");
}

struct nbd_handle *export_connect(const char *uri, const char *bitmap,
                                  bool writable, GError **errp)
{
    g_autofree char *ctx = bitmap ? g_strconcat(DIRTY_PREFIX, bitmap, NULL)
                                  : NULL;
    struct nbd_handle *h = nbd_create();

    if (!h) {
        set_nbd_error(errp, BACKUP_ERROR_FAILED, uri, "libnbd");
        return NULL;
    }
    if (nbd_add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) < 0 ||
        (ctx && nbd_add_meta_context(h, ctx) < 0) ||
        nbd_connect_uri(h, uri) < 0) {
        set_nbd_error(errp, BACKUP_ERROR_FAILED, uri, "cannot connect");
    } else if (ctx && nbd_can_meta_context(h, ctx) != 1) {
        g_set_error(errp, BACKUP_ERROR, BACKUP_ERROR_SERVER,
                    "%s: export does not offer %s (is the bitmap exported,"
                    " as with qemu-nbd -B %s?)", uri, ctx, bitmap);
    } else if (writable && nbd_is_read_only(h) != 0) {
        g_set_error(errp, BACKUP_ERROR, BACKUP_ERROR_FAILED,
                    "%s: the export is read-only", uri);
    } else {
        return h;
    }
    nbd_close(h);
    return NULL;
}

void export_close(struct nbd_handle *h)
{
    if (h) {
        nbd_shutdown(h, 0);
        nbd_close(h);
    }
}

int64_t export_max_request(struct nbd_handle *h, int64_t want)
{
    int64_t max = nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM);

    return max > 0 && max < want ? max : want;
}

/* --- block status ------------------------------------------------------- */

/* The answers to one block status command: (length, flags) pairs.  (libnbd
 * counts the entries of a callback in uint32_t, two per extent.) */
typedef struct Reply {
    const char *dirty_ctx;  /* the bitmap's context, or NULL */
    GArray *alloc;          /* of uint32_t, from base:allocation */
    GArray *dirty;          /* of uint32_t, from the bitmap */
} Reply;

static int reply_cb(void *opaque, const char *ctx, uint64_t offset,
                    uint32_t *entries, size_t n, int *error)
{
    Reply *r = opaque;

    if (!strcmp(ctx, LIBNBD_CONTEXT_BASE_ALLOCATION))
        g_array_append_vals(r->alloc, entries, n);
    else if (r->dirty_ctx && !strcmp(ctx, r->dirty_ctx))
        g_array_append_vals(r->dirty, entries, n);
    return 0;
}

/* Walks a list of (length, flags) pairs; past its end, it reads as one
 * endless extent with @dflt flags (a context the server does not offer). */
typedef struct Cursor {
    const uint32_t *e;
    guint n;         /* pairs */
    guint i;
    int64_t left;    /* bytes left in pair i */
    uint32_t dflt;
} Cursor;

static void cursor_skip(Cursor *k, int64_t bytes)
{
    k->left -= bytes;
    while (k->left == 0 && k->i < k->n) {
        k->i++;
        k->left = k->i < k->n ? k->e[2 * k->i] : INT64_MAX;
    }
}

static void cursor_init(Cursor *k, const GArray *a, bool offered,
                        uint32_t dflt)
{
    k->e = (const uint32_t *)a->data;
    k->n = offered ? a->len / 2 : 0;
    k->i = 0;
    k->left = k->n ? k->e[0] : INT64_MAX;
    k->dflt = dflt;
    cursor_skip(k, 0); /* past empty pairs */
}

static uint32_t cursor_flags(const Cursor *k)
{
    return k->i < k->n ? k->e[2 * k->i + 1] : k->dflt;
}

/* How far the answers of a list reach (INT64_MAX when not offered). */
static int64_t cursor_reach(const Cursor *k)
{
    int64_t sum = 0;

    if (!k->n)
        return INT64_MAX;
    for (guint i = 0; i < k->n; i++)
        sum += k->e[2 * i];
    return sum;
}

typedef struct MapState {
    struct nbd_handle *h;
    bool has_alloc;       /* base:allocation was negotiated */
    bool incremental;     /* keep dirty zeroes as zero extents */
    Reply reply;
    GArray *out;
    int64_t dirty;
} MapState;

/* Maps [offset, offset + len) from one reply; returns the bytes done. */
static int64_t map_window(MapState *m, int64_t offset, int64_t len)
{
    Cursor a, d;
    int64_t pos = offset, end;

    cursor_init(&a, m->reply.alloc, m->has_alloc, 0);
    cursor_init(&d, m->reply.dirty, m->incremental, STATE_DIRTY);
    end = offset + MIN(len, MIN(cursor_reach(&a), cursor_reach(&d)));
    while (pos < end) {
        int64_t n = MIN(MIN(a.left, d.left), end - pos);
        bool zero = cursor_flags(&a) & LIBNBD_STATE_ZERO;
        if (n <= 0)
            break; /* an empty extent: the window ends here */
        if (cursor_flags(&d) & STATE_DIRTY) {
            m->dirty += n;
            if (m->incremental || !zero)
                extents_append(m->out, pos, n, zero);
        }
        pos += n;
        cursor_skip(&a, n);
        cursor_skip(&d, n);
    }
    return pos - offset;
}

static bool map_step(MapState *m, int64_t offset, int64_t len,
                     int64_t *done, GError **errp)
{
    nbd_extent_callback cb = {.callback = reply_cb, .user_data = &m->reply};

    g_array_set_size(m->reply.alloc, 0);
    g_array_set_size(m->reply.dirty, 0);
    if ((m->has_alloc || m->incremental) &&
        nbd_block_status(m->h, len, offset, cb, 0) < 0) {
        set_nbd_error(errp, BACKUP_ERROR_FAILED, "export", "block status");
        return false;
    }
    *done = map_window(m, offset, len);
    if (*done <= 0) {
        g_set_error(errp, BACKUP_ERROR, BACKUP_ERROR_SERVER,
                    "the export answered block status at offset %" PRId64
                    " with no extent", offset);
        return false;
    }
    return true;
}

bool export_map(struct nbd_handle *h, const char *bitmap, GArray *extents,
                int64_t *dirty, GError **errp)
{
    g_autofree char *ctx = bitmap ? g_strconcat(DIRTY_PREFIX, bitmap, NULL)
                                  : NULL;
    MapState m = {
        .h = h,
        .has_alloc = nbd_can_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION)
                     == 1,
        .incremental = bitmap != NULL,
        .reply = {ctx, g_array_new(FALSE, FALSE, sizeof(uint32_t)),
                  g_array_new(FALSE, FALSE, sizeof(uint32_t))},
        .out = extents,
    };
    int64_t size = nbd_get_size(h), offset = 0, done;
    bool ok = size >= 0;

    if (!ok)
        set_nbd_error(errp, BACKUP_ERROR_FAILED, "export", "size");
    while (ok && offset < size) {
        ok = map_step(&m, offset, MIN(size - offset, MAP_WINDOW), &done,
                      errp);
        offset += done;
    }
    g_array_free(m.reply.alloc, TRUE);
    g_array_free(m.reply.dirty, TRUE);
    *dirty = m.dirty;
    return ok;
}

/* --- zeroes a target needs ------------------------------------------------ */

static int zero_cb(void *opaque, const char *ctx, uint64_t offset,
                   uint32_t *entries, size_t n, int *error)
{
    if (!strcmp(ctx, LIBNBD_CONTEXT_BASE_ALLOCATION))
        g_array_append_vals(opaque, entries, n);
    return 0;
}

/* Appends the parts of [offset, offset + len) that do not read as zeroes
 * on the export to @out, as zero extents. */
static bool needed_in(struct nbd_handle *h, int64_t offset, int64_t len,
                      GArray *reply, GArray *out, GError **errp)
{
    nbd_extent_callback cb = {.callback = zero_cb, .user_data = reply};
    int64_t end = offset + len;

    while (offset < end) {
        Cursor k;
        int64_t stop;
        g_array_set_size(reply, 0);
        if (nbd_block_status(h, MIN(end - offset, MAP_WINDOW), offset, cb,
                             0) < 0) {
            set_nbd_error(errp, BACKUP_ERROR_FAILED, "target", "block status");
            return false;
        }
        cursor_init(&k, reply, true, 0);
        stop = MIN(end, offset + cursor_reach(&k));
        if (!k.n || stop <= offset)
            break; /* no answer: write the rest */
        while (offset < stop && k.left > 0) {
            int64_t n = MIN(k.left, stop - offset);
            if (!(cursor_flags(&k) & LIBNBD_STATE_ZERO))
                extents_append(out, offset, n, true);
            offset += n;
            cursor_skip(&k, n);
        }
    }
    if (offset < end)
        extents_append(out, offset, end - offset, true);
    return true;
}

bool export_needed_zeroes(struct nbd_handle *h, const GArray *in,
                          GArray *out, GError **errp)
{
    g_autoptr(GArray) reply = g_array_new(FALSE, FALSE, sizeof(uint32_t));
    bool known = nbd_can_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1;

    for (guint i = 0; i < in->len; i++) {
        const Extent *e = &g_array_index(in, Extent, i);
        if (!e->zero)
            extents_append(out, e->offset, e->length, false);
        else if (!known)
            extents_append(out, e->offset, e->length, true);
        else if (!needed_in(h, e->offset, e->length, reply, out, errp))
            return false;
    }
    return true;
}
