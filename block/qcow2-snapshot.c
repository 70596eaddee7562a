/*
 * qcow2-snapshot.c - the internal snapshot table, and exporting a
 * snapshot read-only in place of the active disk (qemu-nbd -l).
 *
 * Design notes.
 *
 * The table is read at every open, as QEMU does, so that an image whose
 * table is damaged is refused whether or not a snapshot is asked for.  It
 * is untrusted input: every entry must lie inside the file, and QEMU's
 * limits apply (65536 snapshots, 1 KiB of extra data per entry, 64 MiB for
 * the whole table, snapshot L1 tables of at most 32 MiB), so a bad image
 * costs a one-line error, never a huge allocation or a read of some
 * arbitrary place.
 *
 * Loading a snapshot is QEMU's bdrv_snapshot_load_tmp: the snapshot's L1
 * table replaces the active one in memory, nothing is written, and the disk
 * keeps its current size (clusters past the snapshot's L1 table read as
 * unallocated).  The node must be read-only.  Options of the qcow2 node:
 *   snapshot.id, snapshot.name  match the id, the name, or both when both
 *                               are given (-l snapshot.id=...,...);
 *   snapshot.id-or-name         the id, else the name (-l ID_OR_NAME).
 */
#include "qcow2.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <string.h>

/* QEMU's limits (block/qcow2.h there). */
#define MAX_SNAPSHOTS 65536
#define MAX_EXTRA_DATA 1024
#define MAX_TABLE_BYTES (1024 * MAX_SNAPSHOTS)

/* Where the header keeps the table: nb_snapshots, then snapshots_offset. */
#define HDR_NB_SNAPSHOTS 60

/* The fixed part of a table entry, as stored (big-endian, 8-byte aligned);
 * extra data, the id and the name follow. */
typedef struct __attribute__((packed)) SnapshotHeader {
    uint64_t l1_table_offset;
    uint32_t l1_size;
    uint16_t id_size;
    uint16_t name_size;
    uint32_t date_sec;
    uint32_t date_nsec;
    uint64_t vm_clock_nsec;
    uint32_t vm_state_size;
    uint32_t extra_data_size;
} SnapshotHeader;

typedef struct Snapshot {
    uint64_t l1_offset;
    uint32_t l1_size;
    char *id;
    char *name;
} Snapshot;

static void snapshot_clear(gpointer p)
{
    Snapshot *sn = p;

    g_free(sn->id);
    g_free(sn->name);
}

/* Reads @len bytes at @offset, which must lie inside the file. */
static bool read_in_file(BlockNode *bs, uint64_t offset, uint64_t len,
                         void *buf, uint32_t index, GError **errp)
{
    Qcow2State *s = bs->opaque;
    int ret;

    if (offset > (uint64_t)s->file_length ||
        len > (uint64_t)s->file_length - offset) {
        qcow2_bad_image(errp, bs->filename,
                        "snapshot table entry %" PRIu32 " (offset %#" PRIx64
                        ") lies outside the file",
                        index, offset);
        return false;
    }
    ret = bdrv_pread(s->file, offset, len, buf);
    if (ret < 0) {
        qcow2_bad_image(errp, bs->filename,
                        "could not read the snapshot table: %s",
                        g_strerror(-ret));
        return false;
    }
    return true;
}

