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
/* A listening vsock socket on @cid (decimal; 4294967295: any) and @port,
 * for a virtual machine's NBD client; -1 + errp, in QEMU's words. */
int nbd_listen_vsock(const char *cid, const char *port, GError **errp);

/* systemd's socket activation (sd_listen_fds(3)): the number of sockets
 * passed from fd 3 on when LISTEN_PID names this process and LISTEN_FDS
 * counts them, else 0.  The variables are removed and the sockets made
 * close-on-exec, so that no child inherits either; -1 + errp when a
 * passed fd is not open.  Call before forking: LISTEN_PID is checked. */
int nbd_socket_activation(GError **errp);
#define NBD_SOCKET_ACTIVATION_FIRST_FD 3 /* systemd's ABI */
/* Passed socket @fd as a listening socket (put into the listening state
 * when it is not yet: bound by whoever passed it); -1 + errp when it is
 * no socket or cannot listen. */
int nbd_listen_fd(int fd, GError **errp);
/* The path a unix socket is bound to, or NULL (not unix, or abstract). */
char *nbd_socket_unix_path(int fd);

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
