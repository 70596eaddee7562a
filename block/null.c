/*
 * null.c - the "null-co" and "null-aio" drivers: a device of "size" bytes
 * (default 1 GiB) that reads zeroes (or leaves buffers alone with
 * read-zeroes=off, for benchmarks) and forgets writes.  "latency-ns" makes
 * every request take that long, as QEMU's option does: tests use it to
 * hold a request in flight.
 */
#include "block-int.h"

#include <errno.h>
#include <string.h>

typedef struct NullState {
    uint64_t size;
    uint64_t latency_ns;
    bool read_zeroes;
} NullState;

static void null_delay(BlockNode *bs)
{
    NullState *s = bs->opaque;

    if (s->latency_ns)
        g_usleep(s->latency_ns / 1000);
}

/* A number, up to INT64_MAX: QEMU's checks and words (block/null.c). */
static bool take_latency(GHashTable *options, uint64_t *out, GError **errp)
{
    g_autofree char *v = opt_take(options, "latency-ns");
    char *end;
    guint64 n;

    if (!v)
        return true;
    errno = 0;
    n = g_ascii_strtoull(v, &end, 0);
    if (errno || end == v || *end) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Parameter 'latency-ns' expects a number");
        return false;
    }
    if (n > G_MAXINT64) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "latency-ns is invalid");
        return false;
    }
    *out = n;
    return true;
}

static int null_open(BlockNode *bs, GHashTable *options, GError **errp)
{
    NullState *s = bs->opaque;
    GError *err = NULL;

    s->size = (uint64_t)1 << 30;
    if (!opt_take_size(options, "size", &s->size, errp) ||
        !take_latency(options, &s->latency_ns, errp))
        return -1;
    s->read_zeroes = opt_take_bool(options, "read-zeroes", true, &err);
    if (err) {
        g_propagate_error(errp, err);
        return -1;
    }
    bs->filename = g_strdup_printf("%s://", bs->drv->name);
    return 0;
}

static void null_close(BlockNode *bs) {}

static int64_t null_get_length(BlockNode *bs)
{
    NullState *s = bs->opaque;
    return s->size;
}

static int null_pread(BlockNode *bs, int64_t offset, int64_t bytes, void *buf)
{
    NullState *s = bs->opaque;

    null_delay(bs);
    if (s->read_zeroes)
        memset(buf, 0, bytes);
    return 0;
}

static int null_pwrite(BlockNode *bs, int64_t offset, int64_t bytes,
                       const void *buf, int flags)
{
    null_delay(bs);
    return 0;
}

static int null_pwrite_zeroes(BlockNode *bs, int64_t offset, int64_t bytes,
                              int flags)
{
    null_delay(bs);
    return 0;
}

static int null_pdiscard(BlockNode *bs, int64_t offset, int64_t bytes)
{
    return 0;
}

static int null_block_status(BlockNode *bs, int64_t offset, int64_t bytes,
                             int64_t *pnum)
{
    NullState *s = bs->opaque;

    *pnum = bytes;
    return s->read_zeroes ? BDRV_BLOCK_ZERO | BDRV_BLOCK_ALLOCATED
                          : BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
}

/* One device under QEMU's two names (QEMU's null-aio differs only in how
 * it completes requests, which is not visible here). */
#define NULL_DRIVER(driver_name)                                           \
    {                                                                      \
        .name = driver_name,                                               \
        .state_size = sizeof(NullState),                                   \
        .is_protocol = true,                                               \
        .open = null_open,                                                 \
        .close = null_close,                                               \
        .get_length = null_get_length,                                     \
        .pread = null_pread,                                               \
        .pwrite = null_pwrite,                                             \
        .pwrite_zeroes = null_pwrite_zeroes,                               \
        .pdiscard = null_pdiscard,                                         \
        .block_status = null_block_status,                                 \
        .supported_write_flags = BDRV_REQ_FUA,                             \
        .supported_zero_flags = BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK, \
        .can_fast_zero = true,                                             \
    }

const BlockDriver bdrv_null = NULL_DRIVER("null-co");
const BlockDriver bdrv_null_aio = NULL_DRIVER("null-aio");
