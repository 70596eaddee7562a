/*
 * nbd.c - the "nbd" protocol driver: a node whose bytes live in an export
 * of a remote NBD server (snapnbd, qemu-nbd, nbdkit), as QEMU's nbd
 * driver.  Options: server.type=unix,server.path=P or
 * server.type=inet,server.host=H,server.port=N; export; tls-creds;
 * tls-hostname; reconnect-delay; open-timeout; x-dirty-bitmap; or one
 * "filename" in QEMU's URI syntax (nbd://H:N/EXPORT,
 * nbd+unix:///EXPORT?socket=P, or the legacy nbd:unix:P:exportname=E).
 *
 * Design notes.
 *
 * One connection, many requests in flight.  io.c calls the driver from any
 * number of worker threads at once.  libnbd's synchronous calls hold the
 * handle's lock until their reply arrives, so one handle used that way
 * would carry one request at a time.  Instead each request is issued with
 * libnbd's aio calls (they queue and return at once) and the caller sleeps
 * until it completes; one poll thread per node moves bytes between the
 * socket and libnbd (nbd_aio_notify_read/write) and so runs the
 * completion callbacks.  An eventfd wakes the poll thread when a caller
 * queued a request that libnbd could not send at once.  One connection
 * also keeps the node's flushes simple: a flush covers every write this
 * node completed, whether or not the server advertises multi-conn.
 *
 * Request lifetime.  A request lives on its caller's stack.  libnbd calls
 * the completion callback when the reply came (or with ENOTCONN when the
 * connection died), and the callback's free function exactly once when it
 * will never touch the request again, also when the aio call itself
 * failed or the handle is closed with the request still queued.  So the
 * caller waits for the free function ("done"), never for the completion.
 *
 * Reconnect (QEMU's semantics).  When the connection breaks, the poll
 * thread closes the handle and connects again, with growing pauses, until
 * it succeeds or the node closes.  Requests that were in flight, and new
 * ones, wait up to reconnect-delay seconds from the break for the new
 * connection and are then sent again; after that (at once with the
 * default delay of 0) they fail with EIO until a connection is back.
 * An error the server replies with is never retried.
 *
 * Locks.  s->lock guards the handle pointer, the state, the generation
 * and the time of the break; a caller holds it while it queues a request,
 * so the poll thread never closes a handle under a caller.  done_lock
 * guards the "done" fields of all requests; the libnbd callbacks take only
 * done_lock (they run under the handle's own lock, so they may not take
 * s->lock or call libnbd).  Order: s->lock, then libnbd's lock, then
 * done_lock.
 */
#include "block-int.h"

#include <errno.h>
#include <libnbd.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define NBD_DEFAULT_PORT "10809"
/* libnbd refuses requests above 64 MiB; QEMU's client sends 32 MiB. */
#define NBD_MAX_TRANSFER (32 * 1024 * 1024)
/* Pauses between reconnect attempts grow up to this (QEMU: 16 s; ours is
 * shorter so that a server restarted by hand is found quickly). */
#define RECONNECT_MAX_PAUSE_MS 2000
#define RECONNECT_FIRST_PAUSE_MS 100

typedef enum {
    NBD_CONNECTED,
    NBD_RECONNECTING,   /* the poll thread tries to connect again */
    NBD_QUIT,           /* the node closes */
} NbdConnState;

typedef struct NbdState {
    /* Options, fixed after open. */
    char *path;             /* server.type=unix */
    char *host, *port;      /* server.type=inet */
    char *export;
    char *context;          /* "base:allocation", or x-dirty-bitmap's */
    char *tls_creds;        /* the object's id, or NULL */
    char *tls_hostname;
    BdrvTlsCreds tls;       /* what the object holds */
    int64_t reconnect_delay_us;
    int64_t open_timeout_us;
    char *uri;              /* how query-named-block-nodes shows it */

    /* What the server told at the first connection; a reconnect that
     * finds anything else is refused, as QEMU does. */
    int64_t size;
    bool can_flush, can_fua, can_zero, can_fast_zero, can_trim;
    bool has_context;       /* the server agreed to s->context */
    uint32_t min_block, max_block;

    GMutex lock;
    GCond state_cond;       /* broadcast when state or handle changes */
    NbdConnState state;     /* guarded by lock */
    struct nbd_handle *h;   /* guarded by lock; NULL unless CONNECTED */
    uint64_t gen;           /* bumped by every break; guarded by lock */
    gint64 lost_at;         /* monotonic time of the last break; lock */

    GMutex done_lock;
    GCond done_cond;        /* broadcast when any request is done */

    int wake_fd;            /* eventfd: wakes the poll thread */
    GThread *thread;        /* the poll thread */
} NbdState;

