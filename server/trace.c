/*
 * trace.c - -T/--trace: snapnbd's event lines by name (see trace.h).
 *
 * qemu-nbd prints nothing while it serves, even with -v, and QEMU's iotests
 * compare its stderr; so everything snapnbd says about clients and requests
 * is an event that is off until a --trace pattern names it.
 */
#include "trace.h"

#include "block/block.h"
#include "block/qemu-opts.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool trace_enabled[TRACE_EVENT_COUNT];

static const struct {
    const char *name;
    const char *what;
} events[TRACE_EVENT_COUNT] = {
    [TRACE_IMAGE_OPEN] = { "snapnbd_image_open",
        "the block graph opened for FILENAME (drivers, aio, cache, locks)" },
    [TRACE_NBD_CLIENT_CONNECT] = { "nbd_client_connect",
        "a client connected" },
    [TRACE_NBD_CLIENT_DISCONNECT] = { "nbd_client_disconnect",
        "a client left" },
    [TRACE_NBD_CLIENT_EXPORT] = { "nbd_client_export",
        "the export a client chose" },
    [TRACE_NBD_OPTION_REFUSED] = { "nbd_option_refused",
        "a handshake option refused, with the reason" },
    [TRACE_NBD_REQUEST_INVALID] = { "nbd_request_invalid",
        "a request refused by the validator, with the reason" },
    [TRACE_NBD_REQUEST_FAILED] = { "nbd_request_failed",
        "a request that failed in the block layer, with the error" },
    [TRACE_NBD_TLS_CLIENT] = { "nbd_tls_client",
        "the distinguished name of an x509 client" },
    [TRACE_NBD_TLS_SESSION] = { "nbd_tls_session",
        "the TLS session's cipher suite" },
    [TRACE_BDRV_NOTICE] = { "bdrv_notice",
        "the block layer's notes: io_uring fallback, qcow2 repair or "
        "corruption" },
};

static FILE *trace_stream;

static bool enable(const char *pattern, GError **errp)
{
    bool any = false;
    bool on = true;

    if (*pattern == '-') { /* QEMU: "-PATTERN" disables */
        on = false;
        pattern++;
    }
    for (int i = 0; i < TRACE_EVENT_COUNT; i++) {
        if (g_pattern_match_simple(pattern, events[i].name)) {
            trace_enabled[i] = on;
            any = true;
        }
    }
    if (!any)
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "trace event '%s' does not exist (try --trace help)",
                    pattern);
    /* the block layer's notes are printed by block/ under its own flag */
    bdrv_verbose = trace_enabled[TRACE_BDRV_NOTICE];
    return any;
}

static bool enable_from_file(const char *path, GError **errp)
{
    g_autofree char *text = NULL;
    g_auto(GStrv) lines = NULL;

    if (!g_file_get_contents(path, &text, NULL, errp))
        return false;
    lines = g_strsplit(text, "\n", -1);
    for (char **l = lines; *l; l++) {
        g_strstrip(*l);
        if (**l && **l != '#' && !enable(*l, errp))
            return false;
    }
    return true;
}

static void list_events(void)
{
    for (int i = 0; i < TRACE_EVENT_COUNT; i++)
        printf("%-24s %s\n", events[i].name, events[i].what);
}

bool trace_option(const char *arg, GError **errp)
{
    g_autoptr(GHashTable) opts = NULL;
    const char *v;

    if (strcmp(arg, "help") == 0) {
        list_events();
        exit(EXIT_SUCCESS);
    }
    opts = qemu_opts_parse(arg, "enable");
    if ((v = g_hash_table_lookup(opts, "file"))) {
        FILE *f = fopen(v, "a");

        if (!f) {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "cannot open trace file '%s': %s", v,
                        g_strerror(errno));
            return false;
        }
        setvbuf(f, NULL, _IOLBF, 0);
        trace_stream = f;
    }
    if ((v = g_hash_table_lookup(opts, "events")) &&
        !enable_from_file(v, errp))
        return false;
    if ((v = g_hash_table_lookup(opts, "enable")) && !enable(v, errp))
        return false;
    return true;
}

void trace(TraceEvent event, const char *fmt, ...)
{
    FILE *out = trace_stream ? trace_stream : stderr;
    va_list ap;

    if (!trace_enabled[event])
        return;
    va_start(ap, fmt);
    flockfile(out);
    fputs("snapnbd: ", out);
    vfprintf(out, fmt, ap);
    fputc('\n', out);
    funlockfile(out);
    va_end(ap);
}
