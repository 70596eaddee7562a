/*
 * qmp-nbd.c - nbd-server-start, nbd-server-stop, block-export-add,
 * block-export-del, query-block-exports and the legacy nbd-server-add and
 * nbd-server-remove; each handler receives its typed arguments
 * (server/qmp-types-gen.h), checked against the schema.
 *
 * The NBD server started over QMP is a listener of the NBD server
 * (listen.c), the same one the command line runs.
 * Exports go into the same export table (export.c) that the handshake
 * looks names up in.  An export added here is also entered, under its QMP
 * id, in qmp_exports; the NbdExport's on_free hook (run by whichever thread
 * drops the last reference: the QMP thread, or the last client leaving)
 * removes the entry and emits BLOCK_EXPORT_DELETED.  qmp_exports_lock
 * guards qmp_exports (it is taken before connection.c's clients_lock when
 * an export's clients are cut); everything else here runs on the QMP
 * thread (or on the main thread at exit, once the QMP thread is gone).
 */
#include "qmp-int.h"
#include "server/qmp/qmp-types-gen.h"

#include "server/nbd/export.h"
#include "server/nbd/listen.h"
#include "server/nbd/nbd-server.h"
#include "server/iothread.h"
#include "server/objects.h"
#include "server/nbd/tls.h"

#include <errno.h>
#include <string.h>

typedef struct NbdServer {
    NbdListener *listener;
} NbdServer;

typedef struct QmpExport {
    char *id;
    char *name;           /* NBD export name */
    char *node_name;
    bool shutting_down;
    NbdExport *exp;       /* borrowed: valid until on_free */
} QmpExport;

static NbdServer *server;
static bool cli_server;           /* main.c serves NBD itself */

static GMutex qmp_exports_lock;
static GList *qmp_exports;        /* of QmpExport *, newest first */

void qmp_nbd_set_cli_server(bool running)
{
    cli_server = running;
}

/* --- nbd-server-start / nbd-server-stop ----------------------------------- */

/* addr, a SocketAddressLegacy ({"type", "data": {...}}) as QEMU's
 * nbd-server-start takes it (--nbd-server's flat SocketAddress is turned
 * into one by qmp-cli.c). */
static int listen_addr(const QmpSocketAddressLegacy *addr, char **unix_path,
                       GError **errp)
{
    const char *host;
    int fd;

    switch (addr->type) {
    case QMP_SOCKET_ADDRESS_TYPE_UNIX:
        *unix_path = g_strdup(addr->u.q_unix->data->path);
        return nbd_listen_unix(*unix_path, errp);
    case QMP_SOCKET_ADDRESS_TYPE_INET:
        host = addr->u.inet->data->host;
        return nbd_listen_tcp(*host ? host : NULL, addr->u.inet->data->port,
                              errp);
    case QMP_SOCKET_ADDRESS_TYPE_VSOCK:
        return nbd_listen_vsock(addr->u.vsock->data->cid,
                                addr->u.vsock->data->port, errp);
    case QMP_SOCKET_ADDRESS_TYPE_FD:
        /* an inherited fd's number on the command line; over QMP a name
         * given with getfd, which qemu-storage-daemon refuses too */
        if (qmp_from_monitor()) {
            qmp_error(errp, "only QEMU supports file descriptor passing");
            return -1;
        }
        fd = qmp_socket_get_fd(addr->u.fd->data->str, errp);
        if (fd < 0 || nbd_listen_fd(fd, errp) < 0)
            return -1;
        /* QEMU removes a unix socket's file when it closes the socket */
        *unix_path = nbd_socket_unix_path(fd);
        return fd;
    default:
        qmp_error(errp, "NBD server address type '%s' is not supported",
                  qmp_socket_address_type_str[addr->type]);
        return -1;
    }
}

static void server_free(NbdServer *s)
{
    nbd_listener_stop(s->listener);
    g_free(s);
}

/* Listens on @addr and starts accepting; NULL + errp. */
static NbdServer *server_new(const QmpSocketAddressLegacy *addr, int64_t max,
                             GError **errp)
{
    g_autofree char *unix_path = NULL;
    int fd = listen_addr(addr, &unix_path, errp);
    NbdListener *l = fd >= 0 ? nbd_listener_start(fd, unix_path, max, errp)
                             : NULL;
    NbdServer *s;

    if (!l)
        return NULL;
    s = g_new0(NbdServer, 1);
    s->listener = l;
    return s;
}