/* Entry @index at *@offset; moves *@offset past it. */
static bool read_entry(BlockNode *bs, uint64_t *offset, uint32_t index,
                       Snapshot *sn, GError **errp)
{
    SnapshotHeader h;
    g_autofree char *var = NULL;
    uint64_t var_len;

    *offset = ROUND_UP(*offset, 8);
    if (!read_in_file(bs, *offset, sizeof(h), &h, index, errp))
        return false;
    h.extra_data_size = GUINT32_FROM_BE(h.extra_data_size);
    h.id_size = GUINT16_FROM_BE(h.id_size);
    h.name_size = GUINT16_FROM_BE(h.name_size);
    if (h.extra_data_size > MAX_EXTRA_DATA) {
        qcow2_bad_image(errp, bs->filename,
                        "too much extra metadata in snapshot table "
                        "entry %" PRIu32 " (%" PRIu32 " bytes, at most %d)",
                        index, h.extra_data_size, MAX_EXTRA_DATA);
        return false;
    }
    /* Extra data (unused here: size and VM state), id, name. */
    var_len = (uint64_t)h.extra_data_size + h.id_size + h.name_size;
    var = g_malloc(var_len + 1);
    if (!read_in_file(bs, *offset + sizeof(h), var_len, var, index, errp))
        return false;
    sn->l1_offset = GUINT64_FROM_BE(h.l1_table_offset);
    sn->l1_size = GUINT32_FROM_BE(h.l1_size);
    sn->id = g_strndup(var + h.extra_data_size, h.id_size);
    sn->name = g_strndup(var + h.extra_data_size + h.id_size, h.name_size);
    *offset += sizeof(h) + var_len;
    return true;
}

static bool read_table_location(BlockNode *bs, uint32_t *count,
                                uint64_t *offset, GError **errp)
{
    Qcow2State *s = bs->opaque;
    struct __attribute__((packed)) {
        uint32_t count;
        uint64_t offset;
    } loc;
    int ret = bdrv_pread(s->file, HDR_NB_SNAPSHOTS, sizeof(loc), &loc);

    if (ret < 0) {
        qcow2_bad_image(errp, bs->filename, "could not read the header: %s",
                        g_strerror(-ret));
        return false;
    }
    *count = GUINT32_FROM_BE(loc.count);
    *offset = GUINT64_FROM_BE(loc.offset);
    if (*count > MAX_SNAPSHOTS) {
        qcow2_bad_image(errp, bs->filename,
                        "too many snapshots (%" PRIu32 ", at most %d)", *count,
                        MAX_SNAPSHOTS);
        return false;
    }
    if (*count && (*offset & (s->cluster_size - 1))) {
        qcow2_bad_image(errp, bs->filename,
                        "snapshot table offset %#" PRIx64 " is not "
                        "cluster aligned",
                        *offset);
        return false;
    }
    return true;
}

/* The whole table, checked; NULL with @errp set when it is damaged.
 * *@start and *@end (may be NULL) say where it lies in the file. */
static GArray *read_table(BlockNode *bs, uint64_t *start_out,
                          uint64_t *end_out, GError **errp)
{
    g_autoptr(GArray) table = g_array_new(FALSE, TRUE, sizeof(Snapshot));
    uint64_t start, offset;
    uint32_t count;

    g_array_set_clear_func(table, snapshot_clear);
    if (!read_table_location(bs, &count, &start, errp))
        return NULL;
    offset = start;
    for (uint32_t i = 0; i < count; i++) {
        Snapshot sn = { 0 };

        if (!read_entry(bs, &offset, i, &sn, errp))
            return NULL;
        g_array_append_val(table, sn);
        if (offset - start > MAX_TABLE_BYTES) {
            qcow2_bad_image(errp, bs->filename,
                            "the snapshot table is too big (more than "
                            "%d bytes)",
                            MAX_TABLE_BYTES);
            return NULL;
        }
    }
    if (start_out)
        *start_out = start;
    if (end_out)
        *end_out = offset;
    return g_steal_pointer(&table);
}

GArray *qcow2_snapshot_l1_tables(BlockNode *bs, uint64_t *table_offset,
                                 uint64_t *table_bytes, GError **errp)
{
    uint64_t end;
    g_autoptr(GArray) table = read_table(bs, table_offset, &end, errp);
    GArray *l1s;

    if (!table)
        return NULL;
    l1s = g_array_new(FALSE, FALSE, sizeof(Qcow2SnapshotL1));
    for (guint i = 0; i < table->len; i++) {
        Snapshot *sn = &g_array_index(table, Snapshot, i);
        Qcow2SnapshotL1 l1 = { sn->l1_offset, sn->l1_size };
        g_array_append_val(l1s, l1);
    }
    *table_bytes = end - *table_offset;
    return l1s;
}

