/*
 * block.h - the block graph as the layers above it see it.
 *
 * Promises:
 *  - A graph is made of nodes; each node is one driver instance with named
 *    children ("file", "backing").  Nodes are reference counted and may have a
 *    unique node-name.
 *  - Every read, write, write-zeroes, discard, flush and block-status of every
 *    node goes through the bdrv_* I/O functions below (block/io.c).  They are
 *    blocking and thread safe: callers run them from any number of worker
 *    threads at once.
 *  - Open and create report failures through GError with a sentence that names
 *    the file or node; the I/O functions return 0 or a negative errno.
 */
#ifndef SNAPNBD_BLOCK_H
#define SNAPNBD_BLOCK_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

/* GError domain of the block layer and the layers above it. */
#define BDRV_ERROR bdrv_error_quark()
GQuark bdrv_error_quark(void);
typedef enum {
    BDRV_ERROR_FAILED,
    BDRV_ERROR_INVALID_ARGUMENT,
    BDRV_ERROR_NOT_SUPPORTED,
    BDRV_ERROR_NOT_FOUND,
    BDRV_ERROR_EXISTS,
    BDRV_ERROR_BUSY,
    BDRV_ERROR_READ_ONLY,
} BdrvErrorCode;

typedef struct BlockNode BlockNode;
typedef struct BlockNotifier BlockNotifier;

#define BDRV_MAX_LENGTH (INT64_MAX / 2)

/* Flags of a write-like request. */
enum {
    BDRV_REQ_FUA = 1 << 0,         /* stable on return */
    BDRV_REQ_MAY_UNMAP = 1 << 1,   /* write-zeroes may deallocate */
    BDRV_REQ_NO_FALLBACK = 1 << 2, /* write-zeroes: -ENOTSUP unless fast */
    /* Waits for every earlier overlapping request of the node, reads too
     * (a fleecing target's writes: see jobs/block-copy.c). */
    BDRV_REQ_SERIALISING = 1 << 3,
};

/* Block status flags (bdrv_block_status). */
enum {
    BDRV_BLOCK_DATA = 1 << 0,      /* the range holds data */
    BDRV_BLOCK_ZERO = 1 << 1,      /* the range reads as zeroes */
    BDRV_BLOCK_ALLOCATED = 1 << 2, /* allocated in this node (not a hole) */
};

typedef enum {
    BDRV_DETECT_ZEROES_OFF,
    BDRV_DETECT_ZEROES_ON,
    BDRV_DETECT_ZEROES_UNMAP,
} BdrvDetectZeroes;

/* What a write-like request does; tells notifiers why they run. */
typedef enum {
    BDRV_WRITE,
    BDRV_WRITE_ZEROES,
    BDRV_DISCARD,
} BdrvWriteKind;

/* Limits of a node, in bytes; 0 means no limit.  Every request the driver
 * receives honours them: io.c aligns and splits on the driver's behalf. */
typedef struct BlockLimits {
    uint32_t request_alignment;  /* offsets/lengths reaching the driver */
    uint32_t buffer_alignment;   /* memory alignment (O_DIRECT) */
    uint64_t max_transfer;       /* largest read or write */
    uint64_t max_pwrite_zeroes;  /* largest write-zeroes */
    uint64_t max_pdiscard;       /* largest discard */
    uint32_t pdiscard_alignment; /* discard granularity */
    uint32_t pwrite_zeroes_alignment;
} BlockLimits;

/*
 * A before-write notifier runs for every write-like request on its node,
 * after the request is tracked and before it reaches the driver.  It may
 * block (delaying the write) and may return a negative errno, which fails the
 * write without touching the node.  A backup job's copy-before-write hooks
 * here.
 */
typedef int (*BlockBeforeWriteFunc)(BlockNode *bs, BdrvWriteKind kind,
                                    int64_t offset, int64_t bytes,
                                    void *opaque);

/* --- graph ------------------------------------------------------------ */

/*
 * Open a node from flat options (QEMU -blockdev style keys: "driver",
 * "node-name", "read-only", "discard", "detect-zeroes", "cache.direct",
 * "file" (a node-name) or "file.driver"/"file.filename"/..., plus the
 * driver's own).  Takes ownership of nothing; unknown keys are an error.
 */
BlockNode *bdrv_open(GHashTable *options, GError **errp);

/* Create an image of @size bytes with the named driver ("file" or a format
 * over a protocol).  Options are driver specific (e.g. "nocow"). */
int bdrv_create(const char *driver, const char *filename, uint64_t size,
                GHashTable *options, GError **errp);

/* Is there a driver of this name ("raw", "qcow2", "file", ...)? */
bool bdrv_has_driver(const char *name);

/* The format of an image file as QEMU probes it among the formats snapnbd
 * knows: "qcow2" for the qcow2 magic, else "raw" (also when unreadable:
 * opening it then reports the error). */
const char *bdrv_probe_format(const char *filename);

void bdrv_ref(BlockNode *bs);
void bdrv_unref(BlockNode *bs);

BlockNode *bdrv_find_node(const char *node_name);
const char *bdrv_node_name(BlockNode *bs);
const char *bdrv_driver_name(BlockNode *bs);
const char *bdrv_filename(BlockNode *bs); /* the file at the bottom, or "" */
/* A one-line description for -v output (e.g. "file (aio=io_uring)"). */
char *bdrv_describe(BlockNode *bs);
BlockNode *bdrv_child(BlockNode *bs, const char *name);
bool bdrv_is_read_only(BlockNode *bs);
const BlockLimits *bdrv_limits(BlockNode *bs);
/* May the node be written by several clients with consistent flushes? */
bool bdrv_can_multi_conn(BlockNode *bs);
bool bdrv_can_fast_zero(BlockNode *bs);
bool bdrv_discard_unmaps(BlockNode *bs);

/* Length in bytes, or a negative errno. */
int64_t bdrv_getlength(BlockNode *bs);

/* --- I/O (block/io.c) ------------------------------------------------- */

int bdrv_pread(BlockNode *bs, int64_t offset, int64_t bytes, void *buf);
int bdrv_pwrite(BlockNode *bs, int64_t offset, int64_t bytes,
                const void *buf, int flags);
int bdrv_pwrite_zeroes(BlockNode *bs, int64_t offset, int64_t bytes,
                       int flags);
int bdrv_pdiscard(BlockNode *bs, int64_t offset, int64_t bytes);
int bdrv_flush(BlockNode *bs);
/* Advise that a range will be read soon (NBD_CMD_CACHE). */
int bdrv_prefetch(BlockNode *bs, int64_t offset, int64_t bytes);

/*
 * Status of the range starting at @offset: returns BDRV_BLOCK_* flags valid
 * for *@pnum bytes (1 <= *pnum <= bytes), or a negative errno.
 */
int bdrv_block_status(BlockNode *bs, int64_t offset, int64_t bytes,
                      int64_t *pnum);

BlockNotifier *bdrv_add_before_write_notifier(BlockNode *bs,
                                              BlockBeforeWriteFunc fn,
                                              void *opaque);
/* Waits until no write runs the notifier any more, then frees it. */
void bdrv_remove_before_write_notifier(BlockNode *bs, BlockNotifier *n);

/* Is the buffer all zero bytes? (fast, word at a time) */
bool buffer_is_zero(const void *buf, size_t len);

/* Allocate an I/O buffer suitable for any node (aligned for O_DIRECT). */
void *bdrv_blockalign(BlockNode *bs, size_t size);

/* Verbosity for driver messages (-v). */
extern int bdrv_verbose;

#endif