/* One request on its caller's stack (see "Request lifetime"). */
typedef struct NbdRequest {
    NbdState *s;
    bool done;              /* libnbd let go of it; done_lock */
    bool replied;           /* the completion callback ran */
    int error;              /* its errno, 0 for success */
    /* Block status: the first extent of s->context. */
    const char *context;
    bool got_extent;
    uint64_t extent_len;
    uint32_t extent_flags;
} NbdRequest;

/* What a request does, given a handle and its completion callback. */
typedef int64_t (*NbdSubmit)(struct nbd_handle *h, NbdRequest *req,
                             nbd_completion_callback cb, void *opaque);

/* --- TLS credentials from the server's objects ------------------------ */

static BdrvTlsCredsLookup tls_creds_lookup;

void bdrv_set_tls_creds_lookup(BdrvTlsCredsLookup fn)
{
    tls_creds_lookup = fn;
}

/* --- options ---------------------------------------------------------- */

/* nbd[+tcp|+unix]://[HOST[:PORT]]/[EXPORT][?socket=PATH], QEMU's rules. */
static bool parse_uri(NbdState *s, const char *filename, GError **errp)
{
    g_autoptr(GUri) uri = g_uri_parse(filename, G_URI_FLAGS_ENCODED_PATH,
                                      NULL);
    const char *scheme = uri ? g_uri_get_scheme(uri) : NULL;
    const char *query = uri ? g_uri_get_query(uri) : NULL;
    const char *path = uri ? g_uri_get_path(uri) : NULL;
    bool is_unix = g_strcmp0(scheme, "nbd+unix") == 0;

    if (!uri || (!is_unix && g_strcmp0(scheme, "nbd") != 0 &&
                 g_strcmp0(scheme, "nbd+tcp") != 0)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Invalid NBD URI '%s'", filename);
        return false;
    }
    if (path && *path == '/')
        path++;
    s->export = g_uri_unescape_string(path ? path : "", NULL);
    if (is_unix) {
        if (g_uri_get_host(uri) && *g_uri_get_host(uri)) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                        "Invalid NBD URI '%s': nbd+unix:// takes no host",
                        filename);
            return false;
        }
        if (!query || !g_str_has_prefix(query, "socket=") ||
            strchr(query, '&')) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                        "Invalid NBD URI '%s': expected ?socket=PATH",
                        filename);
            return false;
        }
        s->path = g_uri_unescape_string(query + 7, NULL);
        return true;
    }
    if (query) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Invalid NBD URI '%s': no query allowed", filename);
        return false;
    }
    s->host = g_strdup(g_uri_get_host(uri) && *g_uri_get_host(uri)
                           ? g_uri_get_host(uri) : "localhost");
    s->port = g_uri_get_port(uri) > 0
                  ? g_strdup_printf("%d", g_uri_get_port(uri))
                  : g_strdup(NBD_DEFAULT_PORT);
    return true;
}

/* The legacy nbd:unix:PATH[:exportname=E] and nbd:HOST:PORT[:exportname=E]. */
static bool parse_legacy(NbdState *s, const char *filename, GError **errp)
{
    g_autofree char *rest = g_strdup(filename + 4);
    char *name = strstr(rest, ":exportname=");

    if (name) {
        s->export = g_strdup(name + 12);
        *name = '\0';
    }
    if (g_str_has_prefix(rest, "unix:")) {
        s->path = g_strdup(rest + 5);
    } else {
        char *colon = strrchr(rest, ':');
        if (!colon || colon == rest) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                        "Invalid NBD filename '%s'", filename);
            return false;
        }
        *colon = '\0';
        s->host = g_strdup(rest);
        s->port = g_strdup(colon + 1);
    }
    return true;
}

/* QEMU's older flat options: path=SOCKET, or host=HOST[,port=PORT]. */
static bool parse_legacy_options(NbdState *s, GHashTable *options,
                                 GError **errp)
{
    s->path = opt_take(options, "path");
    s->host = opt_take(options, "host");
    s->port = opt_take(options, "port");
    if (s->path && s->host) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "path and host may not be used at the same time");
        return false;
    }
    if (s->port && !s->host) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "port may not be used without host");
        return false;
    }
    if (s->host && !s->port)
        s->port = g_strdup(NBD_DEFAULT_PORT);
    return true;
}

/* server.* (QEMU's SocketAddress), the older path/host/port, or a
 * filename. */
