/*
 * connection.h - one NBD client connection, shared by the handshake and the
 * transmission phase (private to server/).
 */
#ifndef SNAPNBD_CONNECTION_H
#define SNAPNBD_CONNECTION_H

#include "export.h"
#include "nbd-protocol.h"
#include "nbd-server.h"
#include "tls.h"

#include <stddef.h>
#include <sys/uio.h>

/* Meta contexts a client can select; the id on the wire is the enum value. */
enum {
    NBD_CTX_BASE_ALLOCATION = 1,
    NBD_CTX_ALLOCATION_DEPTH = 2, /* qemu:allocation-depth (-A) */
    /* qemu:dirty-bitmap:NAME of the export's bitmap i is this plus i. */
    NBD_CTX_DIRTY_BITMAP = 3,
};

typedef struct NbdConn {
    int fd;
    gnutls_session_t tls;     /* once STARTTLS succeeded: all I/O uses it */
    bool no_zeroes;           /* client flag NBD_FLAG_C_NO_ZEROES */
    bool structured_replies;  /* NBD_OPT_STRUCTURED_REPLY done */
    /* Meta contexts chosen by SET_META_CONTEXT, for export meta_export. */
    bool ctx_base_allocation;
    bool ctx_allocation_depth;
    uint32_t ctx_bitmaps;     /* bit i: the export's bitmap i */
    char *meta_export;

    /* Transmission phase: fixed once the handshake ends. */
    NbdExport *exp;
    uint16_t eflags;
    bool background;    /* x-priority background: reads are paced */

    GMutex read_lock;   /* one worker reads a request (and payload) at once */
    GMutex write_lock;  /* one worker sends a reply at once */
    int dead;           /* atomic: stop reading requests */
    gint64 avg_request_ns; /* relaxed atomic: recent time to serve one */
    unsigned requests_since_fill; /* read_lock: requests read since the
                                   * last receive, to tell queue depth 1 */
    unsigned poll_backoff, poll_skip; /* read_lock: see recv_polling */
    /* Any memory alignment does for the export's node chain (no O_DIRECT):
     * payloads and read data may stay where they lie. */
    bool any_buffer_alignment;
    /* Plain sockets: bytes received but not yet parsed, under read_lock. */
    char *rbuf;
    size_t rbuf_start, rbuf_end;
    /* Unix sockets: the send buffer's size, so that the reader can
     * tell whether a large reply leaves without waiting; else 0. */
    int send_buffer;
    /* atomic: a read could not be piped (the node cannot splice), so
     * large reads are not served by the reader. */
    int pipe_refused;
} NbdConn;

/* Whole reads and writes on the socket (through TLS once it is up): 0, or
 * -1 on EOF or error. */
int conn_read(NbdConn *c, void *buf, size_t len);
int conn_discard(NbdConn *c, uint64_t len);
int conn_writev(NbdConn *c, struct iovec *iov, int iovcnt);

/* Handshake: true when an export was chosen and transmission follows. */
bool nbd_handshake(NbdConn *c);
void nbd_transmission(NbdConn *c);

bool nbd_server_shutting_down(void);

#endif
