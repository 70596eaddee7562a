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

/* The file a new target is created as: the path of the protocol node of
 * the target's options @o (the node itself with format=file).  Only files
 * are created, as QEMU creates only through protocols that can. */
static const char *file_to_create(GHashTable *o, GError **errp)
{
    const char *prefix =
        g_hash_table_contains(o, "file.driver") ? "file." : "";
    g_autofree char *driver_key = g_strconcat(prefix, "driver", NULL);
    g_autofree char *filename_key = g_strconcat(prefix, "filename", NULL);
    const char *driver = g_hash_table_lookup(o, driver_key);

    if (g_strcmp0(driver, "file") != 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Protocol driver '%s' does not support image creation",
                    driver ? driver : "");
        return NULL;
    }
    return g_hash_table_lookup(o, filename_key);
}

/* A new image at @path of the source's size in @format; a qcow2 names
 * the base (if any) as its backing file. */
static bool create_target(const DriveTargetSpec *spec, BlockNode *source,
                          const char *path, const char *format,
                          GError **errp)
{
    g_autoptr(GHashTable) o = new_opts();
    const char *drv = strcmp(format, "raw") == 0 ? "file" : format;

    if (spec->base && strcmp(format, "qcow2") == 0) {
        put(o, "backing_file", bdrv_filename(spec->base));
        put(o, "backing_fmt", default_format(spec->base));
    }
    return bdrv_create(drv, path, bdrv_getlength(source), o, errp) >= 0;
}

/* The target's options, by the image-options builder (an existing image
 * without a format is probed here). */
static GHashTable *target_options(const DriveTargetSpec *spec,
                                  const char *format, GError **errp)
{
    g_autoptr(GHashTable) extra = new_opts();
    ImageSpec image = {
        .filename = spec->filename,
        .format = format,
        .options = extra,
    };

    if (spec->node_name)
        put(extra, "node-name", spec->node_name);
    return image_opts_build(&image, errp);
}

BlockNode *drive_target_open(BlockNode *source, const DriveTargetSpec *spec,
                             GError **errp)
{
    const char *format = spec->format  ? spec->format
                         : spec->existing ? NULL
                                          : default_format(source);
    g_autoptr(GHashTable) o = NULL;
    const char *path;

    if (format && !bdrv_has_driver(format)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    spec->job == DRIVE_TARGET_MIRROR
                        ? "Unknown file format '%s'"
                        : "Unknown driver '%s'",
                    format);
        return NULL;
    }
    /* the name is checked before anything is created */
    o = target_options(spec, format, errp);
    if (!o)
        return NULL;
    if (!spec->existing &&
        (!(path = file_to_create(o, errp)) ||
         !create_target(spec, source, path, format, errp)))
        return NULL;
    if (spec->base && g_strcmp0(g_hash_table_lookup(o, "driver"),
                                "qcow2") == 0)
        put(o, "backing", bdrv_node_name(spec->base));
    return bdrv_open(o, errp);
}
