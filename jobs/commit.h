/*
 * commit.h - block-commit and block-stream: jobs that fold layers of a
 * backing chain into one image and drop them from the chain.
 *
 * Commit (QEMU's block-commit) copies what the layers from @top down to,
 * not including, @base hold into @base, then makes the image above @top
 * use @base as its backing file: its header names @base (or the
 * backing-file string given) before the graph changes, so a failed header
 * write fails the job and leaves the chain as it was.  While it copies,
 * reads through the chain are unchanged (what it writes into @base is
 * hidden by the layers above until they are dropped).
 *
 * When @top is the active layer (it has users that write), the commit is
 * QEMU's active commit: a mirror of @top into @base that reaches "ready"
 * and, on job-complete, moves @top's users to @base.
 *
 * Stream (QEMU's block-stream) copies what the layers below @top, down to
 * but not including @base (NULL: the whole chain), hold into @top, through
 * a copy-on-read filter that orders the copies with the users' writes,
 * then makes @base the backing file of @top (its header first).
 *
 * Both refuse a chain node that another commit or stream uses, and block
 * blockdev-del, block_resize, backup targets and writable exports on the
 * nodes they drop, with the reason.
 */
#ifndef SNAPNBD_COMMIT_H
#define SNAPNBD_COMMIT_H

#include "block/block.h"
#include "jobs/job.h"

typedef struct ChainJobOptions {
    int64_t speed;              /* bytes/s, 0 = unlimited */
    BlockdevOnError on_error;
    const char *backing_file;   /* the header's new backing name, or NULL */
    bool backing_mask_protocol; /* a protocol base is named format "raw" */
    const char *filter_node_name; /* stream: the copy-on-read node's name */
    int job_flags;              /* JOB_MANUAL_FINALIZE, ... */
} ChainJobOptions;

/* A commit of @top..@base (above @base) in the chain of @active; an active
 * commit when @top is @active or has a writer.  State "created". */
Job *commit_job_create(const char *id, BlockNode *active, BlockNode *top,
                       BlockNode *base, const ChainJobOptions *opts,
                       GError **errp);

/* A stream into @top of the layers above @base (NULL: all of them). */
Job *stream_job_create(const char *id, BlockNode *top, BlockNode *base,
                       const ChainJobOptions *opts, GError **errp);

#endif
