/*
 * nbd-server.h - serving NBD clients over connected sockets.
 *
 * nbd_client_serve() runs one client's whole life (handshake, transmission,
 * teardown) and returns when it is gone; callers give each client a thread.
 * It never exits the process and survives any byte sequence from the peer.
 */
#ifndef SNAPNBD_NBD_SERVER_H
#define SNAPNBD_NBD_SERVER_H

#include <stdbool.h>

/* Worker threads per connection: the number of requests one client may
 * have in service at once. */
#define NBD_WORKERS_PER_CONN 16

void nbd_client_serve(int fd);

/* Stops every client: the read side of each socket is shut down, requests
 * already read are answered, then connections close; a client that connects
 * from now on gets NBD_REP_ERR_SHUTDOWN for its first option.  Returns at
 * once. */
void nbd_server_shutdown(void);

/* Cuts every connection at once (both directions). */
void nbd_server_abort_clients(void);

/* Cuts the connections that use @exp (NULL: every connection), as
 * block-export-del mode=hard and nbd-server-stop do. */
void nbd_server_abort_export_clients(const void *exp);

/* Number of clients currently connected. */
int nbd_server_client_count(void);

#endif
