/*
 * listen.c - listening sockets (unix, or TCP on every address of a host)
 * and the one accept loop of the NBD server.
 */
#include "listen.h"

#include "nbd-server.h"
#include "server/trace.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <netdb.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <linux/vm_sockets.h>
#include <unistd.h>

#define LISTEN_ERROR g_quark_from_static_string("snapnbd-listen-error")

int nbd_listen_unix(const char *path, GError **errp)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    struct stat st;
    int fd;

    if (strlen(path) >= sizeof(sun.sun_path)) {
        g_set_error(errp, LISTEN_ERROR, 0, "socket path '%s' is too long",
                    path);
        return -1;
    }
    strcpy(sun.sun_path, path);
    if (stat(path, &st) == 0 && S_ISSOCK(st.st_mode))
        unlink(path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
        listen(fd, 128) < 0) {
        g_set_error(errp, LISTEN_ERROR, 0, "Failed to bind socket to %s: %s",
                    path, g_strerror(errno)); /* qemu-nbd's words */
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

int nbd_listen_tcp(const char *host, const char *port, GError **errp)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC,
                              .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE };
    struct addrinfo *res;
    int fd = -1, err, one = 1;

    err = getaddrinfo(host, port, &hints, &res);
    if (err) {
        g_set_error(errp, LISTEN_ERROR, 0,
                    "cannot resolve '%s' port '%s': %s", host ? host : "",
                    port, gai_strerror(err));
        return -1;
    }
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 128) == 0)
            break;
        err = errno;
        close(fd);
        fd = -1;
        errno = err;
    }
    if (fd < 0)
        g_set_error(errp, LISTEN_ERROR, 0, "cannot listen on %s:%s: %s",
                    host ? host : "", port, g_strerror(errno));
    freeaddrinfo(res);
    return fd;
}

/* QEMU's parse_uint_full: decimal digits (after blanks), nothing else,
 * at most @max. */
static bool parse_uint(const char *s, unsigned long long max,
                       unsigned long long *out)
{
    const char *p = s + strspn(s, " \t\n\v\f\r");
    char *end;

    if (!g_ascii_isdigit(*p))
        return false;
    errno = 0;
    *out = strtoull(p, &end, 10);
    return !*end && errno == 0 && *out <= max;
}

