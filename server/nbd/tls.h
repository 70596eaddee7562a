/*
 * tls.h - TLS (gnutls) for NBD_OPT_STARTTLS: credentials from qemu-nbd's
 * --object/--tls-creds/--tls-authz, and the I/O of an upgraded connection.
 */
#ifndef SNAPNBD_TLS_H
#define SNAPNBD_TLS_H

#include "block/block.h"

#include <glib.h>
#include <gnutls/gnutls.h>
#include <stdbool.h>
#include <sys/uio.h>

/* Chooses the credentials named by creds_id (NULL: no TLS) among the
 * objects --object made (through object-add).  On error prints one line
 * naming the problem and returns false. */
bool tls_setup(const char *creds_id, const char *authz_id);

/* Chooses the credentials (and authz) among the objects made so far,
 * as nbd-server-start's tls-creds/tls-authz do; NULL, NULL: no TLS. */
bool tls_select(const char *creds_id, const char *authz_id, GError **errp);

/* The tls-creds-x509/psk object @id with endpoint=client, for an nbd
 * client node (bdrv_set_tls_creds_lookup). */
bool tls_client_creds(const char *id, BdrvTlsCreds *out, GError **errp);

/* object-add of tls-creds-x509, tls-creds-psk, authz-simple and
 * authz-list (objects.c): tls_object_new checks the properties (flat
 * strings, @id apart) and loads the credentials, as QEMU does before it
 * adds the object to "/objects"; tls_object_insert then makes it visible
 * by id (or tls_object_free drops it).  tls_object_delete removes it:
 * a server or a handshake that uses it keeps its own reference. */
typedef struct TlsObject TlsObject;
TlsObject *tls_object_new(const char *type, const char *id,
                          GHashTable *props, GError **errp);
void tls_object_insert(TlsObject *o);
void tls_object_free(TlsObject *o);
void tls_object_delete(const char *id);

/* True when --tls-creds was given: every client must start TLS. */
bool tls_enabled(void);

/* The server side of the TLS handshake on fd, after NBD_REP_ACK to
 * NBD_OPT_STARTTLS; NULL when it fails or the client is not authorized
 * (the reason is printed), and the connection must then close. */
gnutls_session_t tls_handshake(int fd);

/* Whole reads and writes through the session: 0, or -1 on EOF or error.
 * One thread may read while another writes. */
int tls_read(gnutls_session_t s, void *buf, size_t len);
int tls_writev(gnutls_session_t s, const struct iovec *iov, int iovcnt);

/* Sends close_notify (best effort) and frees the session; no other thread
 * may use it any more. */
void tls_close(gnutls_session_t s);

#endif
