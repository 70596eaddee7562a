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
 * this many bytes a second, all together. */
#define NBD_BACKGROUND_READ_RATE (512LL * 1024 * 1024)

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