static bool parse_server(NbdState *s, GHashTable *options, GError **errp)
{
    g_autofree char *filename = opt_take(options, "filename");
    g_autoptr(GHashTable) server = opt_take_prefix(options, "server");
    g_autofree char *type = opt_take(server, "type");
    GHashTableIter it;
    gpointer k;

    if (filename) {
        if (g_hash_table_size(server) || type ||
            g_hash_table_contains(options, "export")) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                        "No 'server' or 'export' options may be given "
                        "along with an NBD filename");
            return false;
        }
        return g_str_has_prefix(filename, "nbd:") &&
                       !g_str_has_prefix(filename, "nbd://")
                   ? parse_legacy(s, filename, errp)
                   : parse_uri(s, filename, errp);
    }
    s->export = opt_take(options, "export");
    if (g_hash_table_contains(options, "path") ||
        g_hash_table_contains(options, "host") ||
        g_hash_table_contains(options, "port")) {
        if (type || g_hash_table_size(server)) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                        "Cannot use 'server' and path/host/port at the "
                        "same time");
            return false;
        }
        return parse_legacy_options(s, options, errp);
    }
    if (!type) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "NBD server address missing");
        return false;
    }
    if (strcmp(type, "unix") == 0) {
        s->path = opt_take(server, "path");
        if (!s->path) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                        "Parameter 'server.path' is missing");
            return false;
        }
        opt_take_bool(server, "abstract", false, NULL); /* unsupported */
    } else if (strcmp(type, "inet") == 0) {
        s->host = opt_take(server, "host");
        s->port = opt_take(server, "port");
        if (!s->host || !s->port) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                        "Parameter 'server.%s' is missing",
                        s->host ? "port" : "host");
            return false;
        }
    } else {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Parameter 'server.type' does not accept value '%s' "
                    "(snapnbd connects to unix and inet servers)", type);
        return false;
    }
    g_hash_table_iter_init(&it, server);
    if (g_hash_table_iter_next(&it, &k, NULL)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Parameter 'server.%s' is unexpected", (const char *)k);
        return false;
    }
    return true;
}

static bool take_seconds(GHashTable *options, const char *key, int64_t *us,
                         GError **errp)
{
    g_autofree char *v = opt_take(options, key);
    char *end = NULL;
    guint64 n;

    if (!v)
        return true;
    errno = 0;
    n = g_ascii_strtoull(v, &end, 10);
    if (!g_ascii_isdigit(*v) || *end || errno || n > UINT32_MAX) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Parameter '%s' expects uint32_t", key);
        return false;
    }
    *us = (int64_t)n * G_USEC_PER_SEC;
    return true;
}

static char *make_uri(NbdState *s)
{
    const char *e = s->export ? s->export : "";

    if (s->path)
        return g_strdup_printf("nbd+unix:///%s?socket=%s", e, s->path);
    return g_strdup_printf("nbd://%s:%s/%s", s->host, s->port, e);
}

/* --- connecting ------------------------------------------------------- */

static bool set_tls(NbdState *s, struct nbd_handle *h)
{
    if (!s->tls_creds)
        return true;
    if (nbd_set_tls(h, LIBNBD_TLS_REQUIRE) < 0 ||
        nbd_set_tls_verify_peer(h, s->tls.verify_peer) < 0)
        return false;
    if (s->tls.psk) {
        g_autofree char *keys = g_build_filename(s->tls.dir, "keys.psk",
                                                 NULL);
        if (nbd_set_tls_psk_file(h, keys) < 0)
            return false;
        if (s->tls.username && nbd_set_tls_username(h, s->tls.username) < 0)
            return false;
    } else if (nbd_set_tls_certificates(h, s->tls.dir) < 0) {
        return false;
    }
    return true;
}

/* QEMU's words for a failed connection: the socket's errno, or that the
 * export is not there; else what libnbd says. */
static void connect_error(GError **errp, const char *addr)
{
    const char *msg = nbd_get_error() ? nbd_get_error() : "";

    if (strstr(msg, "server has no export named"))
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_FOUND,
                    "Requested export not available");
    else if (strstr(msg, ": connect: ") && nbd_get_errno())
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "Failed to connect to '%s': %s", addr,
                    g_strerror(nbd_get_errno()));
    else
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "Failed to connect to '%s': %s", addr, msg);
}

/* A connected handle, or NULL with @errp set. */
static struct nbd_handle *connect_once(NbdState *s, GError **errp)
{
    struct nbd_handle *h = nbd_create();
    g_autofree char *addr = s->path ? g_strdup(s->path)
                                    : g_strdup_printf("%s:%s", s->host,
                                                      s->port);
    int r;

    if (!h) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED, "%s",
                    nbd_get_error());
        return NULL;
    }
    if (nbd_set_export_name(h, s->export ? s->export : "") < 0 ||
        nbd_add_meta_context(h, s->context) < 0 || !set_tls(s, h))
        goto fail;
    r = s->path ? nbd_connect_unix(h, s->path)
                : nbd_connect_tcp(h, s->host, s->port);
    if (r < 0)
        goto fail;
    return h;

