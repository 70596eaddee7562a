/*
 * qmp.c - the QMP control socket: listeners, clients, dispatch, events, and
 * the core commands (qmp_capabilities, query-version, query-commands, quit,
 * transaction).
 *
 * One thread ("qmp") owns every QMP socket and runs a poll loop: it
 * accepts, reads, parses (qmp-json.c), runs one command at a time and
 * writes replies.  Client sockets are non-blocking and each client has an
 * output buffer, so a client that stops reading never blocks the thread nor
 * the threads that emit events.  qmp_lock guards the client list and the
 * output buffers: qmp_emit_event appends under it from any thread and wakes
 * the loop through a pipe.  See docs/architecture.md.
 */
#include "server/nbd/listen.h"
#include "server/nbd/nbd-server.h"
#include "qmp-int.h"
#include "qmp-json.h"
#include "qmp-schema.h"
#include "server/qmp/qmp-types-gen.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* The QMP dialect snapnbd speaks, reported by query-version. */
#define QMP_QEMU_MAJOR 7
#define QMP_QEMU_MINOR 2
#define QMP_QEMU_MICRO 0

/* A client whose unread output grows past this is dropped. */
#define MAX_OUTPUT (16u << 20)

G_DEFINE_QUARK(snapnbd-qmp-error, qmp_error)

typedef struct QmpCommand {
    char *name;
    QmpCommandFunc fn; /* decodes the arguments, calls the typed handler */
} QmpCommand;

typedef struct QmpListener {
    int fd;
    char *path;
} QmpListener;

typedef struct QmpClient {
    int fd;            /* a socket, or stdin */
    int out_fd;        /* fd, or stdout */
    bool stdio;
    bool input_done;   /* stdin ended (QMP thread only) */
    QmpJsonStreamer *json;
    bool negotiated;   /* written by the QMP thread under qmp_lock */
    bool dead;         /* to be closed by the loop; written under qmp_lock */
    GString *out;      /* unsent output, guarded by qmp_lock */
} QmpClient;

static GMutex registry_lock;
static GPtrArray *commands;        /* of QmpCommand *, registration order */
static GHashTable *tx_actions;     /* type -> const QmpTransactionOps * */

static GMutex qmp_lock;
static GPtrArray *clients;         /* of QmpClient *, guarded by qmp_lock */
static GPtrArray *listeners;       /* of QmpListener *, QMP thread only */
static int wake_pipe[2] = { -1, -1 };
static GThread *qmp_thread;
static int stopping;               /* atomic */
/* Commands run on the QMP thread holding dispatch_lock; once input_stopped
 * is set no more are read, while output still flows (qmp_stop_input). */
static GMutex dispatch_lock;
static int input_stopped;          /* atomic */
static void (*quit_hook)(void);

/* --- errors and argument helpers --------------------------------------- */

void qmp_error(GError **errp, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    if (errp) {
        g_autofree char *msg = g_strdup_vprintf(fmt, ap);
        g_set_error_literal(errp, QMP_ERROR, QMP_ERROR_GENERIC_ERROR, msg);
    }
    va_end(ap);
}

static const char *error_class(const GError *err)
{
    if (err->domain != QMP_ERROR)
        return "GenericError";
    switch (err->code) {
    case QMP_ERROR_COMMAND_NOT_FOUND:
        return "CommandNotFound";
    case QMP_ERROR_DEVICE_NOT_FOUND:
        return "DeviceNotFound";
    case QMP_ERROR_DEVICE_NOT_ACTIVE:
        return "DeviceNotActive";
    default:
        return "GenericError";
    }
}

/* --- registry ------------------------------------------------------------ */

static QmpCommand *find_command(const char *name)
{
    QmpCommand *found = NULL;

    g_mutex_lock(&registry_lock);
    for (guint i = 0; commands && i < commands->len && !found; i++) {
        QmpCommand *c = g_ptr_array_index(commands, i);
        if (strcmp(c->name, name) == 0)
            found = c;
    }
    g_mutex_unlock(&registry_lock);
    return found;
}

