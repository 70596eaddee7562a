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
    uint32_t date_sec, date_nsec;
    uint64_t vm_clock_nsec;
    uint64_t vm_state_size;
    uint64_t icount;          /* UINT64_MAX: none */
    GBytes *raw;              /* the entry as stored, rewritten as it is */
} Snapshot;

static void snapshot_clear(gpointer p)
{
    Snapshot *sn = p;

    g_free(sn->id);
    g_free(sn->name);
    if (sn->raw)
        g_bytes_unref(sn->raw);
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
    sn->date_sec = GUINT32_FROM_BE(h.date_sec);
    sn->date_nsec = GUINT32_FROM_BE(h.date_nsec);
    sn->vm_clock_nsec = GUINT64_FROM_BE(h.vm_clock_nsec);
    sn->vm_state_size = GUINT32_FROM_BE(h.vm_state_size);
    sn->icount = UINT64_MAX;
    if (h.extra_data_size >= 8) {
        uint64_t large;
        memcpy(&large, var, 8);
        sn->vm_state_size = GUINT64_FROM_BE(large);
    }
    if (h.extra_data_size >= 24) {
        uint64_t icount;
        memcpy(&icount, var + 16, 8);
        sn->icount = GUINT64_FROM_BE(icount);
    }
    {
        /* The raw entry, for rewriting the table: header restored to
         * disk order, then the variable part. */
        GByteArray *raw = g_byte_array_sized_new(sizeof(h) + var_len);
        h.extra_data_size = GUINT32_TO_BE(h.extra_data_size);
        h.id_size = GUINT16_TO_BE(h.id_size);
        h.name_size = GUINT16_TO_BE(h.name_size);
        g_byte_array_append(raw, (const guint8 *)&h, sizeof(h));
        g_byte_array_append(raw, (const guint8 *)var, var_len);
        sn->raw = g_byte_array_free_to_bytes(raw);
    }
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

/* --- taking, deleting and listing snapshots (QMP) ---------------------------
 *
 * As QEMU's qcow2_snapshot_create and qcow2_snapshot_delete, in a drained
 * section (no guest request runs) and under the metadata lock.  Taking a
 * snapshot adds one reference to every L2 table and data cluster the
 * active L1 table reaches after clearing their COPIED flags (so that the
 * next write to them copies first), writes a copy of the L1 table, then a
 * new snapshot table that the header switches to in one 12-byte write
 * (nb_snapshots, snapshots_offset).  Deleting switches the header to a
 * table without the entry first, then drops the references of the
 * snapshot's L1 table and sets COPIED again where the active image is the
 * only owner left.  Refcounts and COPIED flags disagree in between: both
 * run with the dirty bit set in the header (version 3), so that after a
 * crash the next writable open, by snapnbd or QEMU, recounts the
 * refcounts and sets the flags again; the snapshot table switches in one
 * write, so the snapshot exists wholly or not at all.  (A version 2 image
 * has no dirty bit: there qemu-img check -r all repairs such a crash.)
 */

/* The extra data QEMU 7.2 writes: vm_state_size_large, disk_size, icount. */
#define EXTRA_DATA_BYTES 24

static int l2_table(BlockNode *bs, uint64_t l2, Qcow2Table **t)
{
    Qcow2State *s = bs->opaque;

    if (!qcow2_table_in_file(bs, l2, s->cluster_size))
        return qcow2_signal_corruption(
            bs, "L2 table offset %#" PRIx64 " unaligned or outside the "
            "file", l2);
    return qcow2_cache_get(s->l2_cache, l2, t);
}

/* Adds @addend to the refcount of every L2 table of @l1 and of every
 * cluster they map (each L1 table counts once, as qemu-img check counts). */
static int adjust_refcounts(BlockNode *bs, const uint64_t *l1,
                            uint32_t l1_size, int64_t addend)
{
    Qcow2State *s = bs->opaque;
    int ret = 0;

    for (uint32_t i = 0; i < l1_size && ret == 0; i++) {
        uint64_t l2 = l1[i] & QCOW2_L1E_OFFSET_MASK;
        Qcow2Table *t = NULL;

        if (!l2)
            continue;
        ret = l2_table(bs, l2, &t);
        for (uint32_t j = 0; ret == 0 && j < s->l2_entries; j++) {
            uint64_t off, bytes;
            if (qcow2_entry_extent(s, qcow2_table_entry(t, j), &off, &bytes))
                ret = qcow2_update_refcount(bs, off, bytes, addend);
        }
        if (t)
            qcow2_table_put(t);
        if (ret == 0)
            ret = qcow2_update_refcount(bs, l2, s->cluster_size, addend);
    }
    return ret;
}

static uint64_t with_copied(uint64_t e, bool owned)
{
    return owned ? e | QCOW2_OFLAG_COPIED : e & ~QCOW2_OFLAG_COPIED;
}

static int refcount_is_one(BlockNode *bs, uint64_t off, bool *one)
{
    Qcow2State *s = bs->opaque;
    uint64_t rc;
    int ret = qcow2_get_refcount(bs, off >> s->cluster_bits, &rc);

    *one = rc == 1;
    return ret;
}

/* COPIED on exactly the active L2 tables and data clusters whose refcount
 * is 1 (QEMU's update with addend 0), or, with @clear_all, on none; the L1
 * table is rewritten when it changed.  Everything is on disk on return.
 * With @skip_bad, L2 tables outside the file are left alone (the repair
 * reported them) instead of being corruption. */
static int set_copied_flags(BlockNode *bs, bool clear_all, bool skip_bad)
{
    Qcow2State *s = bs->opaque;
    bool l1_changed = false;
    int ret = 0;

    for (uint32_t i = 0; i < s->l1_size && ret == 0; i++) {
        uint64_t l2 = s->l1_table[i] & QCOW2_L1E_OFFSET_MASK;
        bool changed = false, one;
        Qcow2Table *t = NULL;

        if (!l2 || (skip_bad && !qcow2_table_in_file(bs, l2, s->cluster_size)))
            continue;
        ret = l2_table(bs, l2, &t);
        for (uint32_t j = 0; ret == 0 && j < s->l2_entries; j++) {
            uint64_t e = qcow2_table_entry(t, j), off, bytes, want;
            if ((e & QCOW2_OFLAG_COMPRESSED) ||
                !qcow2_entry_extent(s, e, &off, &bytes))
                continue;
            one = false;
            if (!clear_all)
                ret = refcount_is_one(bs, off, &one);
            want = with_copied(e, one);
            if (ret == 0 && want != e) {
                qcow2_table_set(t, j, want);
                changed = true;
            }
        }
        if (changed)
            qcow2_cache_mark_dirty(s->l2_cache, t);
        if (t)
            qcow2_table_put(t);
        one = false;
        if (ret == 0 && !clear_all)
            ret = refcount_is_one(bs, l2, &one);
        if (ret == 0 && with_copied(s->l1_table[i], one) != s->l1_table[i]) {
            __atomic_store_n(&s->l1_table[i], with_copied(s->l1_table[i], one),
                             __ATOMIC_RELAXED);
            l1_changed = true;
        }
    }
    if (ret == 0)
        ret = qcow2_flush_metadata(bs);
    if (ret == 0 && l1_changed) {
        g_autofree uint64_t *disk = g_new(uint64_t, MAX(s->l1_size, 1));
        for (uint32_t i = 0; i < s->l1_size; i++)
            disk[i] = GUINT64_TO_BE(s->l1_table[i]);
        bdrv_debug_event(s->file, BLKDBG_L1_UPDATE);
        ret = bdrv_pwrite(s->file, s->l1_offset, s->l1_size * 8ULL, disk, 0);
    }
    if (ret == 0)
        ret = qcow2_barrier(bs);
    return ret;
}

int qcow2_fix_copied_flags(BlockNode *bs)
{
    return set_copied_flags(bs, false, true);
}

/* Sets or clears the dirty bit of a version 3 image: while it is set, a
 * crash leaves an image whose next writable open recounts its refcounts
 * and sets its COPIED flags again (qcow2-repair.c; QEMU repairs it too). */
static int set_dirty(BlockNode *bs, bool dirty)
{
    Qcow2State *s = bs->opaque;
    uint64_t be, bits;
    int ret;

    if (s->version < 3)
        return 0;
    ret = bdrv_pread(s->file, QCOW2_HDR_INCOMPATIBLE, 8, &be);
    if (ret < 0)
        return ret;
    bits = GUINT64_FROM_BE(be);
    bits = dirty ? bits | QCOW2_INCOMPAT_DIRTY : bits & ~QCOW2_INCOMPAT_DIRTY;
    be = GUINT64_TO_BE(bits);
    ret = bdrv_pwrite(s->file, QCOW2_HDR_INCOMPATIBLE, 8, &be, 0);
    return ret < 0 ? ret : qcow2_barrier(bs);
}

/* New clusters holding @bytes of @data (zero padded); their offset, or a
 * negative errno.  The refcounts are on disk before the data. */
static int64_t write_new_clusters(BlockNode *bs, const void *data,
                                  uint64_t bytes)
{
    Qcow2State *s = bs->opaque;
    uint64_t clusters = (bytes + s->cluster_size - 1) >> s->cluster_bits;
    g_autofree uint8_t *buf = NULL;
    bool fresh;
    int64_t off;
    int ret;

    if (clusters > qcow2_max_alloc_clusters(s))
        return -EFBIG;
    buf = g_try_malloc0(clusters << s->cluster_bits);
    if (!buf)
        return -ENOMEM;
    memcpy(buf, data, bytes);
    off = qcow2_alloc_clusters(bs, clusters, &fresh);
    if (off < 0)
        return off;
    ret = qcow2_flush_metadata(bs);
    if (ret == 0)
        ret = bdrv_pwrite(s->file, off, clusters << s->cluster_bits, buf, 0);
    if (ret == 0)
        ret = qcow2_barrier(bs);
    if (ret < 0) {
        qcow2_update_refcount(bs, off, clusters << s->cluster_bits, -1);
        return ret;
    }
    return off;
}

/* Writes @table to new clusters, switches the header to it, frees the old
 * one, and tells the overlap checks where the snapshots' L1 tables are. */
static int write_table(BlockNode *bs, GArray *table)
{
    Qcow2State *s = bs->opaque;
    g_autoptr(GByteArray) buf = g_byte_array_new();
    static const uint8_t pad[8];
    struct __attribute__((packed)) {
        uint32_t count;
        uint64_t offset;
    } loc;
    uint64_t old_offset, old_bytes;
    int64_t off = 0;
    int ret = 0;

    for (guint i = 0; i < table->len; i++) {
        Snapshot *sn = &g_array_index(table, Snapshot, i);
        gsize len;
        const guint8 *raw = g_bytes_get_data(sn->raw, &len);
        g_byte_array_append(buf, raw, len);
        g_byte_array_append(buf, pad, ROUND_UP(buf->len, 8) - buf->len);
    }
    if (buf->len)
        off = write_new_clusters(bs, buf->data, buf->len);
    if (off < 0)
        return off;
    loc.count = GUINT32_TO_BE(table->len);
    loc.offset = GUINT64_TO_BE((uint64_t)off);
    ret = bdrv_pwrite(s->file, HDR_NB_SNAPSHOTS, sizeof(loc), &loc, 0);
    if (ret == 0)
        ret = qcow2_barrier(bs);
    if (ret < 0) {
        if (off)
            qcow2_update_refcount(bs, off, ROUND_UP(buf->len, s->cluster_size),
                                  -1);
        return ret;
    }
    /* The overlap checks must forget the old table before it is freed. */
    old_offset = s->snapshots_offset;
    old_bytes = s->snapshots_bytes;
    s->snapshots_offset = off;
    s->snapshots_bytes = buf->len;
    if (old_offset && old_bytes)
        ret = qcow2_update_refcount(bs, old_offset,
                                    ROUND_UP(old_bytes, s->cluster_size), -1);
    g_array_set_size(s->snapshot_l1s, 0);
    for (guint i = 0; i < table->len; i++) {
        Snapshot *sn = &g_array_index(table, Snapshot, i);
        Qcow2SnapshotL1 l1 = { sn->l1_offset, sn->l1_size };
        g_array_append_val(s->snapshot_l1s, l1);
    }
    return ret;
}

static void fill_info(const Snapshot *sn, BdrvSnapshotInfo *info)
{
    if (!info)
        return;
    *info = (BdrvSnapshotInfo){
        .id = g_strdup(sn->id),
        .name = g_strdup(sn->name),
        .vm_state_size = sn->vm_state_size,
        .date_sec = sn->date_sec,
        .date_nsec = sn->date_nsec,
        .vm_clock_nsec = sn->vm_clock_nsec,
        .icount = sn->icount,
    };
}

/* The table as it is on disk now (the file may have grown since open). */
static GArray *current_table(BlockNode *bs, GError **errp)
{
    Qcow2State *s = bs->opaque;

    s->file_length = MAX(s->file_length, bdrv_getlength(s->file));
    return read_table(bs, NULL, NULL, errp);
}

/* QEMU's find_new_snapshot_id: one more than the largest numeric id. */
static char *new_id(GArray *table)
{
    uint64_t max = 0;

    for (guint i = 0; i < table->len; i++) {
        const char *id = g_array_index(table, Snapshot, i).id;
        uint64_t n = g_ascii_strtoull(id, NULL, 10);
        max = MAX(max, n);
    }
    return g_strdup_printf("%" PRIu64, max + 1);
}

/* A table entry for the active L1 table's copy at @l1_offset. */
static GBytes *new_entry(Qcow2State *s, uint64_t l1_offset, const char *id,
                         const char *name, Snapshot *sn)
{
    gint64 now = g_get_real_time();
    SnapshotHeader h = {
        .l1_table_offset = GUINT64_TO_BE(l1_offset),
        .l1_size = GUINT32_TO_BE(s->l1_size),
        .id_size = GUINT16_TO_BE(strlen(id)),
        .name_size = GUINT16_TO_BE(strlen(name)),
        .date_sec = GUINT32_TO_BE((uint32_t)(now / G_USEC_PER_SEC)),
        .date_nsec = GUINT32_TO_BE((uint32_t)(now % G_USEC_PER_SEC) * 1000),
        /* A storage daemon's virtual clock is the real one. */
        .vm_clock_nsec = GUINT64_TO_BE((uint64_t)now * 1000),
        .extra_data_size = GUINT32_TO_BE(EXTRA_DATA_BYTES),
    };
    uint64_t extra[3] = { 0, GUINT64_TO_BE(s->size), UINT64_MAX };
    GByteArray *raw = g_byte_array_new();

    g_byte_array_append(raw, (const guint8 *)&h, sizeof(h));
    g_byte_array_append(raw, (const guint8 *)extra, sizeof(extra));
    g_byte_array_append(raw, (const guint8 *)id, strlen(id));
    g_byte_array_append(raw, (const guint8 *)name, strlen(name));
    *sn = (Snapshot){
        .l1_offset = l1_offset,
        .l1_size = s->l1_size,
        .id = g_strdup(id),
        .name = g_strdup(name),
        .date_sec = (uint32_t)(now / G_USEC_PER_SEC),
        .date_nsec = (uint32_t)(now % G_USEC_PER_SEC) * 1000,
        .vm_clock_nsec = (uint64_t)now * 1000,
        .icount = UINT64_MAX,
    };
    return g_byte_array_free_to_bytes(raw);
}

static int take_snapshot(BlockNode *bs, GArray *table, const char *name,
                         BdrvSnapshotInfo *info)
{
    Qcow2State *s = bs->opaque;
    g_autofree char *id = new_id(table);
    g_autofree uint64_t *disk = g_new0(uint64_t, MAX(s->l1_size, 1));
    Snapshot sn;
    int64_t l1_offset = 0;
    int ret;

    if (strlen(name) > UINT16_MAX || table->len >= MAX_SNAPSHOTS)
        return -EFBIG;
    /* Under the dirty bit: refcounts and COPIED flags disagree until the
     * table is written (see set_dirty). */
    ret = qcow2_flush_metadata(bs);
    if (ret == 0)
        ret = set_dirty(bs, true);
    if (ret == 0)
        ret = set_copied_flags(bs, true, false);
    if (ret == 0)
        ret = adjust_refcounts(bs, s->l1_table, s->l1_size, 1);
    if (ret == 0)
        ret = qcow2_flush_metadata(bs);
    if (ret < 0)
        return ret;
    for (uint32_t i = 0; i < s->l1_size; i++)
        disk[i] = GUINT64_TO_BE(s->l1_table[i]);
    if (s->l1_size)
        l1_offset = write_new_clusters(bs, disk, s->l1_size * 8ULL);
    if (l1_offset < 0)
        return l1_offset;
    sn.raw = NULL;
    {
        GBytes *raw = new_entry(s, l1_offset, id, name, &sn);
        sn.raw = raw;
    }
    g_array_append_val(table, sn);
    ret = write_table(bs, table);
    if (ret == 0)
        ret = set_dirty(bs, false);
    if (ret == 0)
        fill_info(&sn, info);
    return ret;
}

/* The errno's text: the monitor puts it after its own sentence, as QEMU's
 * error_setg_errno does. */
static int qcow2_snapshot_error(GError **errp, int ret)
{
    g_set_error_literal(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                        g_strerror(-ret));
    return ret;
}

int qcow2_snapshot_create(BlockNode *bs, const char *name,
                          BdrvSnapshotInfo *info, GError **errp)
{
    Qcow2State *s = bs->opaque;
    g_autoptr(GArray) table = NULL;
    int ret;

    if (!s->writable || qcow2_is_corrupt(s)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_READ_ONLY,
                    "Image is read-only");
        return -EACCES;
    }
    g_mutex_lock(&s->lock);
    table = current_table(bs, errp);
    ret = table ? take_snapshot(bs, table, name, info) : -EIO;
    g_mutex_unlock(&s->lock);
    if (ret < 0 && table)
        qcow2_snapshot_error(errp, ret);
    return ret;
}