int nbd_listen_vsock(const char *cid, const char *port, GError **errp)
{
    struct sockaddr_vm svm = { .svm_family = AF_VSOCK };
    unsigned long long v;
    int fd;

    if (!parse_uint(cid, UINT32_MAX, &v)) {
        g_set_error(errp, LISTEN_ERROR, 0, "Failed to parse cid '%s'", cid);
        return -1;
    }
    svm.svm_cid = v;
    if (!parse_uint(port, UINT32_MAX, &v)) {
        g_set_error(errp, LISTEN_ERROR, 0, "Failed to parse port '%s'",
                    port);
        return -1;
    }
    svm.svm_port = v;
    /* QEMU's words for each step (vsock_listen_saddr) */
    fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        g_set_error(errp, LISTEN_ERROR, 0, "Failed to create socket: %s",
                    g_strerror(errno));
        return -1;
    }
    if (bind(fd, (struct sockaddr *)&svm, sizeof(svm)) < 0) {
        g_set_error(errp, LISTEN_ERROR, 0, "Failed to bind socket: %s",
                    g_strerror(errno));
        close(fd);
        return -1;
    }
    if (listen(fd, 128) < 0) {
        g_set_error(errp, LISTEN_ERROR, 0, "Failed to listen on socket: %s",
                    g_strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* LISTEN_PID and LISTEN_FDS as decimal numbers, as systemd writes them;
 * anything else is no activation (QEMU's check_socket_activation too). */
static bool env_number(const char *name, unsigned long *n)
{
    const char *s = getenv(name);
    char *end;

    if (!s || !*s)
        return false;
    errno = 0;
    *n = strtoul(s, &end, 10);
    return !*end && errno == 0;
}

int nbd_socket_activation(GError **errp)
{
    unsigned long pid, n;

    if (!env_number("LISTEN_PID", &pid) || pid != (unsigned long)getpid() ||
        !env_number("LISTEN_FDS", &n))
        return 0;
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    if (n > INT_MAX - NBD_SOCKET_ACTIVATION_FIRST_FD)
        n = INT_MAX - NBD_SOCKET_ACTIVATION_FIRST_FD;
    for (unsigned long i = 0; i < n; i++) {
        int fd = NBD_SOCKET_ACTIVATION_FIRST_FD + (int)i;
        if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
            g_set_error(errp, LISTEN_ERROR, 0,
                        "Socket activation failed: invalid file descriptor "
                        "fd = %d: %s", fd, g_strerror(errno));
            return -1;
        }
    }
    return (int)n;
}

int nbd_listen_fd(int fd, GError **errp)
{
    int listening = 0;
    socklen_t len = sizeof(listening);

    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0) {
        g_set_error(errp, LISTEN_ERROR, 0, "fd %d is not a socket: %s", fd,
                    g_strerror(errno));
        return -1;
    }
    /* systemd and libnbd pass listening sockets; a bound one is taken too */
    if (!listening && listen(fd, 128) < 0) {
        g_set_error(errp, LISTEN_ERROR, 0, /* QEMU's words */
                    "Failed to listen on fd socket: %s", g_strerror(errno));
        return -1;
    }
    return fd;
}

char *nbd_socket_unix_path(int fd)
{
    struct sockaddr_un sun;
    socklen_t len = sizeof(sun);

    if (getsockname(fd, (struct sockaddr *)&sun, &len) < 0 ||
        sun.sun_family != AF_UNIX || len <= offsetof(struct sockaddr_un,
                                                     sun_path) ||
        !sun.sun_path[0])
        return NULL;
    return g_strndup(sun.sun_path,
                     len - offsetof(struct sockaddr_un, sun_path));
}

/* --- the accept thread --------------------------------------------------- */

struct NbdListener {
    int fd;
    char *unix_path;
    unsigned max_clients;
    unsigned clients;      /* atomic: connected now */
    unsigned refs;         /* atomic: the listener's own, and its clients' */
    gboolean had_client;   /* atomic */
    int stop_pipe[2];
    int done_pipe[2];      /* a byte per client that ended */
    GThread *thread;
};

typedef struct ClientStart {
    NbdListener *listener;
    int fd;
} ClientStart;

/* Clients may outlive nbd_listener_stop: they only touch the listener's
 * counters and done pipe, so the listener's memory and pipe stay until the
 * last client has gone. */
static void listener_unref(NbdListener *l)
{
    if (!g_atomic_int_dec_and_test(&l->refs))
        return;
    for (int i = 0; i < 2; i++)
        close(l->done_pipe[i]);
    g_free(l);
}

static gpointer client_thread(gpointer opaque)
{
    ClientStart *start = opaque;
    NbdListener *l = start->listener;
    char byte = 0;

    nbd_client_serve(start->fd);
    g_free(start);
    /* counted out before the byte, so whoever reads it sees the count */
    g_atomic_int_dec_and_test(&l->clients);
    if (write(l->done_pipe[1], &byte, 1) < 0) {
        /* a full pipe already says that clients ended */
    }
    listener_unref(l);
    return NULL;
}

static void accept_client(NbdListener *l)
{
    int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
    ClientStart *start;
    GThread *t;
    int one = 1;

    if (fd < 0)
        return;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    trace(TRACE_NBD_CLIENT_CONNECT, "client connected");
    start = g_new(ClientStart, 1);
    *start = (ClientStart){ l, fd };
    g_atomic_int_inc(&l->refs);
    g_atomic_int_inc(&l->clients);
    g_atomic_int_set(&l->had_client, TRUE);
    t = g_thread_try_new("nbd-client", client_thread, start, NULL);
    if (!t) {
        fprintf(stderr, "snapnbd: out of threads: client refused\n");
        g_atomic_int_dec_and_test(&l->clients);
        g_atomic_int_dec_and_test(&l->refs);
        g_free(start);
        close(fd);
        return;
    }
    g_thread_unref(t);
}

/* When full, the thread looks again every 50 ms (a client that ends only
 * writes the done pipe, which the command line reads). */
static gpointer accept_thread(gpointer opaque)
{
    NbdListener *l = opaque;

    for (;;) {
        bool full = l->max_clients > 0 &&
                    nbd_listener_clients(l) >= l->max_clients;
        struct pollfd fds[2] = {
            { l->stop_pipe[0], POLLIN, 0 },
            { full ? -1 : l->fd, POLLIN, 0 },
        };
        if (poll(fds, 2, full ? 50 : -1) < 0 && errno != EINTR)
            break;
        if (fds[0].revents)
            break;
        if (fds[1].revents)
            accept_client(l);
    }
    return NULL;
}

NbdListener *nbd_listener_start(int fd, const char *unix_path,
                                unsigned max_clients, GError **errp)
{
    NbdListener *l = g_new0(NbdListener, 1);

    l->fd = fd;
    l->unix_path = g_strdup(unix_path);
    l->max_clients = max_clients;
    l->refs = 1; /* its own, dropped by nbd_listener_stop */
    if (pipe2(l->stop_pipe, O_CLOEXEC) < 0) {
        l->stop_pipe[0] = l->stop_pipe[1] = -1;
    } else if (pipe2(l->done_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
        close(l->stop_pipe[0]);
        close(l->stop_pipe[1]);
        l->stop_pipe[0] = l->stop_pipe[1] = -1;
    }
    if (l->stop_pipe[0] < 0) {
        g_set_error(errp, LISTEN_ERROR, 0, "Cannot start the NBD server: %s",
                    g_strerror(errno));
        close(fd);
        g_free(l->unix_path);
        g_free(l);
        return NULL;
    }
    l->thread = g_thread_try_new("nbd-accept", accept_thread, l, errp);
    if (!l->thread) {
        nbd_listener_stop(l);
        return NULL;
    }
    return l;
}

void nbd_listener_stop(NbdListener *l)
{
    if (l->thread) {
        if (write(l->stop_pipe[1], "", 1) < 0) {
            /* cannot happen: the pipe is empty */
        }
        g_thread_join(l->thread);
    }
    close(l->fd);
    if (l->unix_path)
        unlink(l->unix_path);
    for (int i = 0; i < 2; i++)
        close(l->stop_pipe[i]);
    g_free(l->unix_path);
    listener_unref(l);
}

unsigned nbd_listener_max_clients(const NbdListener *l)
{
    return l->max_clients;
}

unsigned nbd_listener_clients(NbdListener *l)
{
    return g_atomic_int_get(&l->clients);
}

bool nbd_listener_had_client(NbdListener *l)
{
    return g_atomic_int_get(&l->had_client);
}

int nbd_listener_client_done_fd(const NbdListener *l)
{
    return l->done_pipe[0];
}