fail:
    connect_error(errp, addr);
    nbd_close(h);
    return NULL;
}

/* Records what the server offers at the first connection. */
static bool learn_server(BlockNode *bs, NbdState *s, struct nbd_handle *h,
                         GError **errp)
{
    int64_t min = nbd_get_block_size(h, LIBNBD_SIZE_MINIMUM);
    int64_t max = nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM);

    s->size = nbd_get_size(h);
    if (s->size < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "Could not get the size of '%s': %s", s->uri,
                    nbd_get_error());
        return false;
    }
    if (!bs->read_only && nbd_is_read_only(h) > 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_READ_ONLY,
                    "NBD export is read-only");
        return false;
    }
    s->has_context = nbd_can_meta_context(h, s->context) > 0;
    if (!s->has_context && strcmp(s->context, "base:allocation") != 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_FOUND,
                    "requested x-dirty-bitmap %s not found", s->context);
        return false;
    }
    s->can_flush = nbd_can_flush(h) > 0;
    s->can_fua = nbd_can_fua(h) > 0;
    s->can_zero = nbd_can_zero(h) > 0;
    s->can_fast_zero = nbd_can_fast_zero(h) > 0;
    s->can_trim = nbd_can_trim(h) > 0;
    s->min_block = min > 0 ? (uint32_t)min : 1;
    s->max_block = max > 0 ? (uint32_t)MIN(max, NBD_MAX_TRANSFER)
                           : NBD_MAX_TRANSFER;
    return true;
}

/* A new connection must show the export the node was opened on. */
static bool same_server(NbdState *s, struct nbd_handle *h)
{
    return nbd_get_size(h) == s->size &&
           (nbd_can_meta_context(h, s->context) > 0) == s->has_context;
}

/* --- the poll thread ------------------------------------------------- */

static void wake(NbdState *s)
{
    uint64_t one = 1;
    ssize_t r = write(s->wake_fd, &one, sizeof(one));

    (void)r; /* a full counter already wakes the thread */
}

/* Sleeps @ms, or less if woken; false when the node closes. */
static bool pause_unless_quit(NbdState *s, int ms)
{
    struct pollfd p = { .fd = s->wake_fd, .events = POLLIN };
    uint64_t n;
    bool quit;

    if (poll(&p, 1, ms) > 0 && read(s->wake_fd, &n, sizeof(n)) < 0)
        n = 0;
    g_mutex_lock(&s->lock);
    quit = s->state == NBD_QUIT;
    g_mutex_unlock(&s->lock);
    return !quit;
}

/* The connection broke: give up the handle (its requests are then done,
 * unreplied) and connect again until it works or the node closes. */
static void reconnect(BlockNode *bs, NbdState *s)
{
    struct nbd_handle *old;
    int pause = RECONNECT_FIRST_PAUSE_MS;

    g_mutex_lock(&s->lock);
    old = s->h;
    s->h = NULL;
    if (s->state == NBD_CONNECTED)
        s->state = NBD_RECONNECTING;
    s->gen++;
    s->lost_at = g_get_monotonic_time();
    g_cond_broadcast(&s->state_cond);
    g_mutex_unlock(&s->lock);
    fprintf(stderr, "snapnbd: node '%s': lost the connection to %s\n",
            bs->node_name, s->uri);
    nbd_close(old);

    while (pause_unless_quit(s, pause)) {
        g_autoptr(GError) err = NULL;
        struct nbd_handle *h = connect_once(s, &err);

        if (h && !same_server(s, h)) {
            g_set_error(&err, BDRV_ERROR, BDRV_ERROR_FAILED,
                        "the export changed its size or block status");
            nbd_close(h);
            h = NULL;
        }
        if (h) {
            g_mutex_lock(&s->lock);
            if (s->state == NBD_QUIT) {
                g_mutex_unlock(&s->lock);
                nbd_close(h);
                return;
            }
            s->h = h;
            s->state = NBD_CONNECTED;
            g_cond_broadcast(&s->state_cond);
            g_mutex_unlock(&s->lock);
            fprintf(stderr, "snapnbd: node '%s': reconnected to %s\n",
                    bs->node_name, s->uri);
            return;
        }
        if (bdrv_verbose)
            fprintf(stderr, "snapnbd: node '%s': %s\n", bs->node_name,
                    err->message);
        pause = MIN(pause * 2, RECONNECT_MAX_PAUSE_MS);
    }
}

