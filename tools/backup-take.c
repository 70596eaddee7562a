/*
 * backup-take.c - "full" and "inc": read an export into a new qcow2 layer.
 *
 * A full backup reads every range that the export's base:allocation does
 * not report as zeroes into a qcow2 image without a backing file.  An
 * incremental one reads the ranges its dirty bitmap marks into a qcow2
 * layer backed by the newest backup; dirty ranges that read as zeroes are
 * written as zero clusters, which shadow the older data beneath.
 *
 * The layer is written as NAME.qcow2.part and renamed when it is complete,
 * then the checksums and, last, the manifest are written: a crash leaves
 * at worst an incomplete backup that no chain uses.
 */
#include "tools/backup.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <unistd.h>

/* Zero requests cost no buffer; NBD's length field still has 32 bits. */
#define MAX_ZERO_REQUEST (INT64_C(1) << 30)

typedef struct Take {
    const Options *o;
    Backup *b;                /* the new backup */
    Backup *parent;           /* inc: the newest backup, else NULL */
    struct nbd_handle *nbd;
    BlockNode *target;
    char *part;               /* the layer while it is written */
    char *sums;               /* the sums file, until the manifest is */
    GArray *extents;          /* what to copy */
    const char *dir;          /* the backup directory */
    bool made_dir;            /* full: this run created it */
    int lock_fd;
} Take;

static void take_cleanup(Take *t)
{
    if (t->target)
        bdrv_unref(t->target);
    export_close(t->nbd);
    if (t->part)
        unlink(t->part);
    if (t->sums)
        unlink(t->sums);
    g_free(t->part);
    g_free(t->sums);
    backup_free(t->b);
    backup_free(t->parent);
    if (t->extents)
        g_array_free(t->extents, TRUE);
    chain_unlock(t->dir, t->lock_fd);
}

/* inc: finds the newest backup of @dir and checks its whole chain. */
static bool find_parent(Take *t, const char *dir, GError **errp)
{
    g_autofree char *newest = chain_newest(dir, errp);
    g_autoptr(GPtrArray) chain = newest ? chain_load(dir, newest, errp)
                                        : NULL;
    BlockNode *node = chain ? chain_open(chain, errp) : NULL;

    if (!node)
        return false;
    bdrv_unref(node);
    t->parent = g_ptr_array_steal_index(chain, chain->len - 1);
    return true;
}

static bool open_dir(Take *t, bool incremental, const char *dir,
                     GError **errp)
{
    t->dir = dir;
    t->made_dir = !incremental && !g_file_test(dir, G_FILE_TEST_EXISTS);
    if (!incremental && g_mkdir_with_parents(dir, 0755) < 0) {
        g_set_error(errp, BACKUP_ERROR, BACKUP_ERROR_CHAIN, "%s: %s", dir,
                    g_strerror(errno));
        return false;
    }
    if (incremental && !g_file_test(dir, G_FILE_TEST_IS_DIR)) {
        g_set_error(errp, BACKUP_ERROR, BACKUP_ERROR_CHAIN,
                    "%s is not a backup directory: take a full backup "
                    "first", dir);
        return false;
    }
    t->lock_fd = chain_lock(dir, errp);
    return t->lock_fd >= 0 && (!incremental || find_parent(t, dir, errp));
}

/* The export's size, which qcow2 and the chain must accept. */
static int64_t export_size(Take *t, const char *uri, GError **errp)
{
    int64_t size = nbd_get_size(t->nbd);

    if (size <= 0 || size % 512) {
        g_set_error(errp, BACKUP_ERROR, BACKUP_ERROR_SERVER,
                    "%s: the export's size (%" PRId64 ") is not a positive "
                    "multiple of 512", uri, size);
        return -1;
    }
    if (t->parent && size != t->parent->size) {
        g_set_error(errp, BACKUP_ERROR, BACKUP_ERROR_CHAIN,
                    "%s: the export's size changed since %s (%" PRId64
                    " -> %" PRId64 " bytes): take a full backup", uri,
                    t->parent->name, t->parent->size, size);
        return -1;
    }
    return size;
}

static bool create_layer(Take *t, GError **errp)
{
    g_autoptr(GHashTable) opts = g_hash_table_new_full(
        g_str_hash, g_str_equal, g_free, g_free);
    g_autofree char *final = backup_path(t->b, ".qcow2");

    if (g_file_test(final, G_FILE_TEST_EXISTS)) {
        g_set_error(errp, BACKUP_ERROR, BACKUP_ERROR_CHAIN,
                    "%s exists already", final);
        return false;
    }
    if (t->parent) {
        g_hash_table_insert(opts, g_strdup("backing_file"),
                            g_strconcat(t->parent->name, ".qcow2", NULL));
        g_hash_table_insert(opts, g_strdup("backing_fmt"),
                            g_strdup("qcow2"));
    }
    t->part = backup_path(t->b, ".qcow2.part");
    if (bdrv_create("qcow2", t->part, t->b->size, opts, errp) < 0) {
        g_clear_pointer(&t->part, g_free);
        return false;
    }
    t->target = qcow2_node_open(t->part, false, errp);
    return t->target != NULL;
}

