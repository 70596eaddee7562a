/*
 * snapnbd.c - nbdkit plugin serving a disk image through snapnbd's block
 * layer (block/block.h).
 *
 * One block graph is opened at .get_ready, after all parameters are known,
 * and shared by every connection: the block layer is synchronous and thread
 * safe, so the plugin runs in nbdkit's PARALLEL thread model and each
 * callback is a direct, blocking bdrv_* call on nbdkit's worker thread.
 * nbdkit's -r is known only per connection (.open's readonly), after
 * .get_ready: so the graph is opened read-only at .get_ready (which checks
 * the parameters and the image early, and takes no write lock), and
 * reopened writable when the first writable connection comes while no
 * connection is open.  Under -r (or with readonly=true) that never
 * happens, and other programs may read the image meanwhile, as with
 * qemu-nbd -r.
 *
 * Block layer errors are negative errnos: the plugin reports them with
 * nbdkit_error and passes the errno to the client with nbdkit_set_error.
 */
#define NBDKIT_API_VERSION 2

#include "block/block.h"
#include "block/image-opts.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nbdkit-plugin.h>

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

/* Parameters. */
static char *filename;         /* file=, absolute */
static char *format;           /* format=, NULL: probe */
static int64_t offset_param;   /* offset= */
static const char *cache_mode; /* cache=none|writeback, NULL: writeback */
static char *aio;              /* aio= */
static char *discard;          /* discard=, NULL: unmap */
static char *detect_zeroes;    /* detect-zeroes= */
static bool readonly_param;    /* readonly= */

/* -D snapnbd.verbose=1: the block layer's -v messages on stderr. */
NBDKIT_DLL_PUBLIC int snapnbd_debug_verbose = 0;

/* The graph, opened at .get_ready and shared by all connections; replaced
 * (reopened writable) only under graph_lock while no connection is open.
 * user is the plugin's edge into it: its permissions take the locks. */
static BlockNode *node;
static BlockChild *user;
static GMutex graph_lock;
static unsigned open_connections; /* guarded by graph_lock */


static void release_graph(void)
{
    g_clear_pointer(&user, bdrv_user_detach);
    g_clear_pointer(&node, bdrv_unref);
}

/* Unload the plugin: flush and close the graph, free the parameters. */
static void snapnbd_unload(void)
{
    if (node) {
        bdrv_flush(node);
        release_graph();
    }
    free(filename);
    free(format);
    free(aio);
    free(discard);
    free(detect_zeroes);
}

/* Print the plugin's version and features for nbdkit --dump-plugin. */
static void snapnbd_dump_plugin(void)
{
    printf("snapnbd_version=%s\n", PACKAGE_VERSION);
    printf("snapnbd_formats=raw%s\n", bdrv_has_driver("qcow2") ? ",qcow2" : "");
}

/* Replace *p by a copy of value. */
static int set_string(char **p, const char *value)
{
    char *copy = strdup(value);

    if (copy == NULL) {
        nbdkit_error("strdup: %m");
        return -1;
    }
    free(*p);
    *p = copy;
    return 0;
}

/* Parse one key=value parameter. */
static int snapnbd_config(const char *key, const char *value)
{
    if (strcmp(key, "file") == 0) {
        free(filename);
        filename = nbdkit_absolute_path(value);
        if (filename == NULL)
            return -1;
    } else if (strcmp(key, "format") == 0) {
        if (*value == '\0') {
            nbdkit_error("format must not be empty (use raw)");
            return -1;
        }
        return set_string(&format, value);
    } else if (strcmp(key, "offset") == 0) {
        offset_param = nbdkit_parse_size(value);
        if (offset_param == -1) {
            nbdkit_error("invalid offset '%s'", value);
            return -1;
        }
    } else if (strcmp(key, "cache") == 0) {
        if (strcmp(value, "none") == 0)
            cache_mode = "none";
        else if (strcmp(value, "writeback") == 0)
            cache_mode = "writeback";
        else {
            nbdkit_error("invalid cache mode '%s' (use none or writeback)",
                         value);
            return -1;
        }
    } else if (strcmp(key, "aio") == 0)
        return set_string(&aio, value);
    else if (strcmp(key, "discard") == 0)
        return set_string(&discard, value);
    else if (strcmp(key, "detect-zeroes") == 0 ||
             strcmp(key, "detect_zeroes") == 0)
        return set_string(&detect_zeroes, value);
    else if (strcmp(key, "readonly") == 0) {
        int r = nbdkit_parse_bool(value);
        if (r == -1) {
            nbdkit_error("invalid readonly value '%s' (use true or false)",
                         value);
            return -1;
        }
        readonly_param = r;
    } else {
        nbdkit_error("unknown parameter '%s' (see nbdkit snapnbd --help)", key);
        return -1;
    }
    return 0;
}