static gpointer poll_thread(gpointer opaque)
{
    BlockNode *bs = opaque;
    NbdState *s = bs->opaque;

    for (;;) {
        struct pollfd p[2] = { { .fd = -1 }, { .fd = s->wake_fd,
                                               .events = POLLIN } };
        struct nbd_handle *h;
        unsigned dir;
        uint64_t n;

        g_mutex_lock(&s->lock);
        h = s->h;   /* only this thread changes it */
        if (s->state == NBD_QUIT) {
            g_mutex_unlock(&s->lock);
            return NULL;
        }
        g_mutex_unlock(&s->lock);
        if (nbd_aio_is_dead(h) || nbd_aio_is_closed(h)) {
            reconnect(bs, s);
            continue;
        }
        p[0].fd = nbd_aio_get_fd(h);
        dir = nbd_aio_get_direction(h);
        p[0].events = (dir & LIBNBD_AIO_DIRECTION_READ ? POLLIN : 0) |
                      (dir & LIBNBD_AIO_DIRECTION_WRITE ? POLLOUT : 0);
        if (poll(p, 2, -1) < 0)
            continue;
        if (p[1].revents & POLLIN && read(s->wake_fd, &n, sizeof(n)) < 0)
            continue;
        /* A hang-up or error is read (EOF: the handle dies) or written
         * (EPIPE), whichever libnbd waits for. */
        if ((dir & LIBNBD_AIO_DIRECTION_READ) &&
            (p[0].revents & (POLLIN | POLLHUP | POLLERR)))
            nbd_aio_notify_read(h);
        else if ((dir & LIBNBD_AIO_DIRECTION_WRITE) &&
                 (p[0].revents & (POLLOUT | POLLHUP | POLLERR)))
            nbd_aio_notify_write(h);
    }
}

/* --- requests ------------------------------------------------------------ */

static int request_replied(void *opaque, int *error)
{
    NbdRequest *req = opaque;

    req->replied = true;
    req->error = *error;
    return 1; /* retire the command: nobody asks for it by cookie */
}

static void request_done(void *opaque)
{
    NbdRequest *req = opaque;
    NbdState *s = req->s;

    g_mutex_lock(&s->done_lock);
    req->done = true;
    g_cond_broadcast(&s->done_cond);
    g_mutex_unlock(&s->done_lock);
}

/* Did the request fail because the connection did, not the server? */
static bool connection_failed(const NbdRequest *req)
{
    return !req->replied || req->error == ENOTCONN ||
           req->error == ESHUTDOWN;
}

/* Waits for a connection until reconnect-delay after the break has
 * passed; the handle and its generation, or NULL (EIO).  Called and
 * returns with s->lock held. */
static struct nbd_handle *wait_connected(NbdState *s, uint64_t *gen)
{
    while (s->state == NBD_RECONNECTING) {
        gint64 deadline = s->lost_at + s->reconnect_delay_us;
        if (g_get_monotonic_time() >= deadline)
            return NULL;
        g_cond_wait_until(&s->state_cond, &s->lock, deadline);
    }
    *gen = s->gen;
    return s->state == NBD_CONNECTED ? s->h : NULL;
}

/* After a request of generation @gen saw the connection fail: waits until
 * the poll thread noticed it too, and says whether to send it again. */
static bool may_retry(NbdState *s, uint64_t gen)
{
    gint64 deadline = g_get_monotonic_time() + s->reconnect_delay_us;
    bool retry;

    if (s->reconnect_delay_us == 0)
        return false;
    wake(s);
    g_mutex_lock(&s->lock);
    /* (A server shutting down may say ESHUTDOWN and stay connected.) */
    while (s->gen == gen && s->state == NBD_CONNECTED &&
           g_get_monotonic_time() < deadline)
        g_cond_wait_until(&s->state_cond, &s->lock,
                          MIN(deadline, g_get_monotonic_time() +
                                            G_USEC_PER_SEC / 10));
    retry = s->state == NBD_RECONNECTING &&
            g_get_monotonic_time() < s->lost_at + s->reconnect_delay_us;
    g_mutex_unlock(&s->lock);
    return retry;
}

/* Sends a request (again, across reconnects) and waits for its answer:
 * 0 or a negative errno. */