void qmp_register_command_decoder(const char *name,
                                  QmpCommandFunc decode_and_call)
{
    QmpCommand *c = g_new0(QmpCommand, 1);

    c->name = g_strdup(name);
    c->fn = decode_and_call;
    g_mutex_lock(&registry_lock);
    if (!commands)
        commands = g_ptr_array_new();
    g_ptr_array_add(commands, c);
    g_mutex_unlock(&registry_lock);
}

void qmp_register_transaction_action(const char *type,
                                     const QmpTransactionOps *ops)
{
    g_mutex_lock(&registry_lock);
    if (!tx_actions)
        tx_actions = g_hash_table_new(g_str_hash, g_str_equal);
    g_hash_table_insert(tx_actions, (gpointer)type, (gpointer)ops);
    g_mutex_unlock(&registry_lock);
}

static const QmpTransactionOps *find_action(const char *type)
{
    const QmpTransactionOps *ops;

    g_mutex_lock(&registry_lock);
    ops = tx_actions ? g_hash_table_lookup(tx_actions, type) : NULL;
    g_mutex_unlock(&registry_lock);
    return ops;
}

/* --- output -------------------------------------------------------------- */

/* Wakes the loop; called under qmp_lock, which keeps the pipe open. */
static void wake_locked(void)
{
    char byte = 0;

    if (wake_pipe[1] >= 0 && write(wake_pipe[1], &byte, 1) < 0) {
        /* the pipe is full: the loop is awake anyway */
    }
}

/* Queues one message for the client (QMP thread or under no lock). */
static void client_send(QmpClient *c, JsonNode *msg)
{
    g_mutex_lock(&qmp_lock);
    qmp_json_append(c->out, msg);
    g_string_append(c->out, "\r\n");
    g_mutex_unlock(&qmp_lock);
}

/* Writes to stdout what it takes without blocking, without making the
 * descriptor (shared with whoever started us) non-blocking: a pipe or a
 * terminal that polls writable takes a page. */
static ssize_t write_stdout(int fd, const char *buf, size_t len)
{
    struct pollfd p = { fd, POLLOUT, 0 };
    int ready = poll(&p, 1, 0);

    if (ready < 0)
        return -1;
    if (ready == 0 || !(p.revents & POLLOUT)) {
        errno = p.revents & (POLLERR | POLLHUP | POLLNVAL) ? EPIPE : EAGAIN;
        return -1;
    }
    return write(fd, buf, MIN(len, 4096));
}

/* Writes what the socket takes now; marks the client dead on error or when
 * it stopped reading long ago. */
static void client_flush(QmpClient *c)
{
    g_mutex_lock(&qmp_lock);
    while (c->out->len > 0 && !c->dead) {
        ssize_t n = c->stdio
            ? write_stdout(c->out_fd, c->out->str, c->out->len)
            : send(c->fd, c->out->str, c->out->len,
                   MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n <= 0) {
            c->dead = true;
            break;
        }
        g_string_erase(c->out, 0, n);
    }
    if (c->out->len > MAX_OUTPUT)
        c->dead = true;
    g_mutex_unlock(&qmp_lock);
}

static JsonNode *node_take_object(JsonObject *obj)
{
    JsonNode *n = json_node_new(JSON_NODE_OBJECT);

    json_node_take_object(n, obj);
    return n;
}

void qmp_emit_event(const char *name, JsonObject *data)
{
    gint64 now = g_get_real_time();
    g_autoptr(JsonNode) msg = NULL;
    JsonObject *ev = json_object_new();
    JsonObject *ts = json_object_new();

    json_object_set_int_member(ts, "seconds", now / G_USEC_PER_SEC);
    json_object_set_int_member(ts, "microseconds", now % G_USEC_PER_SEC);
    json_object_set_object_member(ev, "timestamp", ts);
    json_object_set_string_member(ev, "event", name);
    if (data)
        json_object_set_object_member(ev, "data", data);
    msg = node_take_object(ev);

    g_mutex_lock(&qmp_lock);
    for (guint i = 0; clients && i < clients->len; i++) {
        QmpClient *c = g_ptr_array_index(clients, i);
        if (c->negotiated && !c->dead) {
            qmp_json_append(c->out, msg);
            g_string_append(c->out, "\r\n");
        }
    }
    wake_locked();
    g_mutex_unlock(&qmp_lock);
}

/* --- dispatch ------------------------------------------------------------ */