static JsonNode *cmd_nbd_server_start(const QmpNbdServerStartArgs *a,
                                      GError **errp)
{
    if (server || cli_server) {
        qmp_error(errp, "NBD server already running");
        return NULL;
    }
    /* the credentials first: no client may get in without them */
    if (!tls_select(a->has_tls_creds ? a->tls_creds : NULL,
                    a->has_tls_authz ? a->tls_authz : NULL, errp))
        return NULL;
    server = server_new(a->addr, a->has_max_connections ? a->max_connections
                                                        : 0, errp);
    if (!server)
        tls_select(NULL, NULL, NULL);
    return NULL;
}

static QmpExport *find_export(const char *id)
{
    for (GList *l = qmp_exports; l; l = l->next) {
        QmpExport *e = l->data;
        if (strcmp(e->id, id) == 0)
            return e;
    }
    return NULL;
}

/* Ends an export: no new client finds it, and with @hard its clients are
 * cut.  It goes (and BLOCK_EXPORT_DELETED is emitted) once its last client
 * has gone.  Called with qmp_exports_lock held. */
static void export_shutdown(QmpExport *e, bool hard)
{
    e->shutting_down = true;
    if (hard)
        nbd_server_abort_export_clients(e->exp);
    /* drops the table's reference: may free the export, whose on_free
     * takes qmp_exports_lock, so not under it */
    g_mutex_unlock(&qmp_exports_lock);
    nbd_export_remove(e->name);
    g_mutex_lock(&qmp_exports_lock);
}

/* Waits (up to 5 s, cutting clients again and again) until every QMP
 * export is gone. */
static void wait_exports_gone(void)
{
    for (int i = 0; i < 500; i++) {
        g_mutex_lock(&qmp_exports_lock);
        for (GList *l = qmp_exports; l; l = l->next)
            nbd_server_abort_export_clients(((QmpExport *)l->data)->exp);
        bool empty = qmp_exports == NULL;
        g_mutex_unlock(&qmp_exports_lock);
        if (empty)
            return;
        g_usleep(10000);
    }
}

/* Shuts every QMP export down hard and waits until they are gone.  An
 * entry is only touched while it is in the list under qmp_exports_lock: once
 * on_free has taken it out, it may be freed at any time. */
static void remove_all_exports(void)
{
    g_mutex_lock(&qmp_exports_lock);
    for (;;) {
        QmpExport *live = NULL;
        for (GList *l = qmp_exports; l && !live; l = l->next) {
            if (!((QmpExport *)l->data)->shutting_down)
                live = l->data;
        }
        if (!live)
            break;
        export_shutdown(live, true);
    }
    g_mutex_unlock(&qmp_exports_lock);
    wait_exports_gone();
}

static void server_stop(void)
{
    remove_all_exports();
    server_free(server);
    server = NULL;
    /* clients still in the handshake */
    nbd_server_abort_export_clients(NULL);
    tls_select(NULL, NULL, NULL);
}

static JsonNode *cmd_nbd_server_stop(GError **errp)
{
    if (!server) {
        qmp_error(errp, cli_server ? "The NBD server of the command line "
                                     "cannot be stopped"
                                   : "NBD server not running");
        return NULL;
    }
    server_stop();
    return NULL;
}

/* --- block-export-add ------------------------------------------------------ */

static void export_on_free(void *opaque)
{
    QmpExport *e = opaque;
    JsonObject *data = json_object_new();

    g_mutex_lock(&qmp_exports_lock);
    qmp_exports = g_list_remove(qmp_exports, e);
    g_mutex_unlock(&qmp_exports_lock);
    json_object_set_string_member(data, "id", e->id);
    qmp_emit_event("BLOCK_EXPORT_DELETED", data);
    g_free(e->id);
    g_free(e->name);
    g_free(e->node_name);
    g_free(e);
}