static int nbdc_request(NbdState *s, NbdRequest *req, NbdSubmit submit,
                       void *opaque)
{
    for (;;) {
        struct nbd_handle *h;
        uint64_t gen = 0;
        int64_t cookie;

        const char *context = req->context;

        *req = (NbdRequest){ .s = s, .context = context };
        g_mutex_lock(&s->lock);
        h = wait_connected(s, &gen);
        if (!h) {
            g_mutex_unlock(&s->lock);
            return -EIO;
        }
        cookie = submit(h, req,
                        (nbd_completion_callback){ .callback = request_replied,
                                                   .user_data = req,
                                                   .free = request_done },
                        opaque);
        if (cookie < 0 && !nbd_aio_is_dead(h)) {
            req->replied = true; /* refused before sending: not retried */
            req->error = nbd_get_errno() ? nbd_get_errno() : EIO;
        }
        g_mutex_unlock(&s->lock);
        wake(s);

        g_mutex_lock(&s->done_lock);
        while (!req->done)
            g_cond_wait(&s->done_cond, &s->done_lock);
        g_mutex_unlock(&s->done_lock);

        if (req->replied && req->error == 0)
            return 0;
        if (!connection_failed(req))
            return -req->error;
        if (!may_retry(s, gen))
            return -EIO;
    }
}

typedef struct NbdIo {
    void *buf;
    uint64_t offset, count;
    uint32_t flags;
} NbdIo;

static int64_t submit_pread(struct nbd_handle *h, NbdRequest *req,
                            nbd_completion_callback cb, void *opaque)
{
    NbdIo *io = opaque;
    return nbd_aio_pread(h, io->buf, io->count, io->offset, cb, 0);
}

static int64_t submit_pwrite(struct nbd_handle *h, NbdRequest *req,
                             nbd_completion_callback cb, void *opaque)
{
    NbdIo *io = opaque;
    return nbd_aio_pwrite(h, io->buf, io->count, io->offset, cb, io->flags);
}

static int64_t submit_zero(struct nbd_handle *h, NbdRequest *req,
                           nbd_completion_callback cb, void *opaque)
{
    NbdIo *io = opaque;
    return nbd_aio_zero(h, io->count, io->offset, cb, io->flags);
}

static int64_t submit_trim(struct nbd_handle *h, NbdRequest *req,
                           nbd_completion_callback cb, void *opaque)
{
    NbdIo *io = opaque;
    return nbd_aio_trim(h, io->count, io->offset, cb, 0);
}

static int64_t submit_flush(struct nbd_handle *h, NbdRequest *req,
                            nbd_completion_callback cb, void *opaque)
{
    return nbd_aio_flush(h, cb, 0);
}

/* The first extent of our context; any others are ignored. */
static int got_extent(void *opaque, const char *context, uint64_t offset,
                      uint32_t *entries, size_t nr_entries, int *error)
{
    NbdRequest *req = opaque;

    if (strcmp(context, req->context) == 0 && nr_entries >= 2 &&
        !req->got_extent) {
        req->got_extent = true;
        req->extent_len = entries[0];
        req->extent_flags = entries[1];
    }
    return 0;
}

static int64_t submit_block_status(struct nbd_handle *h, NbdRequest *req,
                                   nbd_completion_callback cb, void *opaque)
{
    NbdIo *io = opaque;
    return nbd_aio_block_status(
        h, io->count, io->offset,
        (nbd_extent_callback){ .callback = got_extent, .user_data = req },
        cb, LIBNBD_CMD_FLAG_REQ_ONE);
}

/* --- the driver ---------------------------------------------------------- */

static int nbdc_pread(BlockNode *bs, int64_t offset, int64_t bytes, void *buf)
{
    NbdState *s = bs->opaque;
    NbdIo io = { .buf = buf, .offset = offset, .count = bytes };
    NbdRequest req = { 0 };

    return nbdc_request(s, &req, submit_pread, &io);
}

static int nbdc_flush(BlockNode *bs)
{
    NbdState *s = bs->opaque;
    NbdRequest req = { 0 };

    return s->can_flush ? nbdc_request(s, &req, submit_flush, NULL) : 0;
}

/* FUA where the server has it, else a flush after the request. */
static int with_fua(BlockNode *bs, NbdSubmit submit, NbdIo *io, int flags)
{
    NbdState *s = bs->opaque;
    NbdRequest req = { 0 };
    int ret;

    if ((flags & BDRV_REQ_FUA) && s->can_fua)
        io->flags |= LIBNBD_CMD_FLAG_FUA;
    ret = nbdc_request(s, &req, submit, io);
    if (ret == 0 && (flags & BDRV_REQ_FUA) && !s->can_fua)
        ret = nbdc_flush(bs);
    return ret;
}

static int nbdc_pwrite(BlockNode *bs, int64_t offset, int64_t bytes,
                      const void *buf, int flags)
{
    NbdIo io = { .buf = (void *)buf, .offset = offset, .count = bytes };

    return with_fua(bs, submit_pwrite, &io, flags);
}

