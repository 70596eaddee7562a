/*
 * qmp-chardev.c - --chardev, as qemu-storage-daemon 7.2 reads it.
 *
 * QEMU parses the option with QemuOpts (util/qemu-option.c: "backend"
 * implied, "id" taken out first, short-form flags "server" and "nowait",
 * each value checked as its declared type), then qemu_chr_new_from_opts
 * checks the backend and the socket options (chardev/char.c,
 * char-socket.c) and opens it at once.  The parser and the checks below
 * follow that code step by step, so the messages and which one wins are
 * QEMU's.  snapnbd serves QMP on two kinds of chardev: a unix socket in
 * server mode, and stdio (QEMU's iotests and scripts that drive the daemon
 * through a pipe).  What QEMU accepts and snapnbd does not do (other
 * backends, TCP, fd, client mode, telnet, websocket, mux, logfile) is
 * refused where QEMU would start doing it, with a message that says so.
 */
#include "qmp-chardev.h"

#include "block/block.h"
#include "qmp.h"
#include "server/nbd/listen.h"
#include "server/objects.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

typedef enum { OPT_STRING, OPT_BOOL, OPT_NUMBER, OPT_SIZE } OptType;

/* QEMU 7.2's qemu_chardev_opts: the keys --chardev takes, whatever the
 * backend (also what "--chardev socket,help" lists). */
static const struct {
    const char *name;
    OptType type;
} chardev_opts[] = {
    { "backend", OPT_STRING },   { "path", OPT_STRING },
    { "host", OPT_STRING },      { "port", OPT_STRING },
    { "fd", OPT_STRING },        { "localaddr", OPT_STRING },
    { "localport", OPT_STRING }, { "to", OPT_NUMBER },
    { "ipv4", OPT_BOOL },        { "ipv6", OPT_BOOL },
    { "wait", OPT_BOOL },        { "server", OPT_BOOL },
    { "delay", OPT_BOOL },       { "nodelay", OPT_BOOL },
    { "reconnect", OPT_NUMBER }, { "telnet", OPT_BOOL },
    { "tn3270", OPT_BOOL },      { "tls-creds", OPT_STRING },
    { "tls-authz", OPT_STRING }, { "websocket", OPT_BOOL },
    { "width", OPT_NUMBER },     { "height", OPT_NUMBER },
    { "cols", OPT_NUMBER },      { "rows", OPT_NUMBER },
    { "mux", OPT_BOOL },         { "signal", OPT_BOOL },
    { "name", OPT_STRING },      { "debug", OPT_NUMBER },
    { "size", OPT_SIZE },        { "chardev", OPT_STRING },
    { "append", OPT_BOOL },      { "logfile", OPT_STRING },
    { "logappend", OPT_BOOL },   { "mouse", OPT_BOOL },
    { "clipboard", OPT_BOOL },   { "tight", OPT_BOOL },
    { "abstract", OPT_BOOL },
};

/* The backends of qemu-storage-daemon 7.2 (a Debian build), and whether
 * snapnbd has them; "--chardev help" lists the ones it has. */
static const struct {
    const char *name;
    bool supported;
} backends[] = {
    { "socket", true }, { "null", false },     { "udp", false },
    { "memory", false }, { "ringbuf", false }, { "file", false },
    { "pipe", false },   { "pty", false },     { "stdio", true },
    { "serial", false }, { "parallel", false }, { "mux", false },
};

/* QEMU's deprecated backend aliases */
static const char *const aliases[][2] = {
    { "parport", "parallel" }, { "tty", "serial" },
};

struct QmpChardev {
    char *id;
    char *path;
    int fd;       /* listening (-1 for stdio) */
    bool stdio;
    bool taken;   /* by a --monitor */
    bool wait;
};

static GPtrArray *chardevs; /* of QmpChardev * */
static bool stdio_in_use;
static const char *daemonizing; /* the option, or NULL */

/* The parsed option: (name, value) pairs in order; QEMU's qemu_opt_get
 * finds the last one of a name. */
typedef struct {
    GPtrArray *names;
    GPtrArray *values;
} Opts;

static const char *opt_get(const Opts *o, const char *name)
{
    for (guint i = o->names->len; i-- > 0;) {
        if (strcmp(g_ptr_array_index(o->names, i), name) == 0)
            return g_ptr_array_index(o->values, i);
    }
    return NULL;
}