static JsonNode *version_info(void)
{
    JsonObject *v = json_object_new();
    JsonObject *q = json_object_new();

    /* key order as QEMU prints it */
    json_object_set_int_member(q, "micro", QMP_QEMU_MICRO);
    json_object_set_int_member(q, "minor", QMP_QEMU_MINOR);
    json_object_set_int_member(q, "major", QMP_QEMU_MAJOR);
    json_object_set_object_member(v, "qemu", q);
    json_object_set_string_member(v, "package", "snapnbd-" PACKAGE_VERSION);
    return node_take_object(v);
}

static void send_greeting(QmpClient *c)
{
    g_autoptr(JsonNode) msg = NULL;
    JsonObject *qmp = json_object_new();
    JsonObject *top = json_object_new();

    json_object_set_member(qmp, "version", version_info());
    json_object_set_array_member(qmp, "capabilities", json_array_new());
    json_object_set_object_member(top, "QMP", qmp);
    msg = node_take_object(top);
    client_send(c, msg);
}

/* Replies {"return": ret, "id": id} or {"id": id, "error": {...}}, with
 * QEMU's member order. */
static void send_response(QmpClient *c, JsonNode *ret, const GError *err,
                          JsonNode *id)
{
    g_autoptr(JsonNode) msg = NULL;
    JsonObject *rsp = json_object_new();

    if (err) {
        JsonObject *e = json_object_new();
        json_object_set_string_member(e, "class", error_class(err));
        json_object_set_string_member(e, "desc", err->message);
        if (id)
            json_object_set_member(rsp, "id", json_node_copy(id));
        json_object_set_object_member(rsp, "error", e);
    } else {
        json_object_set_member(rsp, "return", ret);
        if (id)
            json_object_set_member(rsp, "id", json_node_copy(id));
    }
    msg = node_take_object(rsp);
    client_send(c, msg);
}

/* The request's members, as QEMU checks them. */
static bool check_request(JsonObject *req, GError **errp)
{
    g_autoptr(GPtrArray) keys = qmp_json_qdict_keys(req, true);

    for (guint i = 0; i < keys->len; i++) {
        const char *key = g_ptr_array_index(keys, i);
        JsonNode *v = json_object_get_member(req, key);
        if (strcmp(key, "execute") == 0) {
            if (JSON_NODE_TYPE(v) != JSON_NODE_VALUE ||
                json_node_get_value_type(v) != G_TYPE_STRING) {
                qmp_error(errp, "QMP input member 'execute' must be a string");
                return false;
            }
        } else if (strcmp(key, "arguments") == 0) {
            if (!JSON_NODE_HOLDS_OBJECT(v)) {
                qmp_error(errp,
                          "QMP input member 'arguments' must be an object");
                return false;
            }
        } else if (strcmp(key, "id") != 0) {
            qmp_error(errp, "QMP input member '%s' is unexpected", key);
            return false;
        }
    }
    if (!json_object_has_member(req, "execute")) {
        qmp_error(errp, "QMP input lacks member 'execute'");
        return false;
    }
    return true;
}

/* qmp_capabilities' "enable": the schema allows only "oob", which snapnbd
 * does not offer (see snapnbd(1)). */
static bool negotiate(QmpClient *c, const QmpQmpCapabilitiesArgs *a,
                      GError **errp)
{
    if (a->has_enable && a->enable->len > 0) {
        qmp_error(errp, "Capability 'oob' not available");
        return false;
    }
    if (c->negotiated) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_COMMAND_NOT_FOUND,
                    "Capabilities negotiation is already complete, command "
                    "ignored");
        return false;
    }
    g_mutex_lock(&qmp_lock);
    c->negotiated = true;
    g_mutex_unlock(&qmp_lock);
    return true;
}

/* A client's arguments, checked against the schema (server/qmp-schema.json)
 * as QEMU's generated visitors check them; every registered command is
 * declared there (the generated decoders register them). */
static bool check_args(const QmpCommand *cmd, JsonObject *args, GError **errp)
{
    const QmpSchemaEntry *entry = qmp_schema_command(cmd->name);

    return !entry || qmp_schema_check_args(entry, args, errp);
}

/* The nodes the running command looked up (qmp_find_node), on the thread
 * that runs it; commands may nest (the command line's run one each). */
