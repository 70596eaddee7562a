/*
 * image.c - opening the image to export: the block options of the command
 * line (cli.c), and qemu-nbd's -s, where the image is opened read-only and
 * a temporary qcow2 overlay on top of it takes every write.
 *
 * Design notes on -s.
 *
 * Nothing may be left behind, even when snapnbd is killed: the overlay
 * file never has a name where the file system allows it (O_TMPFILE), and
 * is unlinked right after mkstemp elsewhere, so its blocks go when the
 * last descriptor closes.  The block layer reaches the unnamed file
 * through /proc/self/fd/N while our descriptor keeps it alive; once the
 * overlay node is open it holds a descriptor of its own and ours is
 * closed.
 *
 * As in QEMU: the directory is $TMPDIR, else /var/tmp; the overlay has the
 * image's size (rounded up to 512 bytes, as qcow2 needs); its header names
 * no backing file, the backing child being the image node itself, given by
 * reference, so that every option of the image (format, -l, --image-opts)
 * holds for it; and -o puts its raw node on top of the overlay.
 */
#include "image.h"

#include "block/image-opts.h"
#include "block/qemu-opts.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

/* An anonymous file to hold the overlay, or -1 with @errp set. */
static int anonymous_file(GError **errp)
{
    const char *dir = g_getenv("TMPDIR");
    int fd;

    if (!dir || !*dir)
        dir = "/var/tmp";
    fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR ||
                   errno == EINVAL)) {
        g_autofree char *path = g_build_filename(dir, "snapnbd.XXXXXX", NULL);

        fd = g_mkstemp_full(path, O_RDWR | O_CLOEXEC, 0600);
        if (fd >= 0)
            unlink(path);
    }
    if (fd < 0)
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "Could not create the temporary overlay in '%s': %s",
                    dir, g_strerror(errno));
    return fd;
}

static void put(GHashTable *t, const char *k, const char *v)
{
    g_hash_table_insert(t, g_strdup(k), g_strdup(v));
}

/* The image as the command line names it; --image-opts's options are
 * parsed into *@given, which the spec refers to. */
static ImageSpec image_spec(const CliOptions *o, GHashTable **given)
{
    *given = o->image_opts ? qemu_opts_parse(o->filename, "file") : NULL;
    return (ImageSpec){
        .filename = o->image_opts ? NULL : o->filename,
        .format = o->format,
        .options = *given,
        .load_snapshot = o->load_snapshot,
        .offset = o->offset,
        .cache = o->cache,
        .aio = o->aio,
        .discard = o->discard,
        .detect_zeroes = o->detect_zeroes,
        .read_only = o->read_only,
    };
}

/* Creates the overlay in @fd and opens it over @image, as the top node:
 * a qcow2 whose backing is @image by reference, with the command line's
 * top options. */
static BlockNode *open_overlay(const ImageSpec *spec, BlockNode *image,
                               int fd, GError **errp)
{
    g_autofree char *path = g_strdup_printf("/proc/self/fd/%d", fd);
    uint64_t size = ((uint64_t)bdrv_getlength(image) + 511) & ~UINT64_C(511);
    g_autoptr(GHashTable) backing =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    ImageSpec overlay = {
        .filename = path,
        .format = "qcow2",
        .options = backing,
        .aio = spec->aio,
        .cache = spec->cache,
    };
    GHashTable *node;
    g_autoptr(GHashTable) top = NULL;

    if (bdrv_create("qcow2", path, size, NULL, errp) < 0)
        return NULL;
    put(backing, "backing", bdrv_node_name(image));
    node = image_opts_node(&overlay, errp);
    top = node ? image_opts_top(spec, node, errp) : NULL;
    return top ? bdrv_open(top, errp) : NULL;
}

static BlockNode *open_with_overlay(const CliOptions *o, GError **errp)
{
    g_autoptr(GHashTable) given = NULL;
    ImageSpec spec = image_spec(o, &given);
    g_autoptr(GHashTable) opts = image_opts_node(&spec, errp);
    BlockNode *image, *top = NULL;
    int fd;

    if (!opts)
        return NULL;
    put(opts, "read-only", "on"); /* the image itself is never written */
    image = bdrv_open(opts, errp);
    if (!image)
        return NULL;
    fd = anonymous_file(errp);
    if (fd >= 0) {
        top = open_overlay(&spec, image, fd, errp);
        close(fd);
    }
    bdrv_unref(image); /* the overlay holds it now, or it goes */
    return top;
}

BlockNode *image_open(const CliOptions *o, GError **errp)
{
    g_autoptr(GHashTable) given = NULL;
    ImageSpec spec;
    g_autoptr(GHashTable) opts = NULL;

    if (o->snapshot)
        return open_with_overlay(o, errp);
    spec = image_spec(o, &given);
    opts = image_opts_build(&spec, errp);
    return opts ? bdrv_open(opts, errp) : NULL;
}
