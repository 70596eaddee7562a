/*
 * listen.c - listening sockets: unix, or TCP on every address of a host.
 */
#include "listen.h"

#include <errno.h>
#include <netdb.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
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