static __thread GPtrArray *command_nodes;
static __thread int command_depth;
static __thread bool monitor_command; /* run_command is running one */

BlockNode *qmp_find_node(const char *name)
{
    BlockNode *bs = bdrv_find_node_ref(name);

    if (!bs)
        return NULL;
    if (!command_nodes)
        command_nodes =
            g_ptr_array_new_with_free_func((GDestroyNotify)bdrv_unref);
    g_ptr_array_add(command_nodes, bs);
    return bs;
}

static JsonNode *run_handler(QmpCommand *cmd, JsonObject *args,
                             GError **errp)
{
    JsonNode *ret;

    command_depth++;
    ret = cmd->fn(args, errp);
    if (--command_depth == 0)
        g_clear_pointer(&command_nodes, g_ptr_array_unref);
    return ret;
}

JsonNode *qmp_execute(const char *name, JsonObject *args, GError **errp)
{
    QmpCommand *cmd = find_command(name);
    GError *err = NULL;
    JsonNode *ret;

    if (!cmd) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_COMMAND_NOT_FOUND,
                    "The command %s has not been found", name);
        return NULL;
    }
    if (!check_args(cmd, args, errp))
        return NULL;
    ret = run_handler(cmd, args, &err);
    if (err) {
        if (ret)
            json_node_unref(ret);
        g_propagate_error(errp, err);
        return NULL;
    }
    return ret ? ret : node_take_object(json_object_new());
}

bool qmp_from_monitor(void)
{
    return monitor_command;
}

static JsonNode *run_command(QmpClient *c, const char *name, JsonObject *args,
                             GError **errp)
{
    bool caps = strcmp(name, "qmp_capabilities") == 0;
    g_auto(QmpQmpCapabilitiesArgs) caps_args = { 0 };

    if (!c->negotiated && !caps) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_COMMAND_NOT_FOUND,
                    "Expecting capabilities negotiation with "
                    "'qmp_capabilities'");
        return NULL;
    }
    if (!caps) {
        JsonNode *ret;

        monitor_command = true;
        ret = qmp_execute(name, args, errp);
        monitor_command = false;
        return ret;
    }
    if (!check_args(find_command(name), args, errp) ||
        !qmp_decode_qmp_capabilities_args(args, &caps_args, errp) ||
        !negotiate(c, &caps_args, errp))
        return NULL;
    return node_take_object(json_object_new());
}

static void handle_value(JsonNode *req, const char *parse_err, void *opaque)
{
    QmpClient *c = opaque;
    g_autoptr(GError) err = NULL;
    g_autoptr(JsonObject) no_args = json_object_new();
    JsonNode *id = NULL, *ret = NULL;

    if (g_atomic_int_get(&input_stopped)) { /* read with a quit before it */
        if (req)
            json_node_unref(req);
        return;
    }
    if (parse_err) {
        qmp_error(&err, "%s", parse_err);
    } else if (!JSON_NODE_HOLDS_OBJECT(req)) {
        qmp_error(&err, "QMP input must be a JSON object");
    } else {
        JsonObject *r = json_node_get_object(req);
        id = json_object_get_member(r, "id");
        if (check_request(r, &err)) {
            JsonObject *args = json_object_has_member(r, "arguments")
                ? json_object_get_object_member(r, "arguments") : no_args;
            ret = run_command(c, json_object_get_string_member(r, "execute"),
                              args, &err);
        }
    }
    send_response(c, ret, err, id);
    if (req)
        json_node_unref(req);
}

/* --- sockets ------------------------------------------------------------- */

static void client_free(QmpClient *c)
{
    if (!c->stdio) /* stdin and stdout stay: another open must not get 0/1 */
        close(c->fd);
    qmp_json_streamer_free(c->json);
    g_string_free(c->out, TRUE);
    g_free(c);
}

static void client_add_fds(int fd, int out_fd, bool stdio)
{
    QmpClient *c = g_new0(QmpClient, 1);

    if (!stdio)
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    c->fd = fd;
    c->out_fd = out_fd;
    c->stdio = stdio;
    c->out = g_string_new(NULL);
    c->json = qmp_json_streamer_new(handle_value, c);
    send_greeting(c);
    g_mutex_lock(&qmp_lock);
    if (!clients)
        clients = g_ptr_array_new();
    g_ptr_array_add(clients, c);
    g_mutex_unlock(&qmp_lock);
}

