/*
 * list.c - -L/--list, qemu-nbd's client mode, with libnbd.
 *
 * qemu-nbd 7.2 asks NBD_OPT_LIST for the names and descriptions, then
 * NBD_OPT_INFO for each export and, with structured replies,
 * NBD_OPT_LIST_META_CONTEXT; the output below is its output, byte for
 * byte (QEMU's iotests compare it).  libnbd gives the transmission flags
 * one by one, so they are put together again here in the wire's bit order.
 */
#include "list.h"

#include "block/qemu-opts.h"

#include <errno.h>
#include <inttypes.h>
#include <libnbd.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ListedExport {
    char *name;
    char *description;
} ListedExport;

static int collect_export(void *opaque, const char *name,
                          const char *description)
{
    GArray *exports = opaque;
    ListedExport e = { g_strdup(name), g_strdup(description) };

    g_array_append_val(exports, e);
    return 0;
}

static int collect_context(void *opaque, const char *name)
{
    g_ptr_array_add(opaque, g_strdup(name));
    return 0;
}

static void clear_export(gpointer p)
{
    ListedExport *e = p;

    g_free(e->name);
    g_free(e->description);
}

/* The export's transmission flags as the server sent them (bit 0, "has
 * flags", is always set by a newstyle server). */
static unsigned export_flags(struct nbd_handle *h)
{
    static int (*const has[])(struct nbd_handle *) = {
        NULL,                /* has flags */
        nbd_is_read_only,    /* readonly */
        nbd_can_flush,       /* flush */
        nbd_can_fua,         /* fua */
        nbd_is_rotational,   /* rotational */
        nbd_can_trim,        /* trim */
        nbd_can_zero,        /* zeroes */
        nbd_can_df,          /* df */
        nbd_can_multi_conn,  /* multi */
        NULL,                /* resize: libnbd does not say */
        nbd_can_cache,       /* cache */
        nbd_can_fast_zero,   /* fast-zero */
    };
    unsigned flags = 1;

    for (size_t bit = 1; bit < G_N_ELEMENTS(has); bit++)
        if (has[bit] && has[bit](h) == 1)
            flags |= 1u << bit;
    return flags;
}

static void print_flags(unsigned flags)
{
    static const char *const names[] = {
        NULL, "readonly", "flush", "fua", "rotational", "trim", "zeroes",
        "df", "multi", "resize", "cache", "fast-zero",
    };

    printf("  flags: 0x%x (", flags);
    for (size_t bit = 0; bit < G_N_ELEMENTS(names); bit++)
        if (names[bit] && (flags & (1u << bit)))
            printf(" %s", names[bit]);
    printf(" )\n");
}

/* What NBD_OPT_INFO and NBD_OPT_LIST_META_CONTEXT say about @e; false if
 * the server answered no INFO (qemu-nbd stops asking then). */
static bool print_info(struct nbd_handle *h, const ListedExport *e)
{
    g_autoptr(GPtrArray) contexts = g_ptr_array_new_with_free_func(g_free);
    int64_t min_block;

    if (nbd_set_export_name(h, e->name) < 0 || nbd_opt_info(h) < 0)
        return false;
    printf("  size:  %" PRId64 "\n", nbd_get_size(h));
    print_flags(export_flags(h));
    min_block = nbd_get_block_size(h, LIBNBD_SIZE_MINIMUM);
    if (min_block > 0) {
        printf("  min block: %" PRId64 "\n", min_block);
        printf("  opt block: %" PRId64 "\n",
               nbd_get_block_size(h, LIBNBD_SIZE_PREFERRED));
        printf("  max block: %" PRId64 "\n",
               nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM));
    }
    if (nbd_get_structured_replies_negotiated(h) == 1) {
        nbd_context_callback cb = { .callback = collect_context,
                                    .user_data = contexts };

        if (nbd_opt_list_meta_context(h, cb) >= 0 && contexts->len) {
            printf("  available meta contexts: %u\n", contexts->len);
            for (guint i = 0; i < contexts->len; i++)
                printf("   %s\n", (char *)g_ptr_array_index(contexts, i));
        }
    }
    return true;
}

