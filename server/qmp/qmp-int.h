/*
 * qmp-int.h - what the QMP modules (qmp.c, qmp-block.c, qmp-nbd.c) share;
 * nothing outside server/qmp*.c and main.c includes it.
 */
#ifndef SNAPNBD_QMP_INT_H
#define SNAPNBD_QMP_INT_H

#include "block/block.h"
#include "block/copy-before-write.h"
#include "qmp.h"

/* Registration of each module's commands (called by qmp_register_all). */
void qmp_register_core_commands(void);
void qmp_register_block_commands(void);
void qmp_register_nbd_commands(void);
void qmp_register_job_commands(void);  /* qmp-jobs.c */
void qmp_register_bitmap_commands(void); /* qmp-bitmap.c */
void qmp_register_create_commands(void); /* qmp-create.c */
void qmp_register_snapshot_commands(void); /* qmp-snapshot.c */
void qmp_register_chain_commands(void); /* qmp-chain.c */
void qmp_register_debug_commands(void);  /* qmp-debug.c */
void qmp_register_object_commands(void); /* qmp-object.c */
void qmp_register_image_commands(void);  /* qmp-image.c */
void qmp_register_iothread_commands(void); /* qmp-iothread.c */
void qmp_register_graph_commands(void);  /* qmp-graph.c */
/* BlockDirtyInfo of each bitmap of @bs (query-named-block-nodes). */
JsonArray *qmp_dirty_bitmaps_info(BlockNode *bs);
/* XCbwStats (qmp-jobs.c): a copy-before-write's counters as "x-cbw". */
JsonObject *qmp_cbw_stats_json(const BdrvCbwStats *st);
/* QEMU's SnapshotInfo of an internal snapshot (qmp-image.c). */
JsonObject *qmp_snapshot_info(const BdrvSnapshotInfo *sn);
/* Cancels every job and waits for them to end: before the nodes go. */
void qmp_jobs_cleanup(void);

/* Runs a registered command as if a client had sent it (the command line
 * uses this for --nbd-server, --export, --blockdev): the arguments are
 * checked against the schema and decoded; the "return" value, or NULL +
 * errp. */
JsonNode *qmp_execute(const char *name, JsonObject *args, GError **errp);
/* Whether the running command came from a QMP client, not the command
 * line: QEMU's monitor_cur(), which decides what an fd name means. */
bool qmp_from_monitor(void);
/* The node of that name, or NULL, held until the command that asked ends
 * (bdrv_find_node_ref, dropped as qmp_execute returns): a job's thread may
 * drop the last reference of a node a command is using, e.g. the filter
 * of a job that ends meanwhile. */
BlockNode *qmp_find_node(const char *name);
/* --blockdev in option syntax: bdrv_open's flat keys as they are; the node
 * is then owned by the monitor, like one from blockdev-add. */
bool qmp_block_add_flat(GHashTable *flat, GError **errp);

/* main.c: the NBD server of the command line (image mode) counts as "the"
 * NBD server: nbd-server-start refuses to start a second one. */
void qmp_nbd_set_cli_server(bool running);

/* Teardown at exit, after qmp_stop(): the NBD server started over QMP and
 * its exports (clients are cut), then the nodes added with blockdev-add
 * (flushed first). */
void qmp_nbd_cleanup(void);
void qmp_block_cleanup(void);

#endif
