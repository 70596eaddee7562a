/*
 * cli.c - qemu-nbd's options, with its defaults (qemu-nbd 7.2); image.c
 * turns them into block options (block/image-opts.c).  Options of qemu-nbd that snapnbd does not implement yet
 * are accepted by the parser only to be refused with a message naming them,
 * never ignored.
 */
#include "cli.h"
#include "block/image-opts.h"

#include "block/block.h"
#include "block/qemu-opts.h"
#include "server/nbd/listen.h"
#include "server/qmp/qmp-cli.h"
#include "trace.h"

#include <errno.h>
#include <unistd.h>
#include <stdio.h>
#include <string.h>

static gboolean unsupported(const char *name, const char *value,
                            gpointer data, GError **errp)
{
    g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_FAILED,
                "option '%s' is not supported yet", name);
    return FALSE;
}

static gboolean trace_arg(const char *name, const char *value,
                          gpointer data, GError **errp)
{
    return trace_option(value, errp);
}

#define UNSUPPORTED(l, s, arg)                                               \
    { l, s, G_OPTION_FLAG_HIDDEN | ((arg) ? 0 : G_OPTION_FLAG_NO_ARG),       \
      G_OPTION_ARG_CALLBACK, (gpointer)unsupported, NULL, NULL }

/* -c DEV, -d DEV: the kernel's NBD client is not driven yet.  A device
 * that does not exist gets qemu-nbd's own message. */
static bool refuse_kernel_device(const CliOptions *o, const char *arg)
{
    const char *dev = o->disconnect ? arg : o->connect_device;

    if (!dev) {
        fprintf(stderr, "snapnbd: -d needs the device (snapnbd -d "
                        "/dev/nbdN)\n");
    } else if (access(dev, F_OK) != 0) {
        fprintf(stderr, "snapnbd: %s %s: %s\n",
                o->disconnect ? "Cannot open" : "Failed to open", dev,
                g_strerror(errno));
    } else {
        fprintf(stderr, "snapnbd: %s %s: kernel NBD devices are not "
                        "supported yet\n",
                o->disconnect ? "-d" : "-c", dev);
    }
    return false;
}

/* Socket activation (nbdinfo -- [ snapnbd IMAGE ], a systemd unit): the
 * passed socket replaces -k/-b/-p, with qemu-nbd's checks and words. */
static bool check_socket_activation(CliOptions *o)
{
    g_autoptr(GError) err = NULL;
    const char *conflict = NULL;

    o->activated_fds = nbd_socket_activation(&err);
    if (o->activated_fds < 0) {
        fprintf(stderr, "snapnbd: %s\n", err->message);
        return false;
    }
    if (o->activated_fds == 0)
        return true;
    if (o->connect_device)
        conflict = "NBD device can't be set when using socket activation";
    else if (o->socket_path)
        conflict = "Unix socket can't be set when using socket activation";
    else if (o->bind)
        conflict = "The interface can't be set when using socket activation";
    else if (o->port)
        conflict = "TCP port number can't be set when using socket "
                   "activation";
    else if (o->selinux_label)
        conflict = "SELinux label can't be set when using socket activation";
    else if (o->list)
        conflict = "List mode is incompatible with socket activation";
    else if (o->activated_fds > 1)
        conflict = "snapnbd does not support socket activation with "
                   "LISTEN_FDS > 1";
    if (conflict)
        fprintf(stderr, "snapnbd: %s\n", conflict);
    return !conflict;
}

/* -L: qemu-nbd's checks, with its words. */
static bool check_list_mode(int argc, CliOptions *o, bool shared)
{
    if (argc != 1) {
        fprintf(stderr, "snapnbd: List mode is incompatible with a file "
                        "name\n");
        return false;
    }
    if (o->export_name || o->description || o->offset || o->format ||
        o->load_snapshot || o->bitmaps || o->allocation_depth || o->aio ||
        o->discard || o->cache || o->nocache) {
        fprintf(stderr, "snapnbd: List mode is incompatible with per-device "
                        "settings\n");
        return false;
    }
    if (o->fork) {
        fprintf(stderr, "snapnbd: List mode is incompatible with forking\n");
        return false;
    }
    if (!check_socket_activation(o))
        return false;
    if (o->tls_authz) {
        fprintf(stderr, "snapnbd: TLS authorization is incompatible with "
                        "export list\n");
        return false;
    }
    return true;
}

/* Does an --object ask for help (it prints, and needs no image)? */
static bool object_help(const CliOptions *o)
{
    for (char **s = o->objects; s && *s; s++) {
        if (qmp_cli_object_wants_help(*s))
            return true;
    }
    return false;
}

