/*
 * pace.c - reads of a point in time yield to the guest that writes its
 * source.
 *
 * A backup client pulls a point in time as fast as it can.  On a machine
 * whose CPUs the guest's I/O keeps busy, that pull takes the guest's CPU
 * time, and most of it is the client's own: nbdcopy spends about 340 µs
 * of CPU per MiB receiving, the server 100-200 sending it.  Nice values
 * (x-priority) slow only the server's part.  So while the point in
 * time's source was written within GUEST_QUIET_US, the reads of an
 * export's background connections share a budget of x-background-rate
 * bytes a second (a token bucket of at most BURST bytes); when the guest
 * is quiet they go as fast as they can.  The reader sleeps before the
 * read, holding nothing: its connection waits, nobody else.
 */
#include "pace.h"
#include "block/copy-before-write.h"

/* The guest is active if it wrote within this time (as for the backup
 * job's background copy). */
#define GUEST_QUIET_US 5000
/* What the budget may save up while the guest writes: a few reads. */
#define BURST (4LL * 1024 * 1024)

void nbd_pace_init(NbdPace *p, int64_t rate)
{
    nbd_pace_set_rate(p, rate);
    g_mutex_init(&p->lock);
    p->credit = BURST;
    p->credit_at = 0;
}

void nbd_pace_set_rate(NbdPace *p, int64_t rate)
{
    __atomic_store_n(&p->rate, rate, __ATOMIC_RELAXED);
}

void nbd_pace_destroy(NbdPace *p)
{
    g_mutex_clear(&p->lock);
}

/* Takes @bytes from the budget; returns how long to wait (µs) first. */
static gint64 take_credit(NbdPace *p, int64_t rate, uint64_t bytes)
{
    gint64 now = g_get_monotonic_time(), wait = 0;

    g_mutex_lock(&p->lock);
    if (p->credit_at)
        p->credit += MIN(now - p->credit_at, G_USEC_PER_SEC) * rate /
                     G_USEC_PER_SEC;
    p->credit = MIN(p->credit, BURST);
    p->credit_at = now;
    p->credit -= (int64_t)bytes;
    if (p->credit < 0)
        wait = -p->credit * G_USEC_PER_SEC / rate;
    g_mutex_unlock(&p->lock);
    return wait;
}

void nbd_pace_background_read(NbdPace *p, BlockNode *node, uint64_t bytes)
{
    int64_t rate = __atomic_load_n(&p->rate, __ATOMIC_RELAXED);
    gint64 wait;

    if (!rate || !bdrv_point_in_time_source_busy(node, GUEST_QUIET_US))
        return;
    wait = take_credit(p, rate, bytes);
    if (wait > 0)
        g_usleep(wait);
}
