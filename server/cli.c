/*
 * cli.c - qemu-nbd's options, with its defaults (qemu-nbd 7.2), turned into
 * block options.  Options of qemu-nbd that snapnbd does not implement yet
 * are accepted by the parser only to be refused with a message naming them,
 * never ignored.
 */
#include "cli.h"

#include "block/block.h"

#include <stdio.h>
#include <string.h>

static gboolean unsupported(const char *name, const char *value,
                            gpointer data, GError **errp)
{
    g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_FAILED,
                "option '%s' is not supported yet", name);
    return FALSE;
}

#define UNSUPPORTED(l, s, arg)                                               \
    { l, s, G_OPTION_FLAG_HIDDEN | ((arg) ? 0 : G_OPTION_FLAG_NO_ARG),       \
      G_OPTION_ARG_CALLBACK, (gpointer)unsupported, NULL, NULL }

bool cli_parse(int argc, char **argv, CliOptions *o)
{
    g_autofree char *shared = NULL;
    const GOptionEntry entries[] = {
        { "port", 'p', 0, G_OPTION_ARG_STRING, &o->port,
          "port to listen on (default 10809)", "PORT" },
        { "bind", 'b', 0, G_OPTION_ARG_STRING, &o->bind,
          "interface to bind to (default 0.0.0.0)", "ADDR" },
        { "socket", 'k', 0, G_OPTION_ARG_FILENAME, &o->socket_path,
          "listen on the unix socket PATH", "PATH" },
        { "export-name", 'x', 0, G_OPTION_ARG_STRING, &o->export_name,
          "export name (default \"\")", "NAME" },
        { "description", 'D', 0, G_OPTION_ARG_STRING, &o->description,
          "export description", "TEXT" },
        { "read-only", 'r', 0, G_OPTION_ARG_NONE, &o->read_only,
          "export read-only", NULL },
        { "persistent", 't', 0, G_OPTION_ARG_NONE, &o->persistent,
          "do not exit on the last connection", NULL },
        { "shared", 'e', 0, G_OPTION_ARG_STRING, &shared,
          "serve NUM clients at once, 0 for unlimited (default 1)", "NUM" },
        { "format", 'f', 0, G_OPTION_ARG_STRING, &o->format,
          "image format: raw or qcow2 (probed when absent)", "FORMAT" },
        { "offset", 'o', 0, G_OPTION_ARG_INT64, &o->offset,
          "offset into the image", "OFFSET" },
        { "nocache", 'n', 0, G_OPTION_ARG_NONE, &o->nocache,
          "disable the host cache (same as --cache=none)", NULL },
        { "cache", 0, 0, G_OPTION_ARG_STRING, &o->cache,
          "none, writeback, writethrough, directsync or unsafe", "MODE" },
        { "aio", 0, 0, G_OPTION_ARG_STRING, &o->aio,
          "threads, io_uring or native", "MODE" },
        { "discard", 0, 0, G_OPTION_ARG_STRING, &o->discard,
          "ignore or unmap", "MODE" },
        { "detect-zeroes", 0, 0, G_OPTION_ARG_STRING, &o->detect_zeroes,
          "off, on or unmap", "MODE" },
        { "fork", 0, 0, G_OPTION_ARG_NONE, &o->fork,
          "fork off the server once it listens", NULL },
        { "pid-file", 0, 0, G_OPTION_ARG_FILENAME, &o->pid_file,
          "write the server's pid to PATH", "PATH" },
        { "verbose", 'v', 0, G_OPTION_ARG_NONE, &o->verbose,
          "print what the server does on stderr", NULL },
        { "version", 'V', 0, G_OPTION_ARG_NONE, &o->version,
          "print the version and exit", NULL },
        { "object", 0, 0, G_OPTION_ARG_STRING_ARRAY, &o->objects,
          "tls-creds-x509, tls-creds-psk or authz-simple object", "PROPS" },
        { "tls-creds", 0, 0, G_OPTION_ARG_STRING, &o->tls_creds,
          "require TLS with the credentials object ID", "ID" },
        { "tls-authz", 0, 0, G_OPTION_ARG_STRING, &o->tls_authz,
          "let in only TLS clients that the authz object ID allows", "ID" },
        UNSUPPORTED("snapshot", 's', false),
        UNSUPPORTED("load-snapshot", 'l', true),
        UNSUPPORTED("allocation-depth", 'A', false),
        UNSUPPORTED("bitmap", 'B', true),
        UNSUPPORTED("connect", 'c', true),
        UNSUPPORTED("disconnect", 'd', false),
        UNSUPPORTED("partition", 'P', true),
        UNSUPPORTED("trace", 'T', true),
        UNSUPPORTED("list", 'L', false),
        UNSUPPORTED("image-opts", 0, false),
        UNSUPPORTED("tls-hostname", 0, true),
        UNSUPPORTED("handshake-limit", 0, true),
        { NULL },
    };
    g_autoptr(GOptionContext) ctx =
        g_option_context_new("FILENAME - export a disk image over NBD");
    g_autoptr(GError) err = NULL;

    o->shared = 1;
    g_option_context_add_main_entries(ctx, entries, NULL);
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
    if (argc != 2) {
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
    if (o->nocache) {
        g_free(o->cache);
        o->cache = g_strdup("none");
    }
    o->filename = g_strdup(argv[1]);
    return true;
}

static void put(GHashTable *t, const char *k, const char *v)
{
    g_hash_table_insert(t, g_strdup(k), g_strdup(v));
}

/* --cache modes as QEMU maps them: direct = bypass the host page cache,
 * no-flush = ignore flushes; writethrough is handled by the export. */
static bool apply_cache_mode(GHashTable *t, const char *mode, GError **errp)
{
    bool direct, no_flush = false;

    if (!mode || !strcmp(mode, "writeback") || !strcmp(mode, "writethrough")) {
        direct = false;
    } else if (!strcmp(mode, "none") || !strcmp(mode, "off") ||
               !strcmp(mode, "directsync")) {
        direct = true;
    } else if (!strcmp(mode, "unsafe")) {
        direct = false;
        no_flush = true;
    } else {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "invalid cache mode '%s'", mode);
        return false;
    }
    put(t, "cache.direct", direct ? "on" : "off");
    put(t, "cache.no-flush", no_flush ? "on" : "off");
    return true;
}