/* Check that the required file parameter was given. */
static int snapnbd_config_complete(void)
{
    if (filename == NULL) {
        nbdkit_error("you must supply the file=<IMAGE> parameter "
                     "after the plugin name on the command line");
        return -1;
    }
    return 0;
}

#define snapnbd_config_help                                                    \
    "file=<IMAGE>     (required) The disk image to serve.\n"                   \
    "format=raw|qcow2 Image format (default: probed).\n"                       \
    "offset=<SIZE>    Serve the image from this offset on.\n"                  \
    "cache=none|writeback  Bypass the host page cache or not (default "        \
    "writeback).\n"                                                            \
    "aio=threads|io_uring  How the file is read and written (default "         \
    "threads).\n"                                                              \
    "discard=ignore|unmap  Whether trims free space in the file (default "     \
    "unmap).\n"                                                                \
    "detect-zeroes=off|on|unmap  Turn zero writes into write-zeroes.\n"        \
    "readonly=true    Open the image read-only."

/* The warning of a probed raw image, as qemu-nbd prints it: once,
 * though the graph is opened again for the first writable client. */
static void warn_probed(const char *message)
{
    static gsize warned;

    if (g_once_init_enter(&warned)) {
        fputs(message, stderr);
        g_once_init_leave(&warned, 1);
    }
}

/* The block graph of the parameters, @read_only or writable (unless
 * readonly=true); NULL after nbdkit_error.  The options are qemu-nbd's
 * for the same settings (block/image-opts.c). */
static BlockNode *open_graph(bool read_only, BlockChild **user_out)
{
    ImageSpec spec = {
        .filename = filename,
        .format = format,
        .offset = offset_param,
        .cache = cache_mode,
        .aio = aio,
        .discard = discard ? discard : "unmap", /* the plugin's default */
        .detect_zeroes = detect_zeroes,
        .read_only = readonly_param || read_only,
        .warn = warn_probed,
    };
    g_autoptr(GHashTable) t = NULL;
    g_autoptr(GError) err = NULL;
    g_autofree char *desc = NULL;
    BlockNode *graph;

    /* file= is absolute: a path, never read as a protocol prefix */
    t = image_opts_build(&spec, &err);
    if (t == NULL) {
        nbdkit_error("%s", err->message);
        return NULL;
    }
    bdrv_verbose = snapnbd_debug_verbose;
    graph = bdrv_open(t, &err);
    if (graph == NULL) {
        nbdkit_error("%s", err->message);
        if (!readonly_param && !read_only &&
            (g_error_matches(err, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED) ||
             g_error_matches(err, BDRV_ERROR, BDRV_ERROR_READ_ONLY)))
            nbdkit_error("the image was opened writable: "
                         "give readonly=true (or nbdkit -r) to serve it "
                         "read-only");
        return NULL;
    }
    /* The plugin reads, writes when writable, and lets nobody resize. */
    *user_out = bdrv_user_attach(
        graph, "the nbdkit plugin", "root",
        BDRV_PERM_CONSISTENT_READ |
            (bdrv_is_read_only(graph) ? 0 : BDRV_PERM_WRITE),
        BDRV_PERM_ALL & ~BDRV_PERM_RESIZE, NULL, NULL, &err);
    if (!*user_out) {
        nbdkit_error("%s", err->message);
        bdrv_unref(graph);
        return NULL;
    }
    desc = bdrv_describe(graph);
    nbdkit_debug("opened %s", desc);
    return graph;
}

/* Open the graph read-only: a writable connection reopens it. */
static int snapnbd_get_ready(void)
{
    node = open_graph(true, &user);
    return node ? 0 : -1;
}

