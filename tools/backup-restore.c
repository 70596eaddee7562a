/*
 * backup-restore.c - "restore", "verify" and "list".
 *
 * restore reads the image as of a backup through the block layer (the
 * backup's qcow2 layer and its backing chain) and writes it to a file or an
 * export.  Zeroes are written only where the target does not read as
 * zeroes already: a regular file is created afresh (sparse), an export is
 * asked with base:allocation, a block device gets them all.
 *
 * verify re-reads, for each backup of the chain, the chunks its sums file
 * lists, through that backup's own view of the chain (which shows its
 * layer on top), and compares their SHA-256 with the recorded ones; zero
 * chunks must still read as zeroes (zero clusters pass without a read).
 *
 * restore verifies the chain so first, before it writes anything: a
 * damaged backup is refused (naming the backup and offset) rather than
 * restored as if it were sound, unless --force says to restore it anyway.
 */
#include "tools/backup.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* Zero requests cost no buffer; NBD's length field still has 32 bits. */
#define MAX_ZERO_REQUEST (INT64_C(1) << 30)
/* How many differing chunks verify names before it only counts. */
#define MAX_REPORTED 10

/* The backup named by @arg, its chain checked and open. */
static BlockNode *open_backup(const char *arg, GPtrArray **chain,
                              GError **errp)
{
    g_autofree char *dir = NULL, *name = NULL;
    BlockNode *node;

    if (!backup_resolve(arg, &dir, &name, errp))
        return NULL;
    *chain = chain_load(dir, name, errp);
    if (!*chain)
        return NULL;
    node = chain_open(*chain, errp);
    if (!node)
        g_clear_pointer(chain, g_ptr_array_unref);
    return node;
}

/* Appends the node's map of [offset, end): data, and zeroes. */
static bool node_map(BlockNode *node, int64_t offset, int64_t end,
                     GArray *out, GError **errp)
{
    while (offset < end) {
        int64_t n;
        int ret = bdrv_block_status(node, offset, end - offset, &n);
        if (ret < 0) {
            g_set_error(errp, BACKUP_ERROR, BACKUP_ERROR_FAILED,
                        "%s: block status at offset %" PRId64 ": %s",
                        bdrv_filename(node), offset, g_strerror(-ret));
            return false;
        }
        extents_append(out, offset, n, ret & BDRV_BLOCK_ZERO);
        offset += n;
    }
    return true;
}

/* --- restore -------------------------------------------------------------- */

typedef struct Target {
    struct nbd_handle *nbd;
    BlockNode *node;
    bool reads_zero;   /* created afresh: zeroes need not be written */
} Target;

static bool is_uri(const char *s)
{
    return g_str_has_prefix(s, "nbd") && strstr(s, "://");
}

static BlockNode *file_node_open(const char *path, GError **errp)
{
    g_autoptr(GHashTable) o = g_hash_table_new(g_str_hash, g_str_equal);

    g_hash_table_insert(o, "driver", "file");
    g_hash_table_insert(o, "filename", (char *)path);
    return bdrv_open(o, errp);
}

static bool target_open(Target *t, const char *target, int64_t size,
                        GError **errp)
{
    struct stat st;
    int64_t have;

    if (is_uri(target)) {
        t->nbd = export_connect(target, NULL, true, errp);
        have = t->nbd ? nbd_get_size(t->nbd) : 0;
    } else {
        /* A file is made afresh, sparse; a device is written over. */
        t->reads_zero = stat(target, &st) < 0 || S_ISREG(st.st_mode);
        if (t->reads_zero &&
            bdrv_create("file", target, size, NULL, errp) < 0)
            return false;
        t->node = file_node_open(target, errp);
        have = t->node ? bdrv_getlength(t->node) : 0;
    }
    if (!t->nbd && !t->node)
        return false;
    if (have < size) {
        g_set_error(errp, BACKUP_ERROR, BACKUP_ERROR_FAILED,
                    "%s is smaller (%" PRId64 " bytes) than the backup (%"
                    PRId64 ")", target, have, size);
        return false;
    }
    return true;
}

static void target_close(Target *t)
{
    if (t->node)
        bdrv_unref(t->node);
    export_close(t->nbd);
}

static int target_flush(Target *t)
{
    if (!t->nbd)
        return bdrv_flush(t->node);
    if (nbd_can_flush(t->nbd) != 1)
        return 0; /* the server writes through, or cannot tell */
    return nbd_flush(t->nbd, 0) < 0 ? -(nbd_get_errno() ?: EIO) : 0;
}