bool cli_parse(int argc, char **argv, CliOptions *o)
{
    g_autofree char *shared = NULL;
    const GOptionEntry entries[] = {
        { "port", 'p', 0, G_OPTION_ARG_FILENAME, &o->port,
          "port to listen on (default 10809)", "PORT" },
        { "bind", 'b', 0, G_OPTION_ARG_FILENAME, &o->bind,
          "interface to bind to (default 0.0.0.0)", "ADDR" },
        { "socket", 'k', 0, G_OPTION_ARG_FILENAME, &o->socket_path,
          "listen on the unix socket PATH", "PATH" },
        { "export-name", 'x', 0, G_OPTION_ARG_FILENAME, &o->export_name,
          "export name (default \"\")", "NAME" },
        { "description", 'D', 0, G_OPTION_ARG_FILENAME, &o->description,
          "export description", "TEXT" },
        { "read-only", 'r', 0, G_OPTION_ARG_NONE, &o->read_only,
          "export read-only", NULL },
        { "persistent", 't', 0, G_OPTION_ARG_NONE, &o->persistent,
          "do not exit on the last connection", NULL },
        { "shared", 'e', 0, G_OPTION_ARG_FILENAME, &shared,
          "serve NUM clients at once, 0 for unlimited (default 1)", "NUM" },
        { "format", 'f', 0, G_OPTION_ARG_FILENAME, &o->format,
          "image format: raw or qcow2 (probed when absent)", "FORMAT" },
        { "offset", 'o', 0, G_OPTION_ARG_INT64, &o->offset,
          "offset into the image", "OFFSET" },
        { "nocache", 'n', 0, G_OPTION_ARG_NONE, &o->nocache,
          "disable the host cache (same as --cache=none)", NULL },
        { "cache", 0, 0, G_OPTION_ARG_FILENAME, &o->cache,
          "none, writeback, writethrough, directsync or unsafe", "MODE" },
        { "aio", 0, 0, G_OPTION_ARG_FILENAME, &o->aio,
          "threads, io_uring or native", "MODE" },
        { "discard", 0, 0, G_OPTION_ARG_FILENAME, &o->discard,
          "ignore or unmap", "MODE" },
        { "detect-zeroes", 0, 0, G_OPTION_ARG_FILENAME, &o->detect_zeroes,
          "off, on or unmap", "MODE" },
        { "fork", 0, 0, G_OPTION_ARG_NONE, &o->fork,
          "fork off the server once it listens", NULL },
        { "pid-file", 0, 0, G_OPTION_ARG_FILENAME, &o->pid_file,
          "write the server's pid to PATH", "PATH" },
        { "pidfile", 0, 0, G_OPTION_ARG_FILENAME, &o->pid_file,
          "the same (qemu-storage-daemon's spelling)", "PATH" },
        { "daemonize", 0, 0, G_OPTION_ARG_NONE, &o->daemonize,
          "--fork, then work in / (qemu-storage-daemon's)", NULL },
        { "verbose", 'v', 0, G_OPTION_ARG_NONE, &o->verbose,
          "accepted, as qemu-nbd; nothing is printed while serving "
          "(see --trace)", NULL },
        { "trace", 'T', 0, G_OPTION_ARG_CALLBACK, (gpointer)trace_arg,
          "print the events that match PATTERN (--trace help lists them)",
          "[[enable=]PATTERN][,events=FILE][,file=FILE]" },
        { "version", 'V', 0, G_OPTION_ARG_NONE, &o->version,
          "print the version and exit", NULL },
        { "object", 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &o->objects,
          "tls-creds-x509, tls-creds-psk or authz-simple object", "PROPS" },
        { "tls-creds", 0, 0, G_OPTION_ARG_FILENAME, &o->tls_creds,
          "require TLS with the credentials object ID", "ID" },
        { "tls-authz", 0, 0, G_OPTION_ARG_FILENAME, &o->tls_authz,
          "let in only TLS clients that the authz object ID allows", "ID" },
        { "allocation-depth", 'A', 0, G_OPTION_ARG_NONE,
          &o->allocation_depth,
          "offer the qemu:allocation-depth meta context", NULL },
        { "load-snapshot", 'l', 0, G_OPTION_ARG_FILENAME, &o->load_snapshot,
          "export an internal snapshot read-only: its id or name, or "
          "snapshot.id=ID,snapshot.name=NAME", "SNAPSHOT" },
        { "snapshot", 's', 0, G_OPTION_ARG_NONE, &o->snapshot,
          "write to a temporary overlay, never to the image", NULL },
        { "image-opts", 0, 0, G_OPTION_ARG_NONE, &o->image_opts,
          "FILENAME is a set of image options "
          "(driver=qcow2,file.filename=...)", NULL },
        { "bitmap", 'B', 0, G_OPTION_ARG_FILENAME_ARRAY, &o->bitmaps,
          "offer the dirty bitmap NAME as the qemu:dirty-bitmap:NAME meta "
          "context (repeatable)", "NAME" },
        { "list", 'L', 0, G_OPTION_ARG_NONE, &o->list,
          "list the exports of the server at -k or -b/-p, and exit", NULL },
        { "connect", 'c', G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_FILENAME,
          &o->connect_device, "kernel NBD device (not supported)", "DEV" },
        { "disconnect", 'd', G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_NONE,
          &o->disconnect, "kernel NBD device (not supported)", NULL },
        { "selinux-label", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_FILENAME,
          &o->selinux_label, "refused: built without SELinux", "LABEL" },
        UNSUPPORTED("partition", 'P', true),
        UNSUPPORTED("tls-hostname", 0, true),
        UNSUPPORTED("handshake-limit", 0, true),
        { NULL },
    };
    g_autoptr(GOptionContext) ctx =
        g_option_context_new("FILENAME - export a disk image over NBD");
    g_autoptr(GError) err = NULL;

    o->shared = 1;
    g_option_context_add_main_entries(ctx, entries, NULL);
    g_option_context_add_group(ctx, qmp_cli_option_group());
    g_option_context_set_summary(ctx,
        "Serves FILENAME over NBD with the options of qemu-nbd.");
    if (!g_option_context_parse(ctx, &argc, &argv, &err)) {
        fprintf(stderr, "snapnbd: %s\n", err->message);
        return false;
    }
    if (o->version)
        return true;
    if (shared) {
        char *end;
        long n = strtol(shared, &end, 10);
        if (*end || end == shared || n < 0 || n > 65535) {
            fprintf(stderr, "snapnbd: invalid shared device number '%s'\n",
                    shared);
            return false;
        }
        o->shared = n;
    }
    if (o->list)
        return check_list_mode(argc, o, shared != NULL);
    /* daemon mode (no image) leaves activation to whoever runs it */
    if ((argc == 2 || o->connect_device) && !check_socket_activation(o))
        return false;
    if (o->connect_device || o->disconnect)
        return refuse_kernel_device(o, argc == 2 ? argv[1] : NULL);
    if (o->selinux_label) { /* qemu-nbd built without SELinux says so */
        fprintf(stderr, "snapnbd: SELinux support not enabled in this "
                        "binary\n");
        return false;
    }
    /* with the control socket, the image is optional (daemon mode); an
     * --object asking for help only prints */
    if (argc != 2 && !(argc == 1 && (qmp_cli_given() || object_help(o)))) {
        fprintf(stderr, "snapnbd: expecting one image file name "
                        "(try 'snapnbd --help')\n");
        return false;
    }
    if (o->offset < 0) {
        fprintf(stderr, "snapnbd: offset must not be negative\n");
        return false;
    }
    if (o->socket_path && (o->port || o->bind)) {
        fprintf(stderr, "snapnbd: --socket cannot be used with --port or "
                        "--bind\n");
        return false;
    }
    if (o->image_opts && o->format) {
        fprintf(stderr, "snapnbd: --image-opts and -f are mutually "
                        "exclusive\n");
        return false;
    }
    if (o->nocache) {
        g_free(o->cache);
        o->cache = g_strdup("none");
    }
    if (o->load_snapshot) /* as in qemu-nbd, -l implies -r */
        o->read_only = TRUE;
    o->filename = g_strdup(argv[1]);
    return true;
}

bool cli_writethrough(const CliOptions *o)
{
    return image_opts_writethrough(o->cache);
}

void cli_free(CliOptions *o)
{
    g_free(o->filename);
    g_free(o->port);
    g_free(o->bind);
    g_free(o->socket_path);
    g_free(o->export_name);
    g_free(o->description);
    g_free(o->format);
    g_free(o->cache);
    g_free(o->aio);
    g_free(o->discard);
    g_free(o->detect_zeroes);
    g_free(o->pid_file);
    g_strfreev(o->objects);
    g_free(o->tls_creds);
    g_free(o->tls_authz);
    g_free(o->load_snapshot);
    g_strfreev(o->bitmaps);
    g_free(o->selinux_label);
    g_free(o->connect_device);
}