/* Open a connection: every connection shares the one graph.  The first
 * writable one (none open) makes it writable: the read-only graph is
 * closed first, so that its lock is not in the way, and opened again if
 * the writable one cannot be. */
static void *snapnbd_open(int readonly)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&graph_lock);
    BlockNode *writable;

    if (!node) {
        nbdkit_error("%s: the image could not be opened again", filename);
        return NULL;
    }
    if (!readonly && !readonly_param && bdrv_is_read_only(node)) {
        if (open_connections > 0) {
            nbdkit_error("the image is open read-only for another "
                         "connection: a writable connection must wait");
            return NULL;
        }
        release_graph();
        writable = open_graph(false, &user);
        node = writable ? writable : open_graph(true, &user);
        if (!writable)
            return NULL;
    }
    open_connections++;
    return NBDKIT_HANDLE_NOT_NEEDED;
}

static void snapnbd_close(void *handle)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&graph_lock);

    open_connections--;
}

/* Report a block layer error -@ret for the request @what. */
static int report(int ret, const char *what, uint32_t count, uint64_t offset)
{
    nbdkit_error("%s of %" PRIu32 " bytes at offset %" PRIu64 " failed: %s",
                 what, count, offset, g_strerror(-ret));
    nbdkit_set_error(-ret);
    return -1;
}

/* Get the size of the image in bytes. */
static int64_t snapnbd_get_size(void *handle)
{
    int64_t size = bdrv_getlength(node);

    if (size < 0) {
        nbdkit_error("cannot get the size of %s: %s", filename,
                     strerror(-size));
        nbdkit_set_error(-size);
        return -1;
    }
    return size;
}

/* Can the client write?  Not if the graph was opened read-only. */
static int snapnbd_can_write(void *handle)
{
    return !bdrv_is_read_only(node);
}

/* Flush is always possible (a no-op on a read-only graph). */
static int snapnbd_can_flush(void *handle)
{
    return 1;
}

/* Trim is advertised when discards free space (discard=unmap). */
static int snapnbd_can_trim(void *handle)
{
    return bdrv_discard_unmaps(node);
}

/* Write zeroes is native; the block layer falls back to writing zeroes. */
static int snapnbd_can_zero(void *handle)
{
    return 1;
}

/* Fast zero when every node of the graph can zero without writing. */
static int snapnbd_can_fast_zero(void *handle)
{
    return bdrv_can_fast_zero(node);
}

/* FUA is passed down as BDRV_REQ_FUA (the block layer emulates it if the
 * driver cannot). */
static int snapnbd_can_fua(void *handle)
{
    return NBDKIT_FUA_NATIVE;
}

/* Cache requests become block layer prefetches. */
static int snapnbd_can_cache(void *handle)
{
    return NBDKIT_CACHE_NATIVE;
}

/* All connections share one graph, so a flush on one covers all. */
static int snapnbd_can_multi_conn(void *handle)
{
    return bdrv_can_multi_conn(node);
}

/* Block status is known. */
static int snapnbd_can_extents(void *handle)
{
    return 1;
}

/* Read data. */
static int snapnbd_pread(void *handle, void *buf, uint32_t count,
                         uint64_t offset, uint32_t flags)
{
    int ret = bdrv_pread(node, offset, count, buf);

    return ret < 0 ? report(ret, "read", count, offset) : 0;
}

/* Write data. */
static int snapnbd_pwrite(void *handle, const void *buf, uint32_t count,
                          uint64_t offset, uint32_t flags)
{
    int ret = bdrv_pwrite(node, offset, count, buf,
                          flags & NBDKIT_FLAG_FUA ? BDRV_REQ_FUA : 0);

    return ret < 0 ? report(ret, "write", count, offset) : 0;
}

/* Write zeroes, deallocating if allowed, failing with ENOTSUP if a fast
 * zero is asked and not possible. */
