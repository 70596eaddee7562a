/*
 * trace.h - snapnbd's own event lines, enabled by name with -T/--trace
 * (QEMU's option and pattern syntax).  -v stays as quiet as qemu-nbd's.
 */
#ifndef SNAPNBD_TRACE_H
#define SNAPNBD_TRACE_H

#include <glib.h>
#include <stdbool.h>

/* One entry per event; trace.c names and documents them. */
typedef enum TraceEvent {
    TRACE_IMAGE_OPEN,            /* the opened block graph */
    TRACE_NBD_CLIENT_CONNECT,
    TRACE_NBD_CLIENT_DISCONNECT,
    TRACE_NBD_CLIENT_EXPORT,     /* the export a client chose */
    TRACE_NBD_OPTION_REFUSED,
    TRACE_NBD_REQUEST_INVALID,
    TRACE_NBD_REQUEST_FAILED,
    TRACE_NBD_TLS_CLIENT,        /* an x509 client's name */
    TRACE_NBD_TLS_SESSION,
    TRACE_BDRV_NOTICE,           /* the block layer's notes (aio fallback,
                                    qcow2 repair, corruption) */
    TRACE_EVENT_COUNT
} TraceEvent;

/* Written only while the command line is parsed, read by every thread. */
extern bool trace_enabled[TRACE_EVENT_COUNT];

/* One --trace argument: [enable=]PATTERN, events=FILE (one pattern a
 * line), file=FILE (where the lines go; default stderr), or "help" (lists
 * the events and exits).  Patterns are globs over the event names. */
bool trace_option(const char *arg, GError **errp);

/* Prints "snapnbd: " and the message if @event is enabled. */
void trace(TraceEvent event, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

#endif