/* The chunks to copy: data, and the zeroes the target needs. */
static GArray *restore_plan(const Options *o, BlockNode *src, Target *t,
                            int64_t size, GError **errp)
{
    g_autoptr(GArray) map = g_array_new(FALSE, FALSE, sizeof(Extent));
    g_autoptr(GArray) need = g_array_new(FALSE, FALSE, sizeof(Extent));
    int64_t chunk = t->nbd ? export_max_request(t->nbd, o->chunk_size)
                           : o->chunk_size;
    /* Without write-zeroes, an export gets zeroes as data, in chunks. */
    int64_t max_zero = t->nbd && nbd_can_zero(t->nbd) != 1
                           ? chunk : MAX_ZERO_REQUEST;

    if (!node_map(src, 0, size, map, errp))
        return NULL;
    for (guint i = 0; t->reads_zero && i < map->len; i++) {
        Extent *e = &g_array_index(map, Extent, i);
        if (!e->zero)
            extents_append(need, e->offset, e->length, false);
    }
    if (t->nbd && !export_needed_zeroes(t->nbd, map, need, errp))
        return NULL;
    return extents_split(t->reads_zero || t->nbd ? need : map, chunk,
                         max_zero);
}

static bool restore_copy(const Options *o, BlockNode *src, Target *t,
                         const char *target, int64_t size, GError **errp)
{
    g_autoptr(GArray) chunks = restore_plan(o, src, t, size, errp);
    Progress *p;
    CopySpec spec = {
        .src_node = src,
        .dst_nbd = t->nbd,
        .dst_node = t->node,
        .src_name = bdrv_filename(src),
        .dst_name = target,
        .skip_zero_buffers = t->reads_zero,
        .requests = o->requests,
    };
    int ret;
    bool ok;

    if (!chunks)
        return false;
    p = progress_new(extents_bytes(chunks, false) +
                     extents_bytes(chunks, true), o->progress);
    spec.progress = p;
    ok = copy_chunks(&spec, chunks, NULL, errp);
    progress_free(p);
    if (ok && (ret = target_flush(t)) < 0) {
        g_set_error(errp, BACKUP_ERROR, BACKUP_ERROR_FAILED,
                    "flushing %s: %s", target, g_strerror(-ret));
        ok = false;
    }
    return ok;
}

static int verify_chain(const Options *o, const GPtrArray *chain,
                        BlockNode *top, bool report, char **first,
                        GError **errp);

/* Every chunk of the chain against its recorded checksum, before the
 * target is touched: a damaged chain is refused unless --force. */
static bool restore_verified(const Options *o, const GPtrArray *chain,
                             BlockNode *src, GError **errp)
{
    const Backup *top = chain->pdata[chain->len - 1];
    g_autofree char *first = NULL;
    int corrupt = verify_chain(o, chain, src, false, &first, errp);

    if (corrupt <= 0)
        return corrupt == 0;
    if (o->force) {
        fprintf(stderr, "snapnbd-backup: warning: %s: restoring a chain "
                "that fails verification (%s), as --force says\n",
                top->name, first);
        return true;
    }
    g_set_error(errp, BACKUP_ERROR, BACKUP_ERROR_CORRUPT,
                "%s: not restored: %d of %u backups in its chain fail "
                "verification (first: %s); --force restores anyway",
                top->name, corrupt, chain->len, first);
    return false;
}

bool cmd_restore(const Options *o, const char *backup, const char *target,
                 GError **errp)
{
    g_autoptr(GPtrArray) chain = NULL;
    BlockNode *src = open_backup(backup, &chain, errp);
    Target t = {0};
    const Backup *top;
    bool ok;

    if (!src)
        return false;
    top = chain->pdata[chain->len - 1];
    ok = restore_verified(o, chain, src, errp) &&
         target_open(&t, target, top->size, errp) &&
         restore_copy(o, src, &t, target, top->size, errp);
    target_close(&t);
    bdrv_unref(src);
    if (ok && !o->quiet)
        printf("%s: restored to %s\n", top->name, target);
    return ok;
}

/* --- verify --------------------------------------------------------------- */

/* What verify reads: chunks, each pointing back at the recorded one. */
typedef struct Check {
    GArray *chunks;    /* of Extent, to read */
    GArray *ref;       /* of guint, the recorded chunk of each */
} Check;

/* A recorded zero chunk: the parts the node does not report as zero
 * clusters are read and must be zeroes. */
static bool plan_zero(BlockNode *node, const Extent *e, guint index,
                      int64_t max, Check *ck, GError **errp)
{
    g_autoptr(GArray) map = g_array_new(FALSE, FALSE, sizeof(Extent));

    if (!node_map(node, e->offset, e->offset + e->length, map, errp))
        return false;
    for (guint i = 0; i < map->len; i++) {
        Extent m = g_array_index(map, Extent, i);
        for (int64_t off = 0; !m.zero && off < m.length; off += max) {
            Extent k = {m.offset + off, MIN(max, m.length - off), false};
            g_array_append_val(ck->chunks, k);
            g_array_append_val(ck->ref, index);
        }
    }
    return true;
}

static bool verify_plan(BlockNode *node, const GArray *rec,
                        const GArray *sums, int64_t max, Check *ck,
                        GError **errp)
{
    for (guint i = 0; i < rec->len; i++) {
        const Extent *e = &g_array_index(rec, Extent, i);
        if (!g_array_index(sums, ChunkSum, i).zero) {
            g_array_append_val(ck->chunks, *e);
            g_array_append_val(ck->ref, i);
        } else if (!plan_zero(node, e, i, max, ck, errp)) {
            return false;
        }
    }
    return true;
}