static int nbdc_pwrite_zeroes(BlockNode *bs, int64_t offset, int64_t bytes,
                             int flags)
{
    NbdState *s = bs->opaque;
    NbdIo io = { .offset = offset, .count = bytes };
    int ret;

    if (!s->can_zero)
        return -ENOTSUP;
    if (!(flags & BDRV_REQ_MAY_UNMAP))
        io.flags |= LIBNBD_CMD_FLAG_NO_HOLE;
    if (flags & BDRV_REQ_NO_FALLBACK) {
        if (!s->can_fast_zero)
            return -ENOTSUP;
        io.flags |= LIBNBD_CMD_FLAG_FAST_ZERO;
    }
    ret = with_fua(bs, submit_zero, &io, flags);
    /* A server that cannot zero fast (or at all, after all) says ENOTSUP:
     * io.c then writes zero buffers unless the caller forbade it. */
    return ret;
}

static int nbdc_pdiscard(BlockNode *bs, int64_t offset, int64_t bytes)
{
    NbdState *s = bs->opaque;
    NbdIo io = { .offset = offset, .count = bytes };
    NbdRequest req = { 0 };

    return s->can_trim ? nbdc_request(s, &req, submit_trim, &io) : 0;
}

/*
 * As QEMU: the first extent of the negotiated context, its bits read as
 * base:allocation's (hole: no data; zero: reads as zeroes), so that with
 * x-dirty-bitmap a dirty range (bit 0) shows as not allocated and a clean
 * one as data.  Allocated means data or zero, as QEMU's io.c adds it.
 */
static int nbdc_block_status(BlockNode *bs, int64_t offset, int64_t bytes,
                            int64_t *pnum)
{
    NbdState *s = bs->opaque;
    int64_t start = offset - offset % s->min_block;
    int64_t end = MIN(ROUND_UP(offset + MIN(bytes, (int64_t)1 << 30),
                               (int64_t)s->min_block), s->size);
    NbdIo io = { .offset = start, .count = end - start };
    NbdRequest req = { .context = s->context };
    int ret, st;

    if (!s->has_context) {
        *pnum = bytes;
        return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
    }
    ret = nbdc_request(s, &req, submit_block_status, &io);
    if (ret < 0)
        return ret;
    if (!req.got_extent || req.extent_len == 0 ||
        start + (int64_t)req.extent_len <= offset)
        return -EIO; /* the server broke the protocol */
    *pnum = MIN(start + (int64_t)req.extent_len - offset, bytes);
    st = (req.extent_flags & LIBNBD_STATE_HOLE ? 0 : BDRV_BLOCK_DATA) |
         (req.extent_flags & LIBNBD_STATE_ZERO ? BDRV_BLOCK_ZERO : 0);
    return st ? st | BDRV_BLOCK_ALLOCATED : 0;
}

static int64_t nbdc_get_length(BlockNode *bs)
{
    NbdState *s = bs->opaque;
    return s->size;
}

static void nbdc_refresh_limits(BlockNode *bs, BlockLimits *limits)
{
    NbdState *s = bs->opaque;

    limits->request_alignment = s->min_block;
    limits->min_request = s->min_block > 1 ? s->min_block : 0;
    limits->max_transfer = s->max_block;
    /* NBD lengths are 32 bits. */
    limits->max_pwrite_zeroes = (UINT32_MAX / s->min_block) * s->min_block;
    limits->max_pdiscard = limits->max_pwrite_zeroes;
}

/* The remote export may hold anything. */
static bool nbdc_has_zero_init(BlockNode *bs)
{
    return false;
}

static char *nbdc_describe(BlockNode *bs)
{
    NbdState *s = bs->opaque;

    return g_strdup_printf("%s (context %s%s, reconnect-delay=%"
                           G_GINT64_FORMAT ")", s->uri, s->context,
                           s->has_context ? "" : " refused",
                           s->reconnect_delay_us / G_USEC_PER_SEC);
}

static bool parse_options(BlockNode *bs, NbdState *s, GHashTable *options,
                          GError **errp)
{
    if (!parse_server(s, options, errp) ||
        !take_seconds(options, "reconnect-delay", &s->reconnect_delay_us,
                      errp) ||
        !take_seconds(options, "open-timeout", &s->open_timeout_us, errp))
        return false;
    s->context = opt_take(options, "x-dirty-bitmap");
    if (!s->context)
        s->context = g_strdup("base:allocation");
    s->tls_creds = opt_take(options, "tls-creds");
    s->tls_hostname = opt_take(options, "tls-hostname");
    s->uri = make_uri(s);
    if (!s->tls_creds)
        g_clear_pointer(&s->tls_hostname, g_free); /* QEMU ignores it */
    if (s->tls_creds) {
        if (!tls_creds_lookup) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_FOUND,
                        "No TLS credentials with id '%s'", s->tls_creds);
            return false;
        }
        if (!tls_creds_lookup(s->tls_creds, &s->tls, errp))
            return false;
    }
    /* libnbd checks the certificate against the host it connects to; it
     * has no way to name another one. */
    if (s->tls_hostname && g_strcmp0(s->tls_hostname, s->host) != 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "tls-hostname '%s' differs from server.host: not "
                    "supported (libnbd checks the server's certificate "
                    "against the host it connects to)", s->tls_hostname);
        return false;
    }
    return true;
}