static bool copy(Take *t, const char *uri, GError **errp)
{
    int64_t chunk = export_max_request(t->nbd, t->o->chunk_size);
    g_autoptr(GArray) chunks = extents_split(t->extents, chunk,
                                             MAX_ZERO_REQUEST);
    g_autofree ChunkSum *sums = g_new0(ChunkSum, MAX(chunks->len, 1));
    g_autofree char *part = g_path_get_basename(t->part);
    Progress *p = progress_new(extents_bytes(chunks, false) +
                                   extents_bytes(chunks, true),
                               t->o->progress);
    CopySpec spec = {
        .src_nbd = t->nbd,
        .dst_node = t->target,
        .src_name = uri,
        .dst_name = part,
        .skip_zero_buffers = !t->parent, /* a full has nothing beneath */
        .sums = sums,
        .requests = t->o->requests,
        .progress = p,
    };
    CopyStats st;
    bool ok = copy_chunks(&spec, chunks, &st, errp);
    int ret;

    progress_free(p);
    if (ok && (ret = bdrv_flush(t->target)) < 0) {
        g_set_error(errp, BACKUP_ERROR, BACKUP_ERROR_FAILED,
                    "flushing %s: %s", t->part, g_strerror(-ret));
        ok = false;
    }
    t->b->bytes_read = st.bytes_read;
    t->b->bytes_data = st.bytes_written;
    t->b->bytes_zero = st.bytes_zeroed;
    if (!ok)
        return false;
    t->sums = backup_path(t->b, ".sums");
    return sums_save(t->b, chunks, sums, errp);
}

/* The layer becomes part of the chain: renamed, then the manifest. */
static bool commit(Take *t, gint64 start, GError **errp)
{
    g_autofree char *final = backup_path(t->b, ".qcow2");

    bdrv_unref(t->target);
    t->target = NULL;
    if (rename(t->part, final) < 0) {
        g_set_error(errp, BACKUP_ERROR, BACKUP_ERROR_FAILED,
                    "renaming %s: %s", t->part, g_strerror(errno));
        return false;
    }
    g_clear_pointer(&t->part, g_free);
    t->b->seconds = (g_get_monotonic_time() - start) /
                    (double)G_USEC_PER_SEC;
    if (backup_save(t->b, errp)) {
        g_clear_pointer(&t->sums, g_free);
        return true;
    }
    unlink(final);
    return false;
}

static void summary(const Take *t)
{
    const Backup *b = t->b;

    if (t->o->quiet)
        return;
    printf("%s: read %" PRId64 " bytes (%s %" PRId64 "), wrote %" PRId64
           " bytes of data and %" PRId64 " of zeroes in %.2f s\n",
           b->name, b->bytes_read, b->incremental ? "dirty" : "size",
           b->bytes_dirty, b->bytes_data, b->bytes_zero, b->seconds);
}

static char *now_iso8601(void)
{
    g_autoptr(GDateTime) now = g_date_time_new_now_utc();

    return g_date_time_format(now, "%Y-%m-%dT%H:%M:%SZ");
}

bool cmd_backup(const Options *o, bool incremental, const char *uri,
                const char *dir, GError **errp)
{
    Take t = {.o = o, .lock_fd = -1};
    gint64 start = g_get_monotonic_time();
    int64_t size;
    bool ok = false;

    if (!open_dir(&t, incremental, dir, errp))
        goto out;
    t.nbd = export_connect(uri, incremental ? o->bitmap : NULL, false, errp);
    if (!t.nbd || (size = export_size(&t, uri, errp)) < 0)
        goto out;
    t.b = backup_new(dir, chain_next_seq(dir), incremental);
    t.b->size = size;
    t.b->source = g_strdup(uri);
    t.b->bitmap = g_strdup(incremental ? o->bitmap : NULL);
    t.b->parent = t.parent ? g_strdup(t.parent->name) : NULL;
    t.b->started = now_iso8601();
    t.extents = g_array_new(FALSE, FALSE, sizeof(Extent));
    ok = export_map(t.nbd, t.b->bitmap, t.extents, &t.b->bytes_dirty,
                    errp) &&
         create_layer(&t, errp) && copy(&t, uri, errp) &&
         commit(&t, start, errp);
    if (ok)
        summary(&t);
out:
    take_cleanup(&t);
    if (!ok && t.made_dir)
        rmdir(dir); /* a failed first backup leaves nothing (if empty) */
    return ok;
}