/* QEMU's find_snapshot_by_id_and_name: both must match when both are
 * given.  -1 when none does. */
static int find(GArray *table, const char *id, const char *name)
{
    for (guint i = 0; i < table->len; i++) {
        const Snapshot *sn = &g_array_index(table, Snapshot, i);

        if ((!id || strcmp(sn->id, id) == 0) &&
            (!name || strcmp(sn->name, name) == 0))
            return i;
    }
    return -1;
}

static int find_requested(GArray *table, const char *id, const char *name,
                          const char *id_or_name)
{
    int i;

    if (!id_or_name)
        return find(table, id, name);
    i = find(table, id_or_name, NULL);
    return i >= 0 ? i : find(table, NULL, id_or_name);
}

/* Reads the snapshot's L1 table in place of the active one. */
static bool load_l1(BlockNode *bs, const Snapshot *sn, GError **errp)
{
    Qcow2State *s = bs->opaque;
    uint64_t bytes = (uint64_t)sn->l1_size * sizeof(uint64_t);
    g_autofree uint64_t *l1 = NULL;
    int ret;

    if (sn->l1_size > QCOW2_MAX_L1_BYTES / sizeof(uint64_t)) {
        qcow2_bad_image(errp, bs->filename,
                        "snapshot '%s' (id %s): L1 table too large (%" PRIu32
                        " entries)",
                        sn->name, sn->id, sn->l1_size);
        return false;
    }
    if ((sn->l1_offset & (s->cluster_size - 1)) ||
        sn->l1_offset > (uint64_t)s->file_length ||
        bytes > s->file_length - sn->l1_offset ||
        (bytes && !sn->l1_offset)) {
        qcow2_bad_image(errp, bs->filename,
                        "snapshot '%s' (id %s): L1 table offset %#" PRIx64
                        " is unaligned or outside the file",
                        sn->name, sn->id, sn->l1_offset);
        return false;
    }
    l1 = g_try_new0(uint64_t, MAX(sn->l1_size, 1));
    ret = !l1 ? -ENOMEM
              : bytes ? bdrv_pread(s->file, sn->l1_offset, bytes, l1) : 0;
    if (ret < 0) {
        qcow2_bad_image(errp, bs->filename,
                        "could not read the L1 table of snapshot '%s': "
                        "%s",
                        sn->name, g_strerror(-ret));
        return false;
    }
    for (uint32_t i = 0; i < sn->l1_size; i++)
        l1[i] = GUINT64_FROM_BE(l1[i]);
    g_free(s->l1_table);
    s->l1_table = g_steal_pointer(&l1);
    s->l1_size = sn->l1_size;
    s->l1_offset = sn->l1_offset;
    return true;
}

static bool load_snapshot(BlockNode *bs, GArray *table, const char *id,
                          const char *name, const char *id_or_name,
                          GError **errp)
{
    int i;

    if (id_or_name && (id || name)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "snapshot.id-or-name cannot be combined with "
                    "snapshot.id or snapshot.name");
        return false;
    }
    if (!bs->read_only) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Failed to load snapshot: Device is not readonly");
        return false;
    }
    i = find_requested(table, id, name, id_or_name);
    if (i < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_FOUND,
                    "Failed to load snapshot: Can't find snapshot");
        return false;
    }
    return load_l1(bs, &g_array_index(table, Snapshot, i), errp);
}

bool qcow2_snapshot_apply(BlockNode *bs, GHashTable *options, GError **errp)
{
    g_autofree char *id = opt_take(options, "snapshot.id");
    g_autofree char *name = opt_take(options, "snapshot.name");
    g_autofree char *id_or_name = opt_take(options, "snapshot.id-or-name");
    g_autoptr(GArray) table = read_table(bs, NULL, NULL, errp);

    if (!table)
        return false;
    if (!id && !name && !id_or_name)
        return true;
    return load_snapshot(bs, table, id, name, id_or_name, errp);
}
