/*
 * fuzz-nbd.c - bytes from an NBD client into a connection: the handshake
 * (options, export names, meta contexts, STARTTLS refused) and the
 * transmission phase (requests, payloads, block status, disconnect).
 *
 * The input is what the client sends, over a socketpair, into
 * nbd_client_serve(), the server's entry for one connection; a helper
 * thread writes it, shuts its side for writing, and reads every reply
 * until the server closes.  Two exports over one 1 MiB image in memory:
 * "" (writable) and "ro" (read-only, with qemu:allocation-depth).
 *
 * The first byte of the input chooses the server: bit 0 set, TLS is
 * required (pre-shared keys, as --tls-creds makes it): options before
 * STARTTLS are refused, and STARTTLS runs the gnutls handshake on what
 * follows.  The rest is the client's bytes.
 */
#include "block/block.h"
#include "server/nbd/export.h"
#include "server/nbd/nbd-server.h"
#include "server/nbd/tls.h"
#include "tests/fuzz/fuzz.h"

#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define IMAGE_SIZE (1 << 20)

typedef struct Peer {
    int fd;
    const uint8_t *data;
    size_t size;
} Peer;

/* The client: writes the input, then reads until the server hangs up. */
static gpointer client(gpointer opaque)
{
    Peer *p = opaque;
    char buf[65536];
    size_t sent = 0;

    for (;;) {
        struct pollfd pfd = { p->fd, POLLIN | (sent < p->size ? POLLOUT : 0),
                              0 };
        if (poll(&pfd, 1, -1) < 0)
            continue;
        if (pfd.revents & POLLOUT) {
            ssize_t n = send(p->fd, p->data + sent, p->size - sent,
                             MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n > 0)
                sent += n;
            if (n < 0 && errno != EAGAIN)
                sent = p->size; /* the server is gone */
            if (sent == p->size)
                shutdown(p->fd, SHUT_WR);
        }
        if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = recv(p->fd, buf, sizeof(buf), MSG_DONTWAIT);
            if (n == 0 || (n < 0 && errno != EAGAIN)) {
                if (sent < p->size)
                    continue; /* nothing more to read, but maybe to send */
                return NULL;
            }
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int sv[2];
    Peer p = { .data = data, .size = size };
    GThread *t;

    if (size < 1 || !tls_select(data[0] & 1 ? "tls0" : NULL, NULL, NULL))
        return 0;
    p.data++;
    p.size--;
    size--;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return 0;
    p.fd = sv[1];
    if (size == 0)
        shutdown(sv[1], SHUT_WR);
    t = g_thread_new("fuzz-client", client, &p);
    nbd_client_serve(sv[0]); /* closes sv[0] */
    g_thread_join(t);
    close(sv[1]);
    return 0;
}

static BlockNode *open_image(void)
{
    static char zeroes[IMAGE_SIZE];
    g_autoptr(GHashTable) o =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    char path[64];

    /* The memfd stays open for the life of the process. */
    if (fuzz_memfd(zeroes, sizeof(zeroes), path) < 0)
        return NULL;
    g_hash_table_insert(o, g_strdup("driver"), g_strdup("raw"));
    g_hash_table_insert(o, g_strdup("file.driver"), g_strdup("file"));
    g_hash_table_insert(o, g_strdup("file.filename"), g_strdup(path));
    g_hash_table_insert(o, g_strdup("file.locking"), g_strdup("off"));
    return bdrv_open(o, NULL);
}

/* Pre-shared keys in a private directory, as tls-creds-psk reads them. */
static void tls_init(void)
{
    g_autofree char *dir = g_strdup("/tmp/snapnbd-fuzz-nbd.XXXXXX");
    g_autofree char *keys = NULL;
    g_autoptr(GHashTable) props =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    TlsObject *creds;

    if (!g_mkdtemp(dir))
        abort();
    keys = g_build_filename(dir, "keys.psk", NULL);
    if (!g_file_set_contents(keys, "alice:0123456789abcdef0123456789abcdef\n",
                             -1, NULL))
        abort();
    g_hash_table_insert(props, g_strdup("endpoint"), g_strdup("server"));
    g_hash_table_insert(props, g_strdup("dir"), g_strdup(dir));
    creds = tls_object_new("tls-creds-psk", "tls0", props, NULL);
    if (!creds)
        abort();
    tls_object_insert(creds);
    fuzz_remove_at_exit(g_steal_pointer(&dir));
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    BlockNode *node = open_image();
    NbdExport *rw, *ro;

    (void)argc;
    (void)argv;
    if (!node)
        abort();
    tls_init();
    rw = nbd_export_add("", "fuzzed", node, false, false, NULL);
    ro = nbd_export_add("ro", NULL, node, true, false, NULL);
    if (!rw || !ro)
        abort();
    rw->multi_conn = true;
    ro->allocation_depth = true;
    bdrv_unref(node); /* the exports hold it */
    return 0;
}