/* BlockExportOptions for type=nbd, with the defaults filled in. */
typedef struct ExportArgs {
    const char *id, *node_name, *name, *description;
    const char *iothread;
    GPtrArray *iothreads; /* x-iothreads: of char *, or NULL */
    NbdExportPriority priority; /* x-priority, or auto */
    int64_t background_rate;    /* x-background-rate */
    bool writable, writethrough, allocation_depth;
    GPtrArray *bitmaps;   /* of QmpBlockDirtyBitmapOrStr *, or NULL */
    BlockNode *node;
} ExportArgs;

static bool export_args(const QmpBlockExportOptions *o, ExportArgs *a,
                        GError **errp)
{
    const QmpBlockExportOptionsNbd *nbd = o->u.nbd;

    if (o->type != QMP_BLOCK_EXPORT_TYPE_NBD) {
        qmp_error(errp, "Export type '%s' is not supported",
                  qmp_block_export_type_str[o->type]);
        return false;
    }
    a->id = o->id;
    a->node_name = o->node_name;
    a->writable = o->has_writable && o->writable;
    a->writethrough = o->has_writethrough && o->writethrough;
    a->iothread = o->has_iothread ? o->iothread : NULL;
    a->iothreads = o->has_x_iothreads ? o->x_iothreads : NULL;
    if (o->has_x_priority)
        a->priority = o->x_priority == QMP_X_EXPORT_PRIORITY_BACKGROUND
                      ? NBD_EXPORT_PRIORITY_BACKGROUND
                      : NBD_EXPORT_PRIORITY_NORMAL;
    a->background_rate = o->has_x_background_rate ? o->x_background_rate
                                                  : NBD_BACKGROUND_READ_RATE;
    if (a->background_rate < 0) {
        qmp_error(errp, "Parameter 'x-background-rate' expects a "
                  "non-negative rate");
        return false;
    }
    a->name = nbd && nbd->has_name ? nbd->name : o->node_name;
    a->description = nbd && nbd->has_description ? nbd->description : NULL;
    a->allocation_depth = nbd && nbd->has_allocation_depth &&
                          nbd->allocation_depth;
    a->bitmaps = nbd && nbd->has_bitmaps ? nbd->bitmaps : NULL;
    return true;
}

static bool offer_named_bitmap(NbdExport *exp, const char *node,
                               const char *name, GError **errp)
{
    BlockNode *bs = qmp_find_node(node);
    BdrvDirtyBitmap *bm = bs ? bdrv_find_dirty_bitmap(bs, name) : NULL;

    if (!bs)
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_FOUND,
                    "Node '%s' not found", node);
    else if (!bm)
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_FOUND,
                    "Dirty bitmap '%s' not found", name);
    return bm && nbd_export_offer_bitmap(exp, bm, errp);
}

/* Offers the listed bitmaps (a name on the export's node, or
 * {"node", "name"}) on @exp. */
static bool add_bitmaps(NbdExport *exp, GPtrArray *bitmaps, GError **errp)
{
    GError *err = NULL;

    for (guint i = 0; bitmaps && i < bitmaps->len; i++) {
        const QmpBlockDirtyBitmapOrStr *b = g_ptr_array_index(bitmaps, i);
        bool ok = b->kind == QMP_BLOCK_DIRTY_BITMAP_OR_STR_KIND_LOCAL
            ? nbd_export_add_bitmap(exp, b->u.local, &err)
            : offer_named_bitmap(exp, b->u.external->node,
                                 b->u.external->name, &err);
        if (!ok) {
            qmp_error(errp, "%s", err->message);
            g_error_free(err);
            return false;
        }
    }
    return true;
}

/* x-iothreads: each must exist, and it excludes iothread. */
static bool check_iothread_list(const ExportArgs *a, GError **errp)
{
    if (!a->iothreads)
        return true;
    if (a->iothread) {
        qmp_error(errp, "iothread and x-iothreads cannot be used together");
        return false;
    }
    if (a->iothreads->len == 0 ||
        a->iothreads->len > NBD_EXPORT_MAX_IOTHREADS) {
        qmp_error(errp, "x-iothreads must name 1 to %d iothreads",
                  NBD_EXPORT_MAX_IOTHREADS);
        return false;
    }
    for (guint i = 0; i < a->iothreads->len; i++) {
        const char *id = a->iothreads->pdata[i];

        if (!iothread_exists(id)) {
            qmp_error(errp, "iothread \"%s\" not found", id);
            return false;
        }
    }
    return true;
}