static bool is_help_option(const char *s)
{
    return strcmp(s, "help") == 0 || strcmp(s, "?") == 0;
}

/* QEMU's get_opt_value(): up to a single comma, ",," for a comma. */
static const char *get_opt_value(const char *p, char **value)
{
    GString *v = g_string_new(NULL);

    for (;;) {
        const char *comma = strchrnul(p, ',');

        g_string_append_len(v, p, comma - p);
        if (!*comma || comma[1] != ',') {
            *value = g_string_free(v, FALSE);
            return comma;
        }
        g_string_append_c(v, ',');
        p = comma + 2;
    }
}

/* QEMU's get_opt_name_value(): one item; a word alone is @firstname's
 * value, else a flag ("noX" is X=off); a flag "help" or "?" sets *@help.
 * @warn_prefix (not NULL): QEMU's warning for short-form flags. */
static const char *get_opt_name_value(const char *params,
                                      const char *firstname,
                                      const char *warn_prefix, bool *help,
                                      char **name, char **value)
{
    size_t len = strcspn(params, "=,");
    const char *p;

    if (params[len] != '=') {
        if (firstname) {
            *name = g_strdup(firstname);
            p = get_opt_value(params, value);
        } else {
            const char *no = g_str_has_prefix(params, "no") ? "no" : "";
            bool is_help;

            *name = g_strndup(params + strlen(no), len - strlen(no));
            *value = g_strdup(*no ? "off" : "on");
            is_help = !*no && is_help_option(*name);
            if (!is_help && warn_prefix) {
                fprintf(stderr, "%swarning: short-form boolean option "
                        "'%s%s' deprecated\n", warn_prefix, no, *name);
                if (strcmp(*name, "delay") == 0)
                    fprintf(stderr, "Please use nodelay=%s instead\n",
                            *no ? "on" : "off");
                else
                    fprintf(stderr, "Please use %s=%s instead\n", *name,
                            *value);
            }
            if (is_help && help)
                *help = true;
            p = params + len;
        }
    } else {
        *name = g_strndup(params, len);
        p = get_opt_value(params + len + 1, value);
    }
    return *p == ',' ? p + 1 : p;
}

/* QEMU's opts_parse_id(): the first id= (no warnings, no help). */
static char *parse_id(const char *params)
{
    for (const char *p = params; *p;) {
        g_autofree char *name = NULL;
        char *value;

        p = get_opt_name_value(p, NULL, NULL, NULL, &name, &value);
        if (strcmp(name, "id") == 0)
            return value;
        g_free(value);
    }
    return NULL;
}

/* QEMU's qemu_strtou64(@s, NULL, @base): the whole string. */
static int strtou64_whole(const char *s, int base, guint64 *out)
{
    char *end;

    errno = 0;
    *out = strtoull(s, &end, base);
    if (end == s || *end)
        return -EINVAL;
    return errno == ERANGE ? -ERANGE : 0;
}

/* QEMU's qemu_strtosz(): a decimal number or a hex one (no fraction), a
 * fraction only with a suffix, an optional B/K/M/G/T/P/E suffix (on a hex
 * number with QEMU's deprecation warning, after @warn_prefix). */
static int strtosz(const char *s, const char *warn_prefix, guint64 *out)
{
    static const char suffixes[] = "BKMGTPE";
    char *end;
    guint64 val;
    double frac = 0;
    const char *sfx;
    unsigned shift = 0;
    bool hex = false;

    errno = 0;
    val = strtoull(s, &end, 10);
    if (end == s)
        return -EINVAL;
    if (errno == ERANGE)
        return -ERANGE;
    if (memchr(s, '-', end - s))
        return -EINVAL;
    if (val == 0 && (*end == 'x' || *end == 'X')) {
        val = strtoull(s, &end, 16);
        if (errno == ERANGE)
            return -ERANGE;
        if (*end == '.')
            return -EINVAL;
        hex = true;
    } else if (*end == '.') { /* "1.5k"; "1.k" too, but no exponent */
        char *fend;

        frac = strtod(end, &fend);
        if (fend == end)
            end++;
        else if (memchr(end, 'e', fend - end) || memchr(end, 'E', fend - end))
            return -EINVAL;
        else
            end = fend;
    }
    if (*end && (sfx = strchr(suffixes, g_ascii_toupper(*end)))) {
        if (hex)
            fprintf(stderr, "%swarning: Using a multiplier suffix on hex "
                    "numbers is deprecated: %s\n", warn_prefix, s);
        shift = 10 * (unsigned)(sfx - suffixes);
        end++;
    } else if (frac) {
        return -EINVAL; /* bytes have no fraction */
    }
    if (*end)
        return -EINVAL;
    if (shift && val > (G_MAXUINT64 >> shift))
        return -ERANGE;
    *out = (val << shift) + (guint64)(frac * (double)(1ULL << shift));
    return 0;
}

