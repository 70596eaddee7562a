/*
 * chain.h - helpers of the jobs that change a backing chain (commit and
 * stream) and their monitor commands.
 */
#ifndef SNAPNBD_CHAIN_H
#define SNAPNBD_CHAIN_H

#include "block/block.h"
#include "jobs/job.h"

/* The next layer down (filters skipped), or NULL. */
BlockNode *chain_backing(BlockNode *bs);
/* The layer whose backing is @node, in the chain of @active; or NULL. */
BlockNode *chain_overlay(BlockNode *active, BlockNode *node);
/* The layer of @top's chain whose image file is @filename; or NULL. */
BlockNode *chain_find_file(BlockNode *top, const char *filename);
/* The last layer of the chain (QEMU's bdrv_find_base). */
BlockNode *chain_bottom(BlockNode *top);

/* The nodes a job blocks operations on, referenced until released. */
typedef struct ChainClaim {
    char *reason;       /* the blockers' reason; set by the caller */
    /* writers of dropped nodes are refused by the job's permission edges
     * (QEMU's words), not by a blocker */
    bool writers_by_perm;
    GPtrArray *nodes;
} ChainClaim;
/* Refused when another commit or stream holds @bs.  A @dropped node (or
 * one the job writes) gets every operation blocked; the others only
 * another chain job and blockdev-del. */
bool chain_claim_node(ChainClaim *claim, BlockNode *bs, bool dropped,
                      GError **errp);
/* Every layer from @top down to, not including, @base, as dropped. */
bool chain_claim_range(ChainClaim *claim, BlockNode *top, BlockNode *base,
                       GError **errp);
void chain_release(ChainClaim *claim);

/* QEMU's "intermediate node" edges of @job ("stream job 'j'" in errors)
 * on every layer below @top down to, not including, @base: each takes
 * nothing and shares only @shared, except with the backing links of the
 * chain from @overlay down, which read only what the job keeps unchanged
 * for them.  NULL with @errp set on a conflict; else an array that
 * detaches them when freed. */
GPtrArray *chain_hold_layers(Job *job, BlockNode *overlay, BlockNode *top,
                             BlockNode *base, uint32_t shared,
                             GError **errp);
/* What a commit's layers share: their view changes as base takes the data
 * above them, so neither readers nor resizes (QEMU's commit and active
 * commit). */
#define CHAIN_COMMIT_LAYERS_SHARED (BDRV_PERM_WRITE | BDRV_PERM_WRITE_UNCHANGED)

/* A node made writable for a job, and made read-only again after. */
typedef struct ChainWritable {
    BlockNode *node;
    bool was_read_only;
} ChainWritable;
bool chain_make_writable(ChainWritable *w, BlockNode *bs, GError **errp);
/* Unless @keep_writable (it became the active layer). */
void chain_restore_read_only(ChainWritable *w, bool keep_writable);

/* @bs's header names @base (as @backing_file if given; NULL @base: no
 * backing), then the graph follows; the format stored is @base's driver,
 * "raw" for a protocol driver with @mask_protocol (QEMU's
 * backing-mask-protocol); the header first, so that a failed
 * write leaves the chain as it was.  Call in a drained section. */
bool chain_set_backing(BlockNode *bs, BlockNode *base,
                       const char *backing_file, bool mask_protocol,
                       GError **errp);

#endif
