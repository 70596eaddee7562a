/*
 * pace.h - reads of a point in time yield to the guest that writes its
 * source.
 */
#ifndef SNAPNBD_NBD_PACE_H
#define SNAPNBD_NBD_PACE_H

#include "block/block.h"

#include <glib.h>
#include <stdint.h>

/* x-background-rate's default: while the guest writes the source of a
 * point in time, the background connections of one export read at most
 * this many bytes a second, all together.  What a 4k QD32 guest on 2
 * cores kept of its rate while nbdcopy pulled 1 GiB (4 interleaved runs
 * each): 0.62-0.74 at 512 MiB/s, 0.73-0.89 at 384, 0.77-0.86 at 256.
 * The pull's own CPU time (nbdcopy's 0.3 ms per MiB, the server's 0.15)
 * is about half of what the guest loses; the rest is the two sharing the
 * CPUs (a reader woken 2000 times a second preempts the guest's threads).
 * So the guest's loss per second follows the rate. */
#define NBD_BACKGROUND_READ_RATE (256LL * 1024 * 1024)

/* One export's budget (a token bucket). */
typedef struct NbdPace {
    int64_t rate;     /* bytes a second, 0: no pacing; atomic */
    GMutex lock;
    int64_t credit;   /* bytes; under lock */
    gint64 credit_at; /* when credit was last refilled (µs); under lock */
} NbdPace;

void nbd_pace_init(NbdPace *p, int64_t rate);
void nbd_pace_destroy(NbdPace *p);
void nbd_pace_set_rate(NbdPace *p, int64_t rate);

/* Called by a background connection before it reads @bytes of @node:
 * waits, if @node is a point in time whose source is being written, until
 * the budget allows the read. */
void nbd_pace_background_read(NbdPace *p, BlockNode *node, uint64_t bytes);

#endif
