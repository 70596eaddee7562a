/*
 * listen.h - the listening sockets of the NBD server, shared by the
 * command line (main.c) and nbd-server-start (qmp-nbd.c).
 */
#ifndef SNAPNBD_LISTEN_H
#define SNAPNBD_LISTEN_H

#include <glib.h>
#include <stdbool.h>

/* A listening unix socket at @path (a stale socket file there is replaced);
 * -1 + errp on failure. */
int nbd_listen_unix(const char *path, GError **errp);
/* A listening TCP socket on @host (NULL: any) and @port; -1 + errp. */
int nbd_listen_tcp(const char *host, const char *port, GError **errp);

/* A running NBD listener: a thread of its own accepts clients on a
 * listening socket and serves each in a thread (nbd_client_serve).  While
 * @max_clients are connected (0: no limit) the socket is not polled, so new
 * clients wait in the backlog, as with qemu-nbd -e and QEMU's
 * max-connections.  The command line and nbd-server-start both use it. */
typedef struct NbdListener NbdListener;

/* Takes over @fd (closed at stop) and @unix_path (unlinked at stop, may be
 * NULL); NULL + errp when no thread can be started (@fd is then closed). */
NbdListener *nbd_listener_start(int fd, const char *unix_path,
                                unsigned max_clients, GError **errp);
/* Stops accepting and frees the listener; connected clients go on. */
void nbd_listener_stop(NbdListener *l);
unsigned nbd_listener_max_clients(const NbdListener *l);
/* Clients connected now, and whether any ever connected. */
unsigned nbd_listener_clients(NbdListener *l);
bool nbd_listener_had_client(NbdListener *l);
/* Readable (a byte per client) each time a client of @l ends: the command
 * line polls it to stop after the last client when not persistent. */
int nbd_listener_client_done_fd(const NbdListener *l);

#endif