/* --tls-creds for a client: the x509 or psk object it names. */
static bool setup_tls(struct nbd_handle *h, const CliOptions *o)
{
    for (char **spec = o->objects; spec && *spec; spec++) {
        g_autoptr(GHashTable) obj = qemu_opts_parse(*spec, "qom-type");
        const char *type = g_hash_table_lookup(obj, "qom-type");
        const char *dir = g_hash_table_lookup(obj, "dir");
        const char *verify = g_hash_table_lookup(obj, "verify-peer");
        const char *user = g_hash_table_lookup(obj, "username");
        g_autofree char *keys = NULL;

        if (g_strcmp0(g_hash_table_lookup(obj, "id"), o->tls_creds) != 0)
            continue;
        if (nbd_set_tls(h, LIBNBD_TLS_REQUIRE) < 0)
            return false;
        if (g_strcmp0(type, "tls-creds-x509") == 0) {
            return (!dir || nbd_set_tls_certificates(h, dir) == 0) &&
                   nbd_set_tls_verify_peer(
                       h, !verify || !g_str_equal(verify, "off")) == 0;
        }
        if (g_strcmp0(type, "tls-creds-psk") == 0) {
            keys = g_build_filename(dir ? dir : ".", "keys.psk", NULL);
            return nbd_set_tls_psk_file(h, keys) == 0 &&
                   nbd_set_tls_username(h, user ? user : "qemu") == 0;
        }
        fprintf(stderr, "snapnbd: Failed to get TLS creds: Object with id "
                        "'%s' is not TLS credentials\n", o->tls_creds);
        return false;
    }
    fprintf(stderr, "snapnbd: Failed to get TLS creds: No TLS credentials "
                    "with id '%s'\n", o->tls_creds);
    return false;
}

/* A connected socket, or -1 with errno set. */
static int connect_socket(const CliOptions *o, const char *host,
                          const char *port)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res, *ai;
    int fd = -1, err;

    if (o->socket_path) {
        struct sockaddr_un sun = { .sun_family = AF_UNIX };

        if (strlen(o->socket_path) >= sizeof(sun.sun_path)) {
            errno = ENAMETOOLONG;
            return -1;
        }
        strcpy(sun.sun_path, o->socket_path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
            err = errno;
            close(fd);
            errno = err;
            return -1;
        }
        return fd;
    }
    if ((err = getaddrinfo(host, port, &hints, &res)) != 0) {
        errno = err == EAI_SYSTEM ? errno : EHOSTUNREACH;
        return -1;
    }
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        err = errno;
        if (fd >= 0)
            close(fd);
        fd = -1;
        errno = err;
    }
    freeaddrinfo(res);
    return fd;
}

/* Connects and shakes hands, or says why not as qemu-nbd does. */
static bool connect_server(struct nbd_handle *h, const CliOptions *o)
{
    const char *host = o->bind ? o->bind : "0.0.0.0";
    const char *port = o->port ? o->port : "10809";
    int fd = connect_socket(o, host, port);

    if (fd < 0) {
        g_autofree char *where = o->socket_path
                                     ? g_strdup(o->socket_path)
                                     : g_strdup_printf("%s:%s", host, port);

        fprintf(stderr, "snapnbd: Failed to connect to '%s': %s\n", where,
                g_strerror(errno));
        return false;
    }
    if (nbd_connect_socket(h, fd) < 0) { /* libnbd owns @fd now */
        fprintf(stderr, "snapnbd: %s\n", nbd_get_error());
        return false;
    }
    return true;
}

int list_exports(const CliOptions *o)
{
    g_autoptr(GArray) exports = g_array_new(FALSE, TRUE,
                                            sizeof(ListedExport));
    struct nbd_handle *h = nbd_create();
    nbd_list_callback cb = { .callback = collect_export,
                             .user_data = exports };
    bool info_works = true;
    int ret = EXIT_FAILURE;

    g_array_set_clear_func(exports, clear_export);
    if (!h || nbd_set_opt_mode(h, true) < 0 ||
        (o->tls_creds && !setup_tls(h, o)))
        goto out;
    if (!connect_server(h, o))
        goto out;
    if (nbd_opt_list(h, cb) < 0) {
        fprintf(stderr, "snapnbd: %s\n", nbd_get_error());
        goto out;
    }
    printf("exports available: %u\n", exports->len);
    for (guint i = 0; i < exports->len; i++) {
        const ListedExport *e = &g_array_index(exports, ListedExport, i);

        printf(" export: '%s'\n", e->name);
        if (e->description && *e->description)
            printf("  description: %s\n", e->description);
        if (info_works)
            info_works = print_info(h, e);
    }
    nbd_opt_abort(h);
    ret = EXIT_SUCCESS;
out:
    if (h)
        nbd_close(h);
    return ret;
}