/* The first connection, tried again until open-timeout (QEMU: once when
 * it is 0). */
static struct nbd_handle *connect_first(NbdState *s, GError **errp)
{
    gint64 deadline = g_get_monotonic_time() + s->open_timeout_us;

    for (;;) {
        GError *err = NULL;
        struct nbd_handle *h = connect_once(s, &err);

        if (h || g_get_monotonic_time() >= deadline) {
            if (err)
                g_propagate_error(errp, err);
            return h;
        }
        g_error_free(err);
        g_usleep(RECONNECT_FIRST_PAUSE_MS * 1000);
    }
}

static void free_state(NbdState *s)
{
    g_free(s->path);
    g_free(s->host);
    g_free(s->port);
    g_free(s->export);
    g_free(s->context);
    g_free(s->tls_creds);
    g_free(s->tls_hostname);
    g_free(s->tls.dir);
    g_free(s->tls.username);
    g_free(s->uri);
    g_mutex_clear(&s->lock);
    g_mutex_clear(&s->done_lock);
    g_cond_clear(&s->state_cond);
    g_cond_clear(&s->done_cond);
    if (s->wake_fd >= 0)
        close(s->wake_fd);
}

static int nbdc_open(BlockNode *bs, GHashTable *options, GError **errp)
{
    NbdState *s = bs->opaque;
    struct nbd_handle *h;

    g_mutex_init(&s->lock);
    g_mutex_init(&s->done_lock);
    g_cond_init(&s->state_cond);
    g_cond_init(&s->done_cond);
    s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s->wake_fd < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED, "eventfd: %s",
                    g_strerror(errno));
        free_state(s);
        return -1;
    }
    if (!parse_options(bs, s, options, errp)) {
        free_state(s);
        return -1;
    }
    h = connect_first(s, errp);
    if (!h) {
        free_state(s);
        return -1;
    }
    if (!learn_server(bs, s, h, errp)) {
        nbd_close(h);
        free_state(s);
        return -1;
    }
    s->h = h;
    s->state = NBD_CONNECTED;
    bs->filename = g_strdup(s->uri);
    s->thread = g_thread_new("nbd-client", poll_thread, bs);
    return 0;
}

/* Tells the server goodbye, without waiting long for a stalled one. */
static void disconnect(struct nbd_handle *h)
{
    gint64 deadline = g_get_monotonic_time() + G_USEC_PER_SEC;

    if (nbd_aio_is_ready(h) && nbd_aio_disconnect(h, 0) == 0) {
        while (!nbd_aio_is_closed(h) && !nbd_aio_is_dead(h) &&
               g_get_monotonic_time() < deadline &&
               nbd_poll(h, 100) >= 0)
            ;
    }
    nbd_close(h);
}

static void nbdc_close(BlockNode *bs)
{
    NbdState *s = bs->opaque;

    g_mutex_lock(&s->lock);
    s->state = NBD_QUIT;
    g_cond_broadcast(&s->state_cond);
    g_mutex_unlock(&s->lock);
    wake(s);
    g_thread_join(s->thread);
    if (s->h)
        disconnect(s->h);
    s->h = NULL;
    free_state(s);
}

const BlockDriver bdrv_nbd = {
    .name = "nbd",
    .state_size = sizeof(NbdState),
    /* Not a protocol for io.c's block status cache: other clients of the
     * server change the export (and its dirty bitmaps) behind our back. */
    .is_protocol = false,
    .open = nbdc_open,
    .close = nbdc_close,
    .get_length = nbdc_get_length,
    .refresh_limits = nbdc_refresh_limits,
    .describe = nbdc_describe,
    .pread = nbdc_pread,
    .pwrite = nbdc_pwrite,
    .pwrite_zeroes = nbdc_pwrite_zeroes,
    .pdiscard = nbdc_pdiscard,
    .flush = nbdc_flush,
    .block_status = nbdc_block_status,
    .has_zero_init = nbdc_has_zero_init,
    .supported_write_flags = BDRV_REQ_FUA,
    .supported_zero_flags = BDRV_REQ_FUA | BDRV_REQ_MAY_UNMAP |
                            BDRV_REQ_NO_FALLBACK,
    .can_fast_zero = true,
};