static void client_add(int fd)
{
    client_add_fds(fd, fd, false);
}

/* Called when poll() says stdin is readable (or at its end), so read()
 * does not block, and stdin's flags stay as they are. */
static void client_read(QmpClient *c)
{
    char buf[65536];
    ssize_t n = c->stdio ? read(c->fd, buf, sizeof(buf))
                         : recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);

    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0 && c->stdio) {
        c->input_done = true;
        return;
    }
    if (n <= 0) {
        g_mutex_lock(&qmp_lock);
        c->dead = true;
        g_mutex_unlock(&qmp_lock);
        return;
    }
    qmp_json_streamer_feed(c->json, buf, n);
}

/* Drops dead clients; only the QMP thread removes clients. */
static void reap_clients(void)
{
    g_autoptr(GPtrArray) dead = g_ptr_array_new();

    g_mutex_lock(&qmp_lock);
    for (guint i = 0; clients && i < clients->len;) {
        QmpClient *c = g_ptr_array_index(clients, i);
        if (c->dead) {
            g_ptr_array_add(dead, c);
            g_ptr_array_remove_index(clients, i);
        } else {
            i++;
        }
    }
    g_mutex_unlock(&qmp_lock);
    for (guint i = 0; i < dead->len; i++)
        client_free(g_ptr_array_index(dead, i));
}

/* Polls the wake pipe, the listeners and the clients (for output only
 * when some is queued; a stdio client's input and output are two fds).
 * @owners gets the client of each input fd (NULL for the others): only
 * this thread frees clients, so the pointers stay valid.  Returns the
 * number of fds. */
static guint fill_pollfds(GArray *fds, GPtrArray *owners)
{
    struct pollfd p = { wake_pipe[0], POLLIN, 0 };

    g_array_set_size(fds, 0);
    g_ptr_array_set_size(owners, 0);
    g_array_append_val(fds, p);
    g_ptr_array_add(owners, NULL);
    for (guint i = 0; i < listeners->len; i++) {
        p.fd = ((QmpListener *)g_ptr_array_index(listeners, i))->fd;
        g_array_append_val(fds, p);
        g_ptr_array_add(owners, NULL);
    }
    g_mutex_lock(&qmp_lock);
    for (guint i = 0; clients && i < clients->len; i++) {
        QmpClient *c = g_ptr_array_index(clients, i);
        short out = c->out->len ? POLLOUT : 0;
        /* input no one reads must not wake poll() (qmp_stop_input) */
        bool reading = !c->input_done && !g_atomic_int_get(&input_stopped);

        if (reading) {
            p.fd = c->fd;
            p.events = POLLIN | (c->out_fd == c->fd ? out : 0);
            g_array_append_val(fds, p);
            g_ptr_array_add(owners, c);
        }
        if (out && (c->out_fd != c->fd || !reading)) {
            p.fd = c->out_fd;
            p.events = out;
            g_array_append_val(fds, p);
            g_ptr_array_add(owners, NULL); /* flushed below anyway */
        }
    }
    g_mutex_unlock(&qmp_lock);
    return fds->len;
}

static void serve_once(GArray *fds, GPtrArray *owners)
{
    guint nl = listeners->len, n = fill_pollfds(fds, owners);
    struct pollfd *p = (struct pollfd *)fds->data;

    if (poll(p, n, -1) < 0)
        return;
    if (p[0].revents) {
        char buf[256];
        while (read(wake_pipe[0], buf, sizeof(buf)) == sizeof(buf)) {
        }
    }
    for (guint i = 0; i < nl; i++) {
        if (p[1 + i].revents) {
            int fd = accept4(p[1 + i].fd, NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0)
                client_add(fd);
        }
    }
    g_mutex_lock(&dispatch_lock);
    for (guint i = 1 + nl; i < n && !g_atomic_int_get(&input_stopped); i++) {
        QmpClient *c = g_ptr_array_index(owners, i);
        if (c && (p[i].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)))
            client_read(c);
    }
    g_mutex_unlock(&dispatch_lock);
    g_mutex_lock(&qmp_lock);
    for (guint i = 0; clients && i < clients->len; i++) {
        QmpClient *c = g_ptr_array_index(clients, i);
        g_mutex_unlock(&qmp_lock);
        client_flush(c);
        g_mutex_lock(&qmp_lock);
    }
    g_mutex_unlock(&qmp_lock);
    reap_clients();
}

