/*
 * backup.h - the parts of snapnbd-backup, as they see each other.
 *
 *   backup-main.c      the command line and the exit codes
 *   backup-take.c      full and inc: an export becomes a new qcow2 layer
 *   backup-restore.c   restore, verify and list
 *   backup-chain.c     the backup directory: names, manifests, checksums,
 *                      the chain of qcow2 layers
 *   backup-nbd.c       connecting to an export, and the map of what to copy
 *                      from its block status
 *   backup-copy.c      the copy engine: chunks in flight between an NBD
 *                      export and block nodes
 *   backup-progress.c  the progress bar
 *
 * Errors travel as GError; the code of a BACKUP_ERROR is the exit status.
 */
#ifndef SNAPNBD_TOOLS_BACKUP_H
#define SNAPNBD_TOOLS_BACKUP_H

#include "block/block.h"

#include <glib.h>
#include <libnbd.h>
#include <stdbool.h>
#include <stdint.h>

#define BACKUP_ERROR backup_error_quark()
GQuark backup_error_quark(void);
/* Each code is the exit status it leads to (docs/snapnbd-backup.pod). */
typedef enum {
    BACKUP_ERROR_FAILED = 1,  /* I/O, connection, anything else */
    BACKUP_ERROR_USAGE = 2,   /* a bad command line */
    BACKUP_ERROR_CORRUPT = 3, /* verify: data differ from their checksums */
    BACKUP_ERROR_CHAIN = 4,   /* the backup directory or chain is unusable */
    BACKUP_ERROR_SERVER = 5,  /* the export lacks what the command needs */
} BackupErrorCode;

/* What the command line chose. */
typedef struct Options {
    const char *bitmap;   /* inc: the dirty bitmap to read */
    int requests;         /* chunks in flight */
    int64_t chunk_size;   /* the largest read or write */
    bool progress;        /* draw the progress bar on stderr */
    bool quiet;           /* no summary line on stdout */
    bool force;           /* restore: even a chain that fails verification */
} Options;

/* A range of the disk: data to copy, or zeroes to write without reading. */
typedef struct Extent {
    int64_t offset;
    int64_t length;
    bool zero;
} Extent;

/* Appends a range to an array of Extent, merged with the last one when
 * they touch and are alike, so that maps stay short. */
void extents_append(GArray *extents, int64_t offset, int64_t length,
                    bool zero);
/* The extents cut into chunks: data at most @max_data bytes, zeroes at most
 * @max_zero (zeroes cost no buffer, but a request has a limit too). */
GArray *extents_split(const GArray *extents, int64_t max_data,
                      int64_t max_zero);
int64_t extents_bytes(const GArray *extents, bool zero);

/* The checksum of one chunk as the copy saw it. */
typedef struct ChunkSum {
    bool zero;          /* every byte was zero (then sha256 is unset) */
    uint8_t sha256[32];
} ChunkSum;

/* --- backup-progress.c --------------------------------------------------- */

typedef struct Progress Progress;
/* A bar for @total bytes, drawn on stderr only when @enabled. */
Progress *progress_new(int64_t total, bool enabled);
void progress_add(Progress *p, int64_t bytes);
/* Erases the bar and frees it. */
void progress_free(Progress *p);

/* --- backup-copy.c ------------------------------------------------------- */

/* Where the chunks come from and go to: one side may be an NBD export,
 * which the engine drives with libnbd's asynchronous calls. */
typedef struct CopySpec {
    struct nbd_handle *src_nbd; /* read data from this export... */
    BlockNode *src_node;        /* ...or from this node */
    struct nbd_handle *dst_nbd; /* write it to this export... */
    BlockNode *dst_node;        /* ...or this node, or nowhere (verify) */
    const char *src_name;       /* for messages: a URI or a file name */
    const char *dst_name;
    bool skip_zero_buffers;     /* the target reads as zeroes already */
    ChunkSum *sums;             /* filled in, one per chunk, or NULL */
    int requests;               /* chunks in flight */
    Progress *progress;
} CopySpec;

typedef struct CopyStats {
    int64_t bytes_read;    /* data read from the source */
    int64_t bytes_written; /* written as data */
    int64_t bytes_zeroed;  /* written as zeroes, or left reading as zeroes */
} CopyStats;

bool copy_chunks(const CopySpec *spec, const GArray *chunks,
                 CopyStats *stats, GError **errp);

