/*
 * export.h - the table of NBD exports.
 *
 * An export names a block node and how clients may use it.  The command line
 * adds one; the control socket will add and remove them at run time, so the
 * table is guarded by a lock and exports are reference counted: a client
 * keeps its export alive until it disconnects.
 */
#ifndef SNAPNBD_EXPORT_H
#define SNAPNBD_EXPORT_H

#include "block/block.h"
#include "pace.h"

#define NBD_EXPORT_MAX_IOTHREADS 64

typedef enum NbdExportPriority {
    NBD_EXPORT_PRIORITY_AUTO,
    NBD_EXPORT_PRIORITY_NORMAL,
    NBD_EXPORT_PRIORITY_BACKGROUND,
} NbdExportPriority;

/* The nice value of the threads of a background connection: a guest's
 * connection (nice 0) then gets about 10 times its CPU time when both
 * want a CPU (CFS weights 1024 vs 110). */
#define NBD_EXPORT_BACKGROUND_NICE 10

typedef struct NbdExport {
    char *name;
    char *description;  /* may be NULL */
    BlockChild *user;   /* the export's edge into the graph: its node is
                         * read at each request (nbd_export_node), since
                         * a graph change (a live snapshot) may move it */
    bool read_only;
    bool writethrough;  /* every write is FUA (--cache=writethrough) */
    bool multi_conn;    /* may advertise NBD_FLAG_CAN_MULTI_CONN */
    /* A new connection takes the CPU affinity of one of these host
     * threads (iothreads), in turn; none when iothread_count is 0. */
    int iothread_tids[NBD_EXPORT_MAX_IOTHREADS];
    int iothread_count;
    unsigned next_iothread; /* atomic */
    /* x-priority: the nice value of a connection's threads.  Auto: that
     * of background when the node holds a point in time as the client
     * connects (bdrv_is_point_in_time), else normal. */
    NbdExportPriority priority;
    NbdPace pace;         /* x-background-rate: a background connection's
                           * reads while the guest writes (pace.c) */
    bool allocation_depth; /* offers qemu:allocation-depth (-A) */
    /* Offered as qemu:dirty-bitmap:NAME contexts (-B), each marked busy
     * while exported; fixed before clients come. */
    GPtrArray *bitmaps;    /* of BdrvDirtyBitmap *, or NULL */
    int refcnt;         /* atomic */
    /* Called once, by whichever thread drops the last reference, after the
     * node is released: block-export-del announces BLOCK_EXPORT_DELETED. */
    void (*on_free)(void *opaque);
    void *on_free_opaque;
} NbdExport;

/* The node the export serves now. */
static inline BlockNode *nbd_export_node(NbdExport *exp)
{
    return bdrv_user_node(exp->user);
}

NbdExport *nbd_export_add(const char *name, const char *description,
                          BlockNode *node, bool read_only, bool writethrough,
                          GError **errp);
/* Offers bitmap @name, of the export's node or of a node below it, as
 * the meta context qemu:dirty-bitmap:NAME (qemu-nbd -B).  Call before
 * clients connect.  At most NBD_EXPORT_MAX_BITMAPS. */
#define NBD_EXPORT_MAX_BITMAPS 32
bool nbd_export_add_bitmap(NbdExport *exp, const char *name, GError **errp);
/* The same for a bitmap named with its node ({node, name} in QMP), which
 * need not lie under the export's node, as in QEMU. */
bool nbd_export_offer_bitmap(NbdExport *exp, BdrvDirtyBitmap *bm,
                             GError **errp);
/* Returns a new reference, or NULL. */
NbdExport *nbd_export_lookup(const char *name);
void nbd_export_unref(NbdExport *exp);
void nbd_export_remove(const char *name);
/* Names of all exports, for NBD_OPT_LIST; free with g_strfreev. */
char **nbd_export_names(void);
int64_t nbd_export_size(NbdExport *exp);

#endif