/* Connections take the CPU affinity of the export's iothreads, in turn. */
static void bind_iothreads(NbdExport *exp, const ExportArgs *a)
{
    if (a->iothread)
        exp->iothread_tids[exp->iothread_count++] =
            iothread_thread_id(a->iothread);
    for (guint i = 0; a->iothreads && i < a->iothreads->len; i++)
        exp->iothread_tids[exp->iothread_count++] =
            iothread_thread_id(a->iothreads->pdata[i]);
}

static bool check_export(ExportArgs *a, GError **errp)
{
    NbdExport *same_name;
    bool in_use;

    if (!bdrv_id_wellformed(a->id)) {
        qmp_error(errp, "Invalid block export id");
        return false;
    }
    g_mutex_lock(&qmp_exports_lock);
    in_use = find_export(a->id) != NULL;
    g_mutex_unlock(&qmp_exports_lock);
    if (in_use) {
        qmp_error(errp, "Block export id '%s' is already in use", a->id);
        return false;
    }
    a->node = qmp_find_node(a->node_name);
    if (!a->node) {
        qmp_error(errp, "Cannot find device='' nor node-name='%s'",
                  a->node_name);
        return false;
    }
    /* The object must exist, as in QEMU (its thread places connections). */
    if (a->iothread && !iothread_exists(a->iothread)) {
        qmp_error(errp, "iothread \"%s\" not found", a->iothread);
        return false;
    }
    if (!check_iothread_list(a, errp))
        return false;
    if (!server && !cli_server) {
        qmp_error(errp, "NBD server not running");
        return false;
    }
    same_name = nbd_export_lookup(a->name);
    nbd_export_unref(same_name);
    if (same_name) {
        qmp_error(errp, "NBD server already has export named '%s'", a->name);
        return false;
    }
    return !(a->writable &&
             bdrv_op_is_blocked(a->node, BDRV_OP_EXPORT_WRITABLE, errp));
}

static JsonNode *cmd_block_export_add(const QmpBlockExportOptions *o,
                                      GError **errp)
{
    ExportArgs a = { 0 };
    QmpExport *e;
    NbdExport *exp;

    if (!export_args(o, &a, errp) || !check_export(&a, errp))
        return NULL;
    exp = nbd_export_add(a.name, a.description, a.node, !a.writable,
                         a.writethrough, errp);
    if (!exp)
        return NULL;
    if (!add_bitmaps(exp, a.bitmaps, errp)) {
        nbd_export_remove(a.name);
        return NULL;
    }
    /* qemu-storage-daemon 7.2 advertises multi-conn on every export, also
     * writable ones, unless the server takes a single client
     * (max-connections=1); the command line's server (image mode) has its
     * own --shared rule, and its QMP exports do not advertise it. */
    exp->multi_conn = server &&
                     nbd_listener_max_clients(server->listener) != 1;
    exp->allocation_depth = a.allocation_depth;
    exp->priority = a.priority;
    nbd_pace_set_rate(&exp->pace, a.background_rate);
    bind_iothreads(exp, &a);
    e = g_new0(QmpExport, 1);
    e->id = g_strdup(a.id);
    e->name = g_strdup(a.name);
    e->node_name = g_strdup(a.node_name);
    e->exp = exp;
    /* the table holds a reference that only we drop: no client can free
     * the export before the hook is set */
    exp->on_free_opaque = e;
    exp->on_free = export_on_free;
    g_mutex_lock(&qmp_exports_lock);
    qmp_exports = g_list_prepend(qmp_exports, e);
    g_mutex_unlock(&qmp_exports_lock);
    return NULL;
}

/* --- block-export-del / query-block-exports -------------------------------- */