/* The snapshot's L1 table, checked as loading it is. */
static int read_snapshot_l1(BlockNode *bs, const Snapshot *sn, uint64_t **l1)
{
    Qcow2State *s = bs->opaque;
    uint64_t bytes = (uint64_t)sn->l1_size * 8;
    int ret;

    if (sn->l1_size > QCOW2_MAX_L1_BYTES / 8 ||
        (bytes && !qcow2_table_in_file(bs, sn->l1_offset, bytes)))
        return qcow2_signal_corruption(
            bs, "snapshot '%s': L1 table offset %#" PRIx64 " unaligned or "
            "outside the file", sn->name, sn->l1_offset);
    *l1 = g_new0(uint64_t, MAX(sn->l1_size, 1));
    ret = bytes ? bdrv_pread(s->file, sn->l1_offset, bytes, *l1) : 0;
    for (uint32_t i = 0; i < sn->l1_size; i++)
        (*l1)[i] = GUINT64_FROM_BE((*l1)[i]);
    return ret;
}

static int drop_snapshot(BlockNode *bs, GArray *table, guint index,
                         BdrvSnapshotInfo *info)
{
    Qcow2State *s = bs->opaque;
    Snapshot *sn = &g_array_index(table, Snapshot, index);
    g_autofree uint64_t *l1 = NULL;
    uint64_t l1_offset = sn->l1_offset, l1_size = sn->l1_size;
    int ret = read_snapshot_l1(bs, sn, &l1);

    if (ret == 0)
        ret = qcow2_flush_metadata(bs);
    if (ret == 0)
        ret = set_dirty(bs, true);
    if (ret < 0)
        return ret;
    fill_info(sn, info);
    g_array_remove_index(table, index);
    ret = write_table(bs, table);
    if (ret == 0)
        ret = adjust_refcounts(bs, l1, l1_size, -1);
    if (ret == 0 && l1_size)
        ret = qcow2_update_refcount(bs, l1_offset,
                                    ROUND_UP(l1_size * 8, s->cluster_size),
                                    -1);
    if (ret == 0)
        ret = set_copied_flags(bs, false, false);
    if (ret == 0)
        ret = set_dirty(bs, false);
    return ret;
}

