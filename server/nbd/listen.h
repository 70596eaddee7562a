/*
 * listen.h - the listening sockets of the NBD server, shared by the
 * command line (main.c) and nbd-server-start (qmp-nbd.c).
 */
#ifndef SNAPNBD_LISTEN_H
#define SNAPNBD_LISTEN_H

#include <glib.h>

/* A listening unix socket at @path (a stale socket file there is replaced);
 * -1 + errp on failure. */
int nbd_listen_unix(const char *path, GError **errp);
/* A listening TCP socket on @host (NULL: any) and @port; -1 + errp. */
int nbd_listen_tcp(const char *host, const char *port, GError **errp);

#endif