static JsonNode *cmd_block_export_del(const QmpBlockExportDelArgs *a,
                                      GError **errp)
{
    bool hard = a->has_mode && a->mode == QMP_BLOCK_EXPORT_REMOVE_MODE_HARD;
    QmpExport *e;

    g_mutex_lock(&qmp_exports_lock);
    e = find_export(a->id);
    if (!e) {
        qmp_error(errp, "Export '%s' is not found", a->id);
    } else if (e->shutting_down) {
        qmp_error(errp, "Export '%s' is already shutting down", a->id);
    } else if (!hard && g_atomic_int_get(&e->exp->refcnt) > 1) {
        qmp_error(errp, "export '%s' still in use", a->id);
    } else {
        export_shutdown(e, hard);
    }
    g_mutex_unlock(&qmp_exports_lock);
    return NULL;
}

static JsonNode *cmd_query_block_exports(GError **errp)
{
    JsonArray *arr = json_array_new();
    JsonNode *n = json_node_new(JSON_NODE_ARRAY);

    g_mutex_lock(&qmp_exports_lock);
    for (GList *l = qmp_exports; l; l = l->next) {
        QmpExport *e = l->data;
        JsonObject *o = json_object_new();
        /* Where it is now: a mirror or commit may have moved it. */
        json_object_set_string_member(o, "node-name",
                                      e->exp ? bdrv_node_name(
                                                   nbd_export_node(e->exp))
                                             : e->node_name);
        json_object_set_boolean_member(o, "shutting-down", e->shutting_down);
        json_object_set_string_member(o, "type", "nbd");
        json_object_set_string_member(o, "id", e->id);
        json_array_add_object_element(arr, o);
    }
    g_mutex_unlock(&qmp_exports_lock);
    json_node_take_array(n, arr);
    return n;
}

void qmp_nbd_cleanup(void)
{
    if (server)
        server_stop();
    else
        remove_all_exports(); /* added beside the command line's server */
}

/* --- the legacy nbd-server-add / nbd-server-remove -------------------------- */

/* QEMU's qmp_nbd_server_add: block-export-add with the export's id and
 * name both the name (default: the device), a single "bitmap", and a
 * read-only node quietly exported read-only. */
static JsonNode *cmd_nbd_server_add(const QmpNbdServerAddOptions *a,
                                    GError **errp)
{
    const char *name = a->has_name ? a->name : a->device;
    QmpBlockDirtyBitmapOrStr bitmap = {
        .kind = QMP_BLOCK_DIRTY_BITMAP_OR_STR_KIND_LOCAL,
        .u.local = a->bitmap,
    };
    g_autoptr(GPtrArray) bitmaps = g_ptr_array_new();
    QmpBlockExportOptionsNbd nbd = {
        .has_name = true, .name = name,
        .has_description = a->has_description, .description = a->description,
        .has_bitmaps = a->has_bitmap, .bitmaps = bitmaps,
    };
    QmpBlockExportOptions ex = {
        .type = QMP_BLOCK_EXPORT_TYPE_NBD, .id = name,
        .node_name = a->device, .has_writable = true,
        .u.nbd = &nbd,
    };
    BlockNode *bs;

    if (!server && !cli_server) {
        qmp_error(errp, "NBD server not running");
        return NULL;
    }
    bs = qmp_find_node(a->device);
    if (!bs) {
        qmp_error(errp, "Cannot find device='%s' nor node-name='%s'",
                  a->device, a->device);
        return NULL;
    }
    ex.writable = a->has_writable && a->writable && !bdrv_is_read_only(bs);
    g_ptr_array_add(bitmaps, &bitmap);
    return cmd_block_export_add(&ex, errp);
}

static JsonNode *cmd_nbd_server_remove(const QmpNbdServerRemoveArgs *a,
                                       GError **errp)
{
    QmpBlockExportDelArgs del = {
        .id = a->name, .has_mode = a->has_mode, .mode = a->mode,
    };

    return cmd_block_export_del(&del, errp);
}

void qmp_register_nbd_commands(void)
{
    qmp_register_typed_nbd_server_start(cmd_nbd_server_start);
    qmp_register_typed_nbd_server_stop(cmd_nbd_server_stop);
    qmp_register_typed_block_export_add(cmd_block_export_add);
    qmp_register_typed_block_export_del(cmd_block_export_del);
    qmp_register_typed_query_block_exports(cmd_query_block_exports);
    qmp_register_typed_nbd_server_add(cmd_nbd_server_add);
    qmp_register_typed_nbd_server_remove(cmd_nbd_server_remove);
}