/* Gives every client up to a second to take its last output. */
static void drain_clients(void)
{
    for (int tries = 0; tries < 100; tries++) {
        bool pending = false;
        g_mutex_lock(&qmp_lock);
        for (guint i = 0; clients && i < clients->len; i++) {
            QmpClient *c = g_ptr_array_index(clients, i);
            g_mutex_unlock(&qmp_lock);
            client_flush(c);
            g_mutex_lock(&qmp_lock);
            pending |= c->out->len > 0 && !c->dead;
        }
        g_mutex_unlock(&qmp_lock);
        if (!pending)
            break;
        g_usleep(10000);
    }
}

static gpointer qmp_thread_main(gpointer opaque)
{
    g_autoptr(GArray) fds = g_array_new(FALSE, FALSE, sizeof(struct pollfd));
    g_autoptr(GPtrArray) owners = g_ptr_array_new();

    while (!g_atomic_int_get(&stopping))
        serve_once(fds, owners);
    drain_clients();
    return NULL;
}

static bool parse_flag(const char *v, bool *out)
{
    if (!v || !strcmp(v, "on") || !strcmp(v, "yes") || !strcmp(v, "true")) {
        *out = true;
        return true;
    }
    if (!strcmp(v, "off") || !strcmp(v, "no") || !strcmp(v, "false")) {
        *out = false;
        return true;
    }
    return false;
}

/* --qmp "unix:PATH,server[=on][,wait=off|,nowait]" (--chardev is
 * qmp-chardev.c's) */
static bool parse_spec(const char *spec, char **path, bool *server,
                       bool *wait, GError **errp)
{
    g_auto(GStrv) parts = g_strsplit(spec, ",", -1);

    *server = false;
    *wait = true;
    if (!g_str_has_prefix(parts[0], "unix:")) {
        qmp_error(errp, "QMP socket '%s': only unix:PATH,server is "
                  "supported", spec);
        return false;
    }
    *path = g_strdup(parts[0] + 5);
    for (char **p = parts + 1; *p; p++) {
        char *eq = strchr(*p, '=');
        g_autofree char *key = g_strndup(*p, eq ? (gsize)(eq - *p)
                                                : strlen(*p));
        const char *val = eq ? eq + 1 : NULL;
        bool ok = true;
        if (!strcmp(key, "server"))
            ok = parse_flag(val, server);
        else if (!strcmp(key, "wait"))
            ok = parse_flag(val, wait);
        else if (!strcmp(key, "nowait") && !val)
            *wait = false;
        else
            ok = false;
        if (!ok) {
            qmp_error(errp, "QMP socket '%s': invalid option '%s'", spec, *p);
            return false;
        }
    }
    if (!**path || !*server) {
        qmp_error(errp, "QMP socket '%s': a unix socket path and 'server' "
                  "are required", spec);
        return false;
    }
    return true;
}

/* QEMU's wait=on: the first client is awaited before anything else
 * starts, but SIGTERM/SIGINT (blocked in every thread, read later from the
 * main thread's signalfd) must still stop the server: the wait ends when
 * one is pending, and the main thread then shuts down as usual. */
static int accept_or_stop_signal(int listen_fd)
{
    struct pollfd pfd = { listen_fd, POLLIN, 0 };
    sigset_t pending;

    for (;;) {
        sigpending(&pending);
        if (sigismember(&pending, SIGTERM) || sigismember(&pending, SIGINT))
            return -1;
        if (poll(&pfd, 1, 100) > 0)
            return accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
    }
}

bool qmp_add_listener(const char *spec, GError **errp)
{
    g_autofree char *path = NULL;
    bool server, wait;
    int fd;

    if (!parse_spec(spec, &path, &server, &wait, errp))
        return false;
    fd = nbd_listen_unix(path, errp);
    if (fd < 0)
        return false;
    qmp_add_listener_fd(fd, g_steal_pointer(&path), wait);
    return true;
}