int qcow2_snapshot_delete(BlockNode *bs, const char *id, const char *name,
                          BdrvSnapshotInfo *info, GError **errp)
{
    Qcow2State *s = bs->opaque;
    g_autoptr(GArray) table = NULL;
    int ret = -ENOENT, i = -1;

    if (!s->writable || qcow2_is_corrupt(s)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_READ_ONLY,
                    "Image is read-only");
        return -EACCES;
    }
    g_mutex_lock(&s->lock);
    table = current_table(bs, errp);
    if (table)
        i = find(table, id, name);
    if (i >= 0)
        ret = drop_snapshot(bs, table, i, info);
    g_mutex_unlock(&s->lock);
    if (table && i < 0)
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_FOUND,
                    "Can't find the snapshot");
    else if (ret < 0 && table)
        qcow2_snapshot_error(errp, ret);
    return table ? ret : -EIO;
}

GArray *qcow2_snapshot_list(BlockNode *bs, GError **errp)
{
    g_autoptr(GArray) table = current_table(bs, errp);
    GArray *list;

    if (!table)
        return NULL;
    list = g_array_new(FALSE, TRUE, sizeof(BdrvSnapshotInfo));
    for (guint i = 0; i < table->len; i++) {
        BdrvSnapshotInfo info;
        fill_info(&g_array_index(table, Snapshot, i), &info);
        g_array_append_val(list, info);
    }
    return list;
}