/* QEMU's qemu_opt_parse() for one of qemu_chardev_opts. */
static bool check_value(const char *name, OptType type, const char *value,
                        const char *warn_prefix, GError **errp)
{
    static const char *const bool_words[] = {
        "on", "yes", "true", "y", "off", "no", "false", "n", NULL,
    };
    guint64 n;
    int ret;

    switch (type) {
    case OPT_STRING:
        return true;
    case OPT_BOOL:
        if (g_strv_contains(bool_words, value))
            return true;
        qmp_error(errp, "Parameter '%s' expects 'on' or 'off'", name);
        return false;
    case OPT_NUMBER:
        ret = strtou64_whole(value, 0, &n);
        if (ret == -ERANGE)
            qmp_error(errp, "Value '%s' is too large for parameter '%s'",
                      value, name);
        else if (ret)
            qmp_error(errp, "Parameter '%s' expects a number", name);
        return ret == 0;
    case OPT_SIZE:
        ret = strtosz(value, warn_prefix, &n);
        if (ret == -ERANGE)
            qmp_error(errp, "Value '%s' is out of range for parameter '%s'",
                      value, name);
        else if (ret)
            qmp_error(errp, "Parameter '%s' expects a non-negative number "
                      "below 2^64\nOptional suffix k, M, G, T, P or E means "
                      "kilo-, mega-, giga-, tera-, peta-\nand exabytes, "
                      "respectively.", name);
        return ret == 0;
    }
    return false;
}

static bool validate(const char *name, const char *value,
                     const char *warn_prefix, GError **errp)
{
    for (size_t i = 0; i < G_N_ELEMENTS(chardev_opts); i++) {
        if (strcmp(chardev_opts[i].name, name) == 0)
            return check_value(name, chardev_opts[i].type, value,
                               warn_prefix, errp);
    }
    qmp_error(errp, "Invalid parameter '%s'", name);
    return false;
}

/* QEMU's opts_parse() + opts_do_parse(): the id checked first, then each
 * item in order until a bad one or a help request. */
static bool opts_parse(const char *spec, const char *warn_prefix, Opts *o,
                       char **id, bool *help, GError **errp)
{
    const char *firstname = "backend";

    *id = parse_id(spec);
    if (*id && !bdrv_id_wellformed(*id)) {
        qmp_error(errp, "Parameter 'id' expects an identifier\n"
                  "Identifiers consist of letters, digits, '-', '.', '_', "
                  "starting with a letter.");
        return false;
    }
    for (const char *p = spec; *p; firstname = NULL) {
        char *name, *value;

        p = get_opt_name_value(p, firstname, warn_prefix, help, &name,
                               &value);
        if (*help || strcmp(name, "id") == 0 ||
            !validate(name, value, warn_prefix, errp)) {
            bool skipped_id = !*help && strcmp(name, "id") == 0;

            g_free(name);
            g_free(value);
            if (skipped_id)
                continue;
            return *help; /* help stops the parse; else an error */
        }
        g_ptr_array_add(o->names, name);
        g_ptr_array_add(o->values, value);
    }
    return true;
}