bool cli_writethrough(const CliOptions *o)
{
    return o->cache && (!strcmp(o->cache, "writethrough") ||
                        !strcmp(o->cache, "directsync"));
}

/* qemu-nbd probes the format when -f is absent, with a warning for raw. */
static const char *probe_format(const char *filename)
{
    const char *format = bdrv_probe_format(filename);

    if (strcmp(format, "raw") == 0)
        fprintf(stderr,
                "WARNING: Image format was not specified for '%s' and probing "
                "guessed raw.\n         Specify the 'raw' format explicitly "
                "(-f raw) to silence this warning.\n", filename);
    return format;
}

/* The image node: raw over the file, or qcow2 over the file; with -o a
 * qcow2 image gets a raw node with the offset on top, as in qemu-nbd. */
static void put_image(GHashTable *t, const CliOptions *o, const char *format)
{
    bool qcow2 = strcmp(format, "qcow2") == 0;
    const char *file = qcow2 && o->offset ? "file.file" : "file";
    g_autofree char *drv = g_strdup_printf("%s.driver", file);
    g_autofree char *name = g_strdup_printf("%s.filename", file);
    g_autofree char *aio = g_strdup_printf("%s.aio", file);

    put(t, "driver", qcow2 && !o->offset ? "qcow2" : "raw");
    if (qcow2 && o->offset)
        put(t, "file.driver", "qcow2");
    put(t, drv, "file");
    put(t, name, o->filename);
    if (o->aio)
        put(t, aio, o->aio);
}

GHashTable *cli_block_options(const CliOptions *o, GError **errp)
{
    g_autoptr(GHashTable) t =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    const char *format = o->format;

    if (!format)
        format = probe_format(o->filename);
    if (strcmp(format, "raw") != 0 && strcmp(format, "qcow2") != 0) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "format '%s' is not supported (use raw or qcow2)",
                    format);
        return NULL;
    }
    put_image(t, o, format);
    if (!apply_cache_mode(t, o->cache, errp))
        return NULL;
    put(t, "read-only", o->read_only ? "on" : "off");
    if (o->discard)
        put(t, "discard", o->discard);
    if (o->detect_zeroes)
        put(t, "detect-zeroes", o->detect_zeroes);
    if (o->offset) {
        g_autofree char *off = g_strdup_printf("%" G_GINT64_FORMAT, o->offset);
        put(t, "offset", off);
    }
    return g_steal_pointer(&t);
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
}