/* Counts (and names the first few) chunks that differ from the record;
 * *@first (unless set already) gets the first one's description. */
static int64_t compare_sums(const Backup *b, const Check *ck,
                            const ChunkSum *got, const GArray *rec,
                            const GArray *want, char **first)
{
    int64_t bad = 0;
    gint64 last = -1;

    for (guint i = 0; i < ck->chunks->len; i++) {
        guint r = g_array_index(ck->ref, guint, i);
        const ChunkSum *w = &g_array_index(want, ChunkSum, r);
        const Extent *e = &g_array_index(rec, Extent, r);
        if (got[i].zero == w->zero &&
            (w->zero || !memcmp(got[i].sha256, w->sha256, 32)))
            continue;
        if (last == r)
            continue; /* one report per recorded chunk */
        last = r;
        if (!*first)
            *first = g_strdup_printf("%s: %" PRId64 " bytes at offset %"
                                     PRId64 ": %s", b->name, e->length,
                                     e->offset, w->zero ? "no longer zero"
                                                        : "checksum mismatch");
        if (++bad <= MAX_REPORTED)
            fprintf(stderr, "%s: %" PRId64 " bytes at offset %" PRId64
                    ": %s\n", b->name, e->length, e->offset,
                    w->zero ? "no longer zero" : "checksum mismatch");
    }
    return bad;
}

/* Verifies one backup through @node, its view; returns the chunks that
 * differ, or -1 when they could not be read. */
static int64_t verify_layer(const Options *o, const Backup *b,
                            BlockNode *node, char **first, GError **errp)
{
    g_autoptr(GArray) rec = g_array_new(FALSE, FALSE, sizeof(Extent));
    g_autoptr(GArray) want = g_array_new(FALSE, FALSE, sizeof(ChunkSum));
    Check ck = {g_array_new(FALSE, FALSE, sizeof(Extent)),
                g_array_new(FALSE, FALSE, sizeof(guint))};
    g_autofree ChunkSum *got = NULL;
    CopySpec spec = {.src_node = node, .src_name = bdrv_filename(node),
                     .requests = o->requests};
    int64_t bad = -1;

    if (sums_load(b, rec, want, errp) &&
        verify_plan(node, rec, want, o->chunk_size, &ck, errp)) {
        got = g_new0(ChunkSum, MAX(ck.chunks->len, 1));
        spec.sums = got;
        spec.progress = progress_new(extents_bytes(ck.chunks, false),
                                     o->progress);
        if (copy_chunks(&spec, ck.chunks, NULL, errp))
            bad = compare_sums(b, &ck, got, rec, want, first);
        progress_free(spec.progress);
    }
    g_array_free(ck.chunks, TRUE);
    g_array_free(ck.ref, TRUE);
    return bad;
}

/* Verifies each backup of @chain through its view, from @top down: the
 * number of damaged backups, or -1 (@errp set) when reading failed.
 * With @report, a sound backup gets an "ok" line on stdout; *@first gets
 * the first damaged chunk. */
static int verify_chain(const Options *o, const GPtrArray *chain,
                        BlockNode *top, bool report, char **first,
                        GError **errp)
{
    BlockNode *node = top;
    int corrupt = 0;

    for (guint i = chain->len; i-- > 0; node = bdrv_child(node, "backing")) {
        const Backup *b = chain->pdata[i];
        int64_t bad = verify_layer(o, b, node, first, errp);
        if (bad < 0)
            return -1;
        if (bad > 0)
            fprintf(stderr, "%s: %" PRId64 " of %" PRId64 " chunks differ\n",
                    b->name, bad, b->extents);
        else if (report)
            printf("%s: ok (%" PRId64 " chunks)\n", b->name, b->extents);
        corrupt += bad != 0;
    }
    return corrupt;
}

bool cmd_verify(const Options *o, const char *backup, GError **errp)
{
    g_autoptr(GPtrArray) chain = NULL;
    g_autofree char *first = NULL;
    BlockNode *top = open_backup(backup, &chain, errp);
    int corrupt;

    if (!top)
        return false;
    corrupt = verify_chain(o, chain, top, !o->quiet, &first, errp);
    bdrv_unref(top);
    if (corrupt > 0)
        g_set_error(errp, BACKUP_ERROR, BACKUP_ERROR_CORRUPT,
                    "%d of %u backups in the chain are corrupt", corrupt,
                    chain->len);
    return corrupt == 0;
}

/* --- list ----------------------------------------------------------------- */

bool cmd_list(const Options *o, const char *dir, GError **errp)
{
    g_autoptr(GPtrArray) list = chain_list(dir, errp);

    if (!list)
        return false;
    printf("%-12s %-12s %-20s %14s %14s %s\n", "BACKUP", "PARENT",
           "STARTED", "SIZE", "READ", "BITMAP");
    for (guint i = 0; i < list->len; i++) {
        const Backup *b = list->pdata[i];
        printf("%-12s %-12s %-20s %14" PRId64 " %14" PRId64 " %s\n",
               b->name, b->parent ?: "-", b->started ?: "-", b->size,
               b->bytes_read, b->bitmap ?: "-");
    }
    return true;
}