static gint compare_strings(gconstpointer a, gconstpointer b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* QEMU's qemu_opts_print_help(&qemu_chardev_opts, true) */
static void print_options(void)
{
    static const char *const type_names[] = {
        [OPT_STRING] = "str", [OPT_BOOL] = "bool (on/off)",
        [OPT_NUMBER] = "num", [OPT_SIZE] = "size",
    };
    g_autoptr(GPtrArray) lines = g_ptr_array_new_with_free_func(g_free);

    for (size_t i = 0; i < G_N_ELEMENTS(chardev_opts); i++)
        g_ptr_array_add(lines, g_strdup_printf("  %s=<%s>",
                        chardev_opts[i].name,
                        type_names[chardev_opts[i].type]));
    g_ptr_array_sort(lines, compare_strings);
    printf("chardev options:\n");
    for (guint i = 0; i < lines->len; i++)
        printf("%s\n", (const char *)g_ptr_array_index(lines, i));
    fflush(stdout);
}

/* "--chardev help": QEMU's list of backend types (its layout: a space
 * after the colon), of the ones snapnbd has */
static void print_backends(void)
{
    printf("Available chardev backend types: ");
    for (size_t i = 0; i < G_N_ELEMENTS(backends); i++) {
        if (backends[i].supported)
            printf("\n  %s", backends[i].name);
    }
    printf("\n");
    fflush(stdout);
}

/* QEMU's opt_get_bool(): the value checked when parsed */
static bool opt_bool(const Opts *o, const char *name, bool dflt)
{
    const char *v = opt_get(o, name);
    static const char *const yes[] = { "on", "yes", "true", "y", NULL };

    return v ? g_strv_contains(yes, v) : dflt;
}

/* The backend's name (aliases resolved) if QEMU has it; errors as
 * qemu_chr_new_from_opts and qemu_chr_parse_opts give them. */
static bool check_backend(const char *id, const char *backend,
                          GError **errp)
{
    if (!backend) {
        qmp_error(errp, "chardev: \"%s\" missing backend", id);
        return false;
    }
    for (size_t i = 0; i < G_N_ELEMENTS(aliases); i++) {
        if (strcmp(backend, aliases[i][0]) == 0)
            backend = aliases[i][1];
    }
    for (size_t i = 0; i < G_N_ELEMENTS(backends); i++) {
        if (strcmp(backend, backends[i].name) != 0)
            continue;
        if (!backends[i].supported)
            qmp_error(errp, "chardev backend '%s' is not supported (only "
                      "socket and stdio)", backend);
        return backends[i].supported;
    }
    qmp_error(errp, "'%s' is not a valid char driver name", backend);
    return false;
}

typedef struct {
    const char *id;
    const char *type;
} ObjectFound;

static void find_object(const char *id, const char *type, void *opaque)
{
    ObjectFound *f = opaque;

    if (strcmp(id, f->id) == 0)
        f->type = type;
}

/* qmp_chardev_open_socket's lookup of tls-creds */
static bool check_tls_creds(const char *creds, GError **errp)
{
    ObjectFound f = { creds, NULL };

    objects_foreach(find_object, &f);
    if (!f.type) {
        qmp_error(errp, "No TLS credentials with id '%s'", creds);
        return false;
    }
    if (!g_str_has_prefix(f.type, "tls-creds-")) {
        qmp_error(errp, "Object with id '%s' is not TLS credentials", creds);
        return false;
    }
    return true;
}

/* qmp_chardev_validate_socket(): options that do not fit the address
 * type or the mode */
static bool validate_socket(const Opts *o, bool server, GError **errp)
{
    const char *path = opt_get(o, "path"), *host = opt_get(o, "host");
    bool tls = opt_get(o, "tls-creds");

    if (!path && !host) { /* an fd */
        if (opt_get(o, "reconnect")) {
            qmp_error(errp, "'reconnect' option is incompatible with 'fd' "
                      "address type");
            return false;
        }
        if (tls && !server) {
            qmp_error(errp, "'tls_creds' option is incompatible with 'fd' "
                      "address type as client");
            return false;
        }
    } else if (path && tls) {
        qmp_error(errp, "'tls_creds' option is incompatible with 'unix' "
                  "address type");
        return false;
    }
    if (opt_get(o, "tls-authz") && !tls) {
        qmp_error(errp, "'tls_authz' option requires 'tls_creds' option");
        return false;
    }
    if (server && opt_get(o, "reconnect")) {
        qmp_error(errp, "'reconnect' option is incompatible with socket in "
                  "server listen mode");
        return false;
    }
    if (!server && opt_bool(o, "websocket", false)) {
        qmp_error(errp, "Websocket client is not implemented");
        return false;
    }
    if (!server && opt_get(o, "wait")) {
        qmp_error(errp, "'wait' option is incompatible with socket in "
                  "client connect mode");
        return false;
    }
    return true;
}

static bool unsupported(const char *id, const char *what, GError **errp)
{
    qmp_error(errp, "chardev '%s': %s is not supported (only a unix socket "
              "path with server=on)", id, what);
    return false;
}

int qmp_socket_get_fd(const char *fd, GError **errp)
{
    char *end;
    long n;
    int type;
    socklen_t len = sizeof(type);

    errno = 0;
    n = fd ? strtol(fd, &end, 10) : 0;
    if (!fd || end == fd || *end || errno == ERANGE || n < INT_MIN ||
        n > INT_MAX) {
        if (fd && (errno == ERANGE || n < INT_MIN || n > INT_MAX))
            qmp_error(errp, "Unable to parse FD number %s: %s", fd,
                      g_strerror(ERANGE));
        else
            qmp_error(errp, "Unable to parse FD number %s", fd ? fd : "");
        return -1;
    }
    if (getsockopt((int)n, SOL_SOCKET, SO_TYPE, &type, &len) < 0) {
        qmp_error(errp, "File descriptor '%s' is not a socket", fd);
        return -1;
    }
    return (int)n;
}

/* QEMU's socket_get_fd() without a monitor, then snapnbd's refusal */
static bool check_fd(const char *id, const char *fd, GError **errp)
{
    if (qmp_socket_get_fd(fd, errp) < 0)
        return false;
    return unsupported(id, "a socket fd", errp);
}

/* QEMU's client mode connects at once unless reconnect= is set (to @path
 * in the abstract namespace with abstract=on, its address "tight" unless
 * tight=off): its error when it cannot, else snapnbd's refusal. */
static bool check_client(const char *id, const Opts *o, GError **errp)
{
    const char *path = opt_get(o, "path");
    bool abstract = opt_bool(o, "abstract", false);
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    socklen_t len = sizeof(sun);
    int fd, ret, err;

    /* reconnect=N: QEMU connects in the background, errors or not */
    if (opt_get(o, "reconnect") &&
        strtoull(opt_get(o, "reconnect"), NULL, 0) > 0)
        return unsupported(id, "client mode (server=off)", errp);
    if (strlen(path) + abstract >= sizeof(sun.sun_path))
        return unsupported(id, "a path this long", errp);
    strcpy(sun.sun_path + abstract, path);
    if (abstract && opt_bool(o, "tight", true))
        len = offsetof(struct sockaddr_un, sun_path) + 1 + strlen(path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ret = fd < 0 ? -1 : connect(fd, (struct sockaddr *)&sun, len);
    err = errno;
    if (fd >= 0)
        close(fd);
    if (ret < 0) {
        qmp_error(errp, "Failed to connect to '%s': %s", path,
                  g_strerror(err));
        return false;
    }
    return unsupported(id, "client mode (server=off)", errp);
}

/* qemu_chr_parse_socket() and qmp_chardev_open_socket(), in their order;
 * the listening socket in *@fd. */
static bool open_socket(const char *id, const Opts *o, int *fd,
                        GError **errp)
{
    const char *path = opt_get(o, "path"), *host = opt_get(o, "host");
    const char *fdstr = opt_get(o, "fd");
    bool server = opt_bool(o, "server", false);

    if (!!path + !!host + !!fdstr > 1) {
        qmp_error(errp, "None or one of 'path', 'fd' or 'host' option "
                  "required.");
        return false;
    }
    if (host && !opt_get(o, "port")) {
        qmp_error(errp, "chardev: socket: no port given");
        return false;
    }
    if (opt_get(o, "delay") && opt_get(o, "nodelay")) {
        qmp_error(errp, "'delay' and 'nodelay' are mutually exclusive");
        return false;
    }
    /* qemu_char_open() opens the log file before the socket */
    if (opt_get(o, "logfile"))
        return unsupported(id, "logfile", errp);
    if (opt_get(o, "tls-creds") && !check_tls_creds(opt_get(o, "tls-creds"),
                                                    errp))
        return false;
    if (!validate_socket(o, server, errp))
        return false;
    for (guint i = 0; chardevs && i < chardevs->len; i++) {
        if (strcmp(((QmpChardev *)g_ptr_array_index(chardevs, i))->id,
                   id) == 0) {
            qmp_error(errp, "duplicate yank instance");
            return false;
        }
    }
    /* a server without an address, or fd=, listens on nothing (QEMU's
     * skip_listen) */
    if (!path && !host && server && (!fdstr || !*fdstr))
        return unsupported(id, "a server without a path", errp);
    if (!path && !host)
        return check_fd(id, fdstr, errp);
    if (host)
        return unsupported(id, "a TCP socket (host=)", errp);
    if (!server)
        return check_client(id, o, errp);
    if (!*path)
        return unsupported(id, "an empty path", errp);
    if (opt_bool(o, "abstract", false))
        return unsupported(id, "abstract=on", errp);
    if (opt_bool(o, "telnet", false) || opt_bool(o, "tn3270", false))
        return unsupported(id, "telnet", errp);
    if (opt_bool(o, "websocket", false))
        return unsupported(id, "websocket", errp);
    if (opt_bool(o, "mux", false))
        return unsupported(id, "mux=on", errp);
    *fd = nbd_listen_unix(path, errp);
    return *fd >= 0;
}

/* qemu_chr_open_stdio(), after qemu_char_open()'s logfile: stdin and
 * stdout, once.  QEMU also turns a terminal's echo off (and its signals,
 * with signal=off); snapnbd leaves the terminal as it is. */
static bool open_stdio(const char *id, const Opts *o, GError **errp)
{
    if (opt_get(o, "logfile"))
        return unsupported(id, "logfile", errp);
    if (opt_bool(o, "mux", false))
        return unsupported(id, "mux=on", errp);
    if (daemonizing) {
        qmp_error(errp, "cannot use stdio with %s", daemonizing);
        return false;
    }
    if (stdio_in_use) {
        qmp_error(errp, "cannot use stdio by multiple character devices");
        return false;
    }
    stdio_in_use = true;
    return true;
}

void qmp_chardev_set_daemonizing(const char *option)
{
    daemonizing = option;
}

bool qmp_chardev_add(const char *spec, int *help_status, GError **errp)
{
    g_autofree char *warn_prefix = g_strdup_printf("snapnbd: --chardev %s: ",
                                                   spec);
    Opts o = { g_ptr_array_new_with_free_func(g_free),
               g_ptr_array_new_with_free_func(g_free) };
    g_autofree char *id = NULL;
    const char *backend;
    bool help = false, ok = false, stdio;
    QmpChardev *chr;
    int fd = -1;

    if (!opts_parse(spec, warn_prefix, &o, &id, &help, errp))
        goto out;
    if (help) { /* qemu_opts_parse_noisily() printed, the daemon fails */
        print_options();
        *help_status = EXIT_FAILURE;
        goto out;
    }
    backend = opt_get(&o, "backend");
    if (backend && is_help_option(backend)) {
        print_backends();
        *help_status = EXIT_SUCCESS;
        goto out;
    }
    if (!id) {
        qmp_error(errp, "chardev: no id specified");
        goto out;
    }
    if (!check_backend(id, backend, errp))
        goto out;
    stdio = strcmp(backend, "stdio") == 0;
    if (stdio ? !open_stdio(id, &o, errp) : !open_socket(id, &o, &fd, errp))
        goto out;
    chr = g_new0(QmpChardev, 1);
    chr->id = g_steal_pointer(&id);
    chr->path = stdio ? NULL : g_strdup(opt_get(&o, "path"));
    chr->fd = fd;
    chr->stdio = stdio;
    chr->wait = opt_bool(&o, "wait", true);
    if (!chardevs)
        chardevs = g_ptr_array_new();
    g_ptr_array_add(chardevs, chr);
    ok = true;
out:
    g_ptr_array_unref(o.names);
    g_ptr_array_unref(o.values);
    return ok;
}

QmpChardev *qmp_chardev_find(const char *id)
{
    for (guint i = 0; chardevs && i < chardevs->len; i++) {
        QmpChardev *chr = g_ptr_array_index(chardevs, i);

        if (strcmp(chr->id, id) == 0)
            return chr;
    }
    return NULL;
}

bool qmp_chardev_take(QmpChardev *chr, int *fd, char **path, bool *wait,
                      GError **errp)
{
    if (chr->taken) {
        qmp_error(errp, "Device '%s' is in use", chr->id);
        return false;
    }
    *fd = chr->fd;
    *path = g_strdup(chr->path);
    *wait = chr->wait;
    chr->fd = -1;
    chr->taken = true;
    return true;
}

bool qmp_chardev_is_stdio(const QmpChardev *chr)
{
    return chr->stdio;
}

void qmp_chardev_cleanup(void)
{
    for (guint i = 0; chardevs && i < chardevs->len; i++) {
        QmpChardev *chr = g_ptr_array_index(chardevs, i);

        if (chr->fd >= 0) {
            close(chr->fd);
            unlink(chr->path);
        }
        g_free(chr->id);
        g_free(chr->path);
        g_free(chr);
    }
    g_clear_pointer(&chardevs, g_ptr_array_unref);
    stdio_in_use = false;
}
