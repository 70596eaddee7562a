/*
 * connection.c - socket I/O helpers and the life of one client.
 *
 * clients_lock guards the list of live connections, used to count them
 * and to stop them all at shutdown.
 */
#include "connection.h"
#include "server/trace.h"
#include "block/copy-before-write.h"
#include "block/nocancel.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static GMutex clients_lock;
static GList *clients;       /* of NbdConn *, guarded by clients_lock */
static int shutting_down;    /* atomic */

int conn_read(NbdConn *c, void *buf, size_t len)
{
    char *p = buf;

    if (c->tls)
        return tls_read(c->tls, buf, len);
    while (len > 0) {
        ssize_t n = nc_recv(c->fd, p, len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= n;
    }
    return 0;
}

int conn_discard(NbdConn *c, uint64_t len)
{
    char buf[65536];

    while (len > 0) {
        size_t n = MIN(len, sizeof(buf));
        if (conn_read(c, buf, n) < 0)
            return -1;
        len -= n;
    }
    return 0;
}

int conn_writev(NbdConn *c, struct iovec *iov, int iovcnt)
{
    if (c->tls)
        return tls_writev(c->tls, iov, iovcnt);
    while (iovcnt > 0) {
        struct msghdr msg = { .msg_iov = iov, .msg_iovlen = iovcnt };
        ssize_t n = nc_sendmsg(c->fd, &msg, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        while (iovcnt > 0 && (size_t)n >= iov->iov_len) {
            n -= iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (char *)iov->iov_base + n;
            iov->iov_len -= n;
        }
    }
    return 0;
}

bool nbd_server_shutting_down(void)
{
    return g_atomic_int_get(&shutting_down);
}

void nbd_server_shutdown(void)
{
    g_atomic_int_set(&shutting_down, 1);
    g_mutex_lock(&clients_lock);
    /* Readers see EOF; requests already read are still answered. */
    for (GList *l = clients; l; l = l->next)
        shutdown(((NbdConn *)l->data)->fd, SHUT_RD);
    g_mutex_unlock(&clients_lock);
}

void nbd_server_abort_clients(void)
{
    g_mutex_lock(&clients_lock);
    for (GList *l = clients; l; l = l->next)
        shutdown(((NbdConn *)l->data)->fd, SHUT_RDWR);
    g_mutex_unlock(&clients_lock);
}

void nbd_server_abort_export_clients(const void *exp)
{
    g_mutex_lock(&clients_lock);
    for (GList *l = clients; l; l = l->next) {
        NbdConn *c = l->data;
        /* c->exp is set once by the client's own thread, in the handshake */
        if (!exp || g_atomic_pointer_get(&c->exp) == exp)
            shutdown(c->fd, SHUT_RDWR);
    }
    g_mutex_unlock(&clients_lock);
}

int nbd_server_client_count(void)
{
    int n;

    g_mutex_lock(&clients_lock);
    n = g_list_length(clients);
    g_mutex_unlock(&clients_lock);
    return n;
}

/* A connection to an export bound to iothreads runs where the next of
 * them may run; the connection's workers, made afterwards, inherit it.  An
 * iothread deleted meanwhile (ESRCH) leaves the connection as it is. */
static void follow_iothread(NbdExport *exp)
{
    cpu_set_t cpus;
    unsigned turn;

    if (!exp || exp->iothread_count == 0)
        return;
    turn = g_atomic_int_add(&exp->next_iothread, 1) % exp->iothread_count;
    if (sched_getaffinity(exp->iothread_tids[turn], sizeof(cpus), &cpus) == 0)
        sched_setaffinity(0, sizeof(cpus), &cpus);
}

/* A connection to a background export (a point in time, by default) runs
 * with a higher nice value, its workers, made afterwards, too: a backup
 * client that pulls as fast as it can then leaves the CPUs to the guest's
 * connections, and is slowed down itself; its reads are paced while the
 * guest writes (pace.c). */
static void follow_priority(NbdConn *c)
{
    NbdExport *exp = c->exp;
    BlockNode *node;
    bool background;

    if (!exp || exp->priority == NBD_EXPORT_PRIORITY_NORMAL)
        return;
    node = nbd_export_node(exp);
    background = exp->priority == NBD_EXPORT_PRIORITY_BACKGROUND ||
                 (node && bdrv_is_point_in_time(node));
    c->background = background;
    if (background &&
        setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid),
                    NBD_EXPORT_BACKGROUND_NICE) < 0 && bdrv_verbose)
        fprintf(stderr, "snapnbd: setpriority: %s\n", g_strerror(errno));
}

void nbd_client_serve(int fd)
{
    NbdConn *c = g_new0(NbdConn, 1);

    c->fd = fd;
    g_mutex_init(&c->read_lock);
    g_mutex_init(&c->write_lock);
    g_mutex_lock(&clients_lock);
    clients = g_list_prepend(clients, c);
    g_mutex_unlock(&clients_lock);
    if (nbd_server_shutting_down())
        shutdown(fd, SHUT_RD);

    if (nbd_handshake(c)) {
        follow_iothread(c->exp);
        follow_priority(c);
        nbd_transmission(c);
    }
    trace(TRACE_NBD_CLIENT_DISCONNECT, "client disconnected");

    /* Everything that talks or holds the export ends before the client
     * leaves the list: the main thread waits for an empty list, then
     * flushes and closes the image and exits. */
    tls_close(c->tls);
    nbd_export_unref(c->exp);
    g_mutex_lock(&clients_lock);
    clients = g_list_remove(clients, c);
    g_mutex_unlock(&clients_lock);
    close(fd);
    g_free(c->meta_export);
    g_mutex_clear(&c->read_lock);
    g_mutex_clear(&c->write_lock);
    g_free(c);
}
