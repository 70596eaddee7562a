/*
 * image-opts.h - "open this image file" as bdrv_open's flat option table,
 * by one set of rules (qemu-nbd's) for every front end: the command line,
 * the nbdkit plugin and the QMP commands that name images by file name
 * (drive-backup and drive-mirror targets, blockdev-snapshot-sync).
 */
#ifndef SNAPNBD_IMAGE_OPTS_H
#define SNAPNBD_IMAGE_OPTS_H

#include "block/block.h"

typedef struct ImageSpec {
    /* The image, as QEMU reads a file name: "json:{...}", "file:PATH",
     * "null-co://", NBD URIs, "rbd:...", else a path.  NULL: @options
     * alone describe the node (--image-opts). */
    const char *filename;
    const char *format;        /* "raw" or "qcow2"; NULL: probed */
    /* Flat options of the image node (not copied): the whole node for
     * --image-opts, else added to it (node-name, backing).  May be NULL. */
    GHashTable *options;
    const char *load_snapshot; /* -l: ID_OR_NAME or snapshot.id=,... */
    int64_t offset;            /* a raw window from here (-o); 0: none */
    int64_t size;              /* the window's length; 0: to the end */
    const char *cache;         /* QEMU's cache mode; NULL: writeback */
    const char *aio;           /* every file node's aio; NULL: default */
    const char *discard;       /* NULL: the block layer's default */
    const char *detect_zeroes; /* NULL: off */
    bool read_only;
    /* Where the warning of a probed raw image goes; NULL: stderr. */
    void (*warn)(const char *message);
} ImageSpec;

/* The options of the whole graph: image node, then the top options.  NULL
 * with @errp set (QEMU's and qemu-nbd's messages). */
GHashTable *image_opts_build(const ImageSpec *spec, GError **errp);

/* The same in two steps, so that a node may go in between (qemu-nbd -s):
 * the image node alone (format, protocol, -l, aio and cache of its
 * files), then the top of the graph over @node (taken): the offset
 * window, aio and cache, read-only, discard, detect-zeroes. */
GHashTable *image_opts_node(const ImageSpec *spec, GError **errp);
GHashTable *image_opts_top(const ImageSpec *spec, GHashTable *node,
                           GError **errp);

/* Writes are stable on return in these cache modes (the export's FUA). */
bool image_opts_writethrough(const char *mode);

#endif