void qmp_add_listener_fd(int fd, char *path, bool wait)
{
    QmpListener *l = g_new0(QmpListener, 1);

    l->fd = fd;
    l->path = path;
    if (!listeners)
        listeners = g_ptr_array_new();
    g_ptr_array_add(listeners, l);
    if (wait) {
        /* QEMU's wait=on: start serving only once a client is there */
        fprintf(stderr, "snapnbd: waiting for QMP connection on %s\n",
                l->path);
        fd = accept_or_stop_signal(l->fd);
        if (fd >= 0)
            client_add(fd);
    }
}

void qmp_add_stdio_client(void)
{
    client_add_fds(STDIN_FILENO, STDOUT_FILENO, true);
}

bool qmp_start(GError **errp)
{
    if ((!listeners && !clients) || qmp_thread)
        return true;
    if (!listeners)
        listeners = g_ptr_array_new();
    if (pipe2(wake_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
        qmp_error(errp, "Cannot create a pipe: %s", g_strerror(errno));
        return false;
    }
    qmp_thread = g_thread_try_new("qmp", qmp_thread_main, NULL, errp);
    return qmp_thread != NULL;
}

void qmp_stop(void)
{
    GPtrArray *gone;

    if (qmp_thread) {
        g_atomic_int_set(&stopping, 1);
        g_mutex_lock(&qmp_lock);
        wake_locked();
        g_mutex_unlock(&qmp_lock);
        g_thread_join(qmp_thread);
        qmp_thread = NULL;
    }
    /* jobs may still emit events: they must find no client and no pipe */
    g_mutex_lock(&qmp_lock);
    gone = g_steal_pointer(&clients);
    for (int i = 0; i < 2; i++) {
        if (wake_pipe[i] >= 0)
            close(wake_pipe[i]);
        wake_pipe[i] = -1;
    }
    g_mutex_unlock(&qmp_lock);
    for (guint i = 0; gone && i < gone->len; i++)
        client_free(g_ptr_array_index(gone, i));
    if (gone)
        g_ptr_array_unref(gone);
    for (guint i = 0; listeners && i < listeners->len; i++) {
        QmpListener *l = g_ptr_array_index(listeners, i);
        close(l->fd);
        unlink(l->path);
        g_free(l->path);
        g_free(l);
    }
    g_clear_pointer(&listeners, g_ptr_array_unref);
}

/* --- core commands --------------------------------------------------------- */

static JsonNode *cmd_query_version(GError **errp)
{
    return version_info();
}

static JsonNode *cmd_query_commands(GError **errp)
{
    JsonArray *arr = json_array_new();
    JsonNode *n = json_node_new(JSON_NODE_ARRAY);

    g_mutex_lock(&registry_lock);
    for (guint i = 0; i < commands->len; i++) {
        JsonObject *o = json_object_new();
        json_object_set_string_member(
            o, "name", ((QmpCommand *)g_ptr_array_index(commands, i))->name);
        json_array_add_object_element(arr, o);
    }
    g_mutex_unlock(&registry_lock);
    json_node_take_array(n, arr);
    return n;
}

static JsonNode *cmd_query_qmp_schema(GError **errp)
{
    return qmp_schema_info();
}

/* Placeholder: qmp_capabilities runs in dispatch, which knows the client. */
static JsonNode *cmd_qmp_capabilities(const QmpQmpCapabilitiesArgs *a,
                                      GError **errp)
{
    return NULL;
}

/* The main thread reads SIGTERM from a signalfd and shuts down cleanly;
 * qmp_stop() then flushes this command's reply before the process exits. */
/* The hook closes what the daemon's way out closes before its monitors
 * go, so that quit answers after those events, as in qemu-storage-daemon
 * (whose reply waits for the main loop, which is closing them). */
static JsonNode *cmd_quit(GError **errp)
{
    if (quit_hook)
        quit_hook();
    kill(getpid(), SIGTERM);
    return NULL;
}

void qmp_set_quit_hook(void (*hook)(void))
{
    quit_hook = hook;
}

void qmp_stop_input(void)
{
    g_atomic_int_set(&input_stopped, 1);
    if (qmp_thread && g_thread_self() != qmp_thread) {
        /* a command in progress finishes first */
        g_mutex_lock(&dispatch_lock);
        g_mutex_unlock(&dispatch_lock);
    }
}

/* --- transaction --------------------------------------------------------- */

typedef struct TxAction {
    const QmpTransactionOps *ops;
    const QmpTransactionAction *action;
    void *state;
} TxAction;

static const char *tx_completion_mode = "individual";

static unsigned tx_serial; /* the QMP thread's: transactions so far */

unsigned qmp_transaction_serial(void)
{
    return tx_serial;
}

const char *qmp_transaction_completion_mode(void)
{
    return tx_completion_mode;
}

/* One element of "actions": its registered operations. */
static bool tx_find_action(const QmpTransactionAction *action, TxAction *a,
                           GError **errp)
{
    const char *type = qmp_transaction_action_kind_str[action->type];

    a->ops = find_action(type);
    if (!a->ops) {
        /* declared in the schema, but nothing registered it */
        qmp_error(errp, "Parameter 'type' does not accept value '%s'", type);
        return false;
    }
    a->action = action;
    return true;
}

/* Prepares every action in order; then commits them all, or, when one
 * fails, aborts those already prepared, newest first; then cleans up. */
static void tx_run(TxAction *acts, guint n, GError **errp)
{
    guint prepared = 0;
    bool ok = true;

    while (ok && prepared < n) {
        TxAction *a = &acts[prepared];
        ok = a->ops->prepare(a->action, &a->state, errp);
        prepared += ok;
    }
    for (guint i = 0; ok && i < n; i++) {
        if (acts[i].ops->commit)
            acts[i].ops->commit(acts[i].state);
    }
    for (guint i = prepared; !ok && i-- > 0;) {
        if (acts[i].ops->abort)
            acts[i].ops->abort(acts[i].state);
    }
    for (guint i = 0; i < prepared; i++) {
        if (acts[i].ops->clean)
            acts[i].ops->clean(acts[i].state);
    }
}

static JsonNode *cmd_transaction(const QmpTransactionArgs *args,
                                 GError **errp)
{
    guint n = args->actions->len;
    g_autofree TxAction *acts = g_new0(TxAction, n + 1);
    BdrvDrain *drain;

    tx_completion_mode =
        args->has_properties && args->properties->has_completion_mode &&
        args->properties->completion_mode ==
            QMP_ACTION_COMPLETION_MODE_GROUPED ? "grouped" : "individual";
    for (guint i = 0; i < n; i++) {
        if (!tx_find_action(g_ptr_array_index(args->actions, i), &acts[i],
                            errp))
            return NULL;
    }
    /* All actions at one point in time: no request of any user (NBD
     * clients, jobs) runs between them, as in QEMU. */
    drain = bdrv_drain_all_begin();
    tx_serial++;
    tx_run(acts, n, errp);
    bdrv_drained_end(drain);
    return NULL;
}

/* QEMU's "abort" action: fails the whole transaction (for testing). */
static bool abort_prepare(const QmpTransactionAction *action, void **state,
                          GError **errp)
{
    qmp_error(errp, "Transaction aborted using Abort action");
    return false;
}

static const QmpTransactionOps abort_ops = {
    .prepare = abort_prepare,
};

void qmp_register_core_commands(void)
{
    qmp_register_typed_qmp_capabilities(cmd_qmp_capabilities);
    qmp_register_typed_query_version(cmd_query_version);
    qmp_register_typed_query_commands(cmd_query_commands);
    qmp_register_typed_query_qmp_schema(cmd_query_qmp_schema);
    qmp_register_typed_quit(cmd_quit);
    qmp_register_typed_transaction(cmd_transaction);
    qmp_register_transaction_action("abort", &abort_ops);
}

void qmp_register_all(void)
{
    static bool done;

    if (done)
        return;
    done = true;
    qmp_register_core_commands();
    qmp_register_block_commands();
    qmp_register_nbd_commands();
    qmp_register_job_commands();
    qmp_register_bitmap_commands();
    qmp_register_create_commands();
    qmp_register_debug_commands();
    qmp_register_object_commands();
    qmp_register_snapshot_commands();
    qmp_register_image_commands();
    qmp_register_iothread_commands();
    qmp_register_graph_commands();
    qmp_register_chain_commands();
}
