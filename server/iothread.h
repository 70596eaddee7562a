/*
 * iothread.h - iothread objects as host threads.
 *
 * snapnbd serves every connection from threads of its own, so an iothread
 * runs no event loop.  It is still a real thread, named "IO <id>" as
 * QEMU's are, whose id query-iothreads reports: management layers pin it
 * (sched_setaffinity / taskset on that thread id, as libvirt's iothreadpin
 * does), and a connection to an export bound to it (block-export-add
 * iothread=) takes that CPU affinity when it starts, so that its threads
 * run where the iothread was pinned.  Thread-safe.
 */
#ifndef SNAPNBD_IOTHREAD_H
#define SNAPNBD_IOTHREAD_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct IoThreadInfo {
    const char *id;
    int thread_id;
    int64_t poll_max_ns, poll_grow, poll_shrink, aio_max_batch;
} IoThreadInfo;

/* Starts iothread @id with the properties @props (flat strings, already
 * checked for unknown names); false + errp for a malformed number. */
bool iothread_start(const char *id, GHashTable *props, GError **errp);
void iothread_stop(const char *id);
void iothread_stop_all(void);

/* The host thread id of iothread @id, or -1. */
int iothread_thread_id(const char *id);

/* @fn for every iothread, oldest first, under the table's lock. */
void iothread_foreach(void (*fn)(const IoThreadInfo *info, void *opaque),
                      void *opaque);

#endif