static int snapnbd_zero(void *handle, uint32_t count, uint64_t offset,
                        uint32_t flags)
{
    int bflags = 0;
    int ret;

    if (flags & NBDKIT_FLAG_FUA)
        bflags |= BDRV_REQ_FUA;
    if (flags & NBDKIT_FLAG_MAY_TRIM)
        bflags |= BDRV_REQ_MAY_UNMAP;
    if (flags & NBDKIT_FLAG_FAST_ZERO)
        bflags |= BDRV_REQ_NO_FALLBACK;
    ret = bdrv_pwrite_zeroes(node, offset, count, bflags);
    if (ret == -ENOTSUP) {
        /* Not an error worth a message: the client falls back. */
        nbdkit_set_error(ENOTSUP);
        return -1;
    }
    return ret < 0 ? report(ret, "write zeroes", count, offset) : 0;
}

/* Trim (discard), then flush for FUA. */
static int snapnbd_trim(void *handle, uint32_t count, uint64_t offset,
                        uint32_t flags)
{
    int ret = bdrv_pdiscard(node, offset, count);

    if (ret == 0 && (flags & NBDKIT_FLAG_FUA))
        ret = bdrv_flush(node);
    return ret < 0 ? report(ret, "trim", count, offset) : 0;
}

/* Flush the image to stable storage. */
static int snapnbd_flush(void *handle, uint32_t flags)
{
    int ret = bdrv_flush(node);

    if (ret < 0) {
        nbdkit_error("flush of %s failed: %s", filename, strerror(-ret));
        nbdkit_set_error(-ret);
        return -1;
    }
    return 0;
}

/* Prefetch a range that the client will read soon. */
static int snapnbd_cache(void *handle, uint32_t count, uint64_t offset,
                         uint32_t flags)
{
    int ret = bdrv_prefetch(node, offset, count);

    return ret < 0 ? report(ret, "cache", count, offset) : 0;
}

/* Requests of all connections run in parallel: the block layer is thread
 * safe. */
static int snapnbd_thread_model(void)
{
    return NBDKIT_THREAD_MODEL_PARALLEL;
}

/* Describe the allocation of a range from the block layer's status. */
static int snapnbd_extents(void *handle, uint32_t count, uint64_t offset,
                           uint32_t flags, struct nbdkit_extents *extents)
{
    uint64_t end = offset + count;

    while (offset < end) {
        int64_t pnum;
        uint32_t type = 0;
        int ret = bdrv_block_status(node, offset, end - offset, &pnum);

        if (ret < 0)
            return report(ret, "block status", end - offset, offset);
        if (!(ret & BDRV_BLOCK_DATA))
            type |= NBDKIT_EXTENT_HOLE;
        if (ret & BDRV_BLOCK_ZERO)
            type |= NBDKIT_EXTENT_ZERO;
        if (nbdkit_add_extent(extents, offset, pnum, type) == -1)
            return -1;
        offset += pnum;
        if (flags & NBDKIT_FLAG_REQ_ONE)
            break;
    }
    return 0;
}

static struct nbdkit_plugin plugin = {
    .name = "snapnbd",
    .longname = "nbdkit snapnbd plugin",
    .version = PACKAGE_VERSION,
    .description = "Serve a disk image through snapnbd's block layer.",
    .unload = snapnbd_unload,
    .dump_plugin = snapnbd_dump_plugin,
    .config = snapnbd_config,
    .config_complete = snapnbd_config_complete,
    .config_help = snapnbd_config_help,
    .magic_config_key = "file",
    .get_ready = snapnbd_get_ready,
    .open = snapnbd_open,
    .close = snapnbd_close,
    .get_size = snapnbd_get_size,
    .can_write = snapnbd_can_write,
    .can_flush = snapnbd_can_flush,
    .can_trim = snapnbd_can_trim,
    .can_zero = snapnbd_can_zero,
    .can_fast_zero = snapnbd_can_fast_zero,
    .can_fua = snapnbd_can_fua,
    .can_cache = snapnbd_can_cache,
    .can_multi_conn = snapnbd_can_multi_conn,
    .can_extents = snapnbd_can_extents,
    .pread = snapnbd_pread,
    .pwrite = snapnbd_pwrite,
    .zero = snapnbd_zero,
    .trim = snapnbd_trim,
    .flush = snapnbd_flush,
    .cache = snapnbd_cache,
    .extents = snapnbd_extents,
    .thread_model = snapnbd_thread_model,
};

NBDKIT_REGISTER_PLUGIN(plugin)
