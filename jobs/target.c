/*
 * target.c - the target image of drive-backup and drive-mirror
 * (target.h).
 *
 * A new target (mode absolute-paths) has the source's size and format (a
 * protocol node's being raw), unless a format is given; a qcow2 one names
 * its base's file as its backing file, so that it reads right once the
 * job is done.  An existing target is opened as it is: its format given
 * or probed, as qemu-nbd probes (block/image-opts.c).  Either way a qcow2
 * target's backing is the live base node, not a second open of its file
 * (as QEMU's bdrv_set_backing_hd), and the options come from the one
 * image-options builder, so that a target is the node the command line
 * would make of the same file.
 */
#include "jobs/target.h"

#include "block/image-opts.h"

#include <string.h>

BlockNode *drive_target_backup_base(BlockNode *source, BackupSync sync)
{
    if (sync == BACKUP_SYNC_NONE)
        return source;
    if (sync == BACKUP_SYNC_TOP)
        return bdrv_child(source, "backing");
    return NULL;
}

BlockNode *drive_target_mirror_base(BlockNode *source, MirrorSync sync)
{
    return drive_target_backup_base(source,
                                    sync == MIRROR_SYNC_NONE  ? BACKUP_SYNC_NONE
                                    : sync == MIRROR_SYNC_TOP ? BACKUP_SYNC_TOP
                                                              : BACKUP_SYNC_FULL);
}

/* The format of a new target: the source's, a protocol node's being raw. */
static const char *default_format(BlockNode *source)
{
    const char *drv = bdrv_driver_name(source);

    return strcmp(drv, "qcow2") == 0 ? "qcow2" : "raw";
}

static void put(GHashTable *t, const char *k, const char *v)
{
    g_hash_table_insert(t, g_strdup(k), g_strdup(v));
}

static GHashTable *new_opts(void)
{
    return g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
}

/* A new image of the source's size in @format; a qcow2 names the base (if
 * any) as its backing file. */
static bool create_target(const DriveTargetSpec *spec, BlockNode *source,
                          const char *format, GError **errp)
{
    g_autoptr(GHashTable) o = new_opts();
    const char *drv = strcmp(format, "raw") == 0 ? "file" : format;

    if (spec->base && strcmp(format, "qcow2") == 0) {
        put(o, "backing_file", bdrv_filename(spec->base));
        put(o, "backing_fmt", default_format(spec->base));
    }
    return bdrv_create(drv, spec->filename, bdrv_getlength(source), o,
                       errp) >= 0;
}

/* The target, opened with the base as its live backing (qcow2). */
static BlockNode *open_target(const DriveTargetSpec *spec, const char *format,
                              GError **errp)
{
    g_autoptr(GHashTable) extra = new_opts();
    ImageSpec image = {
        .filename = spec->filename,
        .format = format,
        .options = extra,
    };
    g_autoptr(GHashTable) o = NULL;

    if (spec->node_name)
        put(extra, "node-name", spec->node_name);
    o = image_opts_build(&image, errp);
    if (!o)
        return NULL;
    if (spec->base && g_strcmp0(g_hash_table_lookup(o, "driver"),
                                "qcow2") == 0)
        put(o, "backing", bdrv_node_name(spec->base));
    return bdrv_open(o, errp);
}

BlockNode *drive_target_open(BlockNode *source, const DriveTargetSpec *spec,
                             GError **errp)
{
    /* an existing image without a format is probed when it is opened */
    const char *format = spec->format  ? spec->format
                         : spec->existing ? NULL
                                          : default_format(source);

    if (format && !bdrv_has_driver(format)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    spec->job == DRIVE_TARGET_MIRROR
                        ? "Unknown file format '%s'"
                        : "Unknown driver '%s'",
                    format);
        return NULL;
    }
    if (!spec->existing && !create_target(spec, source, format, errp))
        return NULL;
    return open_target(spec, format, errp);
}