/* --- backup-nbd.c -------------------------------------------------------- */

/* Connects to @uri asking for base:allocation and, with @bitmap, for
 * qemu:dirty-bitmap:@bitmap, which the export must offer. */
struct nbd_handle *export_connect(const char *uri, const char *bitmap,
                                  bool writable, GError **errp);
void export_close(struct nbd_handle *h);
/* Appends to @extents what a backup copies: every range that does not read
 * as zeroes (@bitmap NULL), or every dirty range (zero ones as zero
 * extents).  *@dirty gets the bytes the bitmap marks (or the size). */
bool export_map(struct nbd_handle *h, const char *bitmap, GArray *extents,
                int64_t *dirty, GError **errp);
/* Appends to @out the parts of @in's zero extents that the export does not
 * already read as zeroes (so a restore writes no zeroes needlessly). */
bool export_needed_zeroes(struct nbd_handle *h, const GArray *in,
                          GArray *out, GError **errp);
/* The largest request the export takes, at most @want. */
int64_t export_max_request(struct nbd_handle *h, int64_t want);

/* --- backup-chain.c ------------------------------------------------------ */

/* One backup: DIR/NAME.qcow2, DIR/NAME.manifest, DIR/NAME.sums. */
typedef struct Backup {
    char *dir;
    char *name;         /* "0002-inc" */
    char *parent;       /* the backup it is layered on, NULL for a full */
    int seq;            /* its number in the directory */
    bool incremental;
    char *source;       /* the URI it was read from */
    char *bitmap;       /* inc: the bitmap it read */
    int64_t size;       /* the export's size */
    char *started;      /* ISO 8601, UTC */
    double seconds;
    int64_t bytes_read, bytes_dirty, bytes_data, bytes_zero;
    int64_t extents;    /* lines of the sums file */
    char *sums_sha256;  /* of the sums file */
} Backup;

Backup *backup_new(const char *dir, int seq, bool incremental);
void backup_free(Backup *b);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Backup, backup_free)
/* DIR/NAME + @suffix (".qcow2", ".manifest", ".sums"). */
char *backup_path(const Backup *b, const char *suffix);
bool backup_save(const Backup *b, GError **errp);

/* Splits DIR/BACKUP (a name with or without suffix, or DIR alone for the
 * newest backup) into the directory and the backup name. */
bool backup_resolve(const char *arg, char **dir, char **name,
                    GError **errp);
/* The newest complete backup of @dir, or NULL with a CHAIN error. */
char *chain_newest(const char *dir, GError **errp);
/* The next free sequence number in @dir. */
int chain_next_seq(const char *dir);
/* Every complete backup in @dir, by sequence number. */
GPtrArray *chain_list(const char *dir, GError **errp);
/* @name and its ancestors, oldest (the full backup) first. */
GPtrArray *chain_load(const char *dir, const char *name, GError **errp);
/* Opens the newest layer of @chain read-only and checks that each qcow2
 * file is backed by the one the manifests name, and the full by none. */
BlockNode *chain_open(const GPtrArray *chain, GError **errp);
/* Takes DIR/.lock so that two runs do not write one directory; returns
 * the descriptor to give chain_unlock at the end, or -1. */
int chain_lock(const char *dir, GError **errp);
/* Removes DIR/.lock (still held, so nobody else holds it) and releases
 * it: no lock file stays behind, whether the run succeeded or not. */
void chain_unlock(const char *dir, int fd);

/* Writes DIR/NAME.sums (one line per chunk) and sets b->sums_sha256. */
bool sums_save(Backup *b, const GArray *chunks, const ChunkSum *sums,
               GError **errp);
/* Reads DIR/NAME.sums back, checking it against the manifest. */
bool sums_load(const Backup *b, GArray *chunks, GArray *sums,
               GError **errp);

/* Opens a qcow2 file through the block layer (its backing chain too). */
BlockNode *qcow2_node_open(const char *path, bool read_only,
                           GError **errp);

/* --- the commands ------------------------------------------------------- */

bool cmd_backup(const Options *o, bool incremental, const char *uri,
                const char *dir, GError **errp);
bool cmd_restore(const Options *o, const char *backup, const char *target,
                 GError **errp);
bool cmd_verify(const Options *o, const char *backup, GError **errp);
bool cmd_list(const Options *o, const char *dir, GError **errp);

#endif
