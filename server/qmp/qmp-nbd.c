/*
 * qmp-nbd.c - nbd-server-start, nbd-server-stop, block-export-add,
 * block-export-del, query-block-exports.
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

/* addr as SocketAddressLegacy ({"type", "data": {...}}), which is what
 * QEMU's nbd-server-start takes, or as the flat SocketAddress of
 * --nbd-server ({"type", "path"} / {"type", "host", "port"}). */
/* A string member of an address, named as QEMU names it. */
static const char *addr_str(JsonObject *o, const char *prefix,
                            const char *key, GError **errp)
{
    JsonNode *n = json_object_get_member(o, key);

    if (!n) {
        qmp_error(errp, "Parameter '%s%s' is missing", prefix, key);
        return NULL;
    }
    if (!JSON_NODE_HOLDS_VALUE(n) ||
        json_node_get_value_type(n) != G_TYPE_STRING) {
        qmp_error(errp, "Invalid parameter type for '%s%s', expected: string",
                  prefix, key);
        return NULL;
    }
    return json_node_get_string(n);
}

static int listen_addr(JsonObject *addr, char **unix_path, GError **errp)
{
    static const char *const types[] = { "inet", "unix", "vsock", "fd",
                                         NULL };
    const char *type = addr_str(addr, "addr.", "type", errp);
    JsonNode *dn = json_object_get_member(addr, "data");
    const char *path, *host, *port;

    /* QEMU names a union's discriminator without its path */
    if (!type || !qmp_check_enum("type", type, types, errp))
        return -1;
    if (strcmp(type, "unix") != 0 && strcmp(type, "inet") != 0) {
        qmp_error(errp, "NBD server address type '%s' is not supported",
                  type);
        return -1;
    }
    if (!dn && !json_object_has_member(addr, type[0] == 'u' ? "path"
                                                            : "host")) {
        qmp_error(errp, "Parameter 'addr.data' is missing");
        return -1;
    }
    if (dn && !JSON_NODE_HOLDS_OBJECT(dn)) {
        qmp_error(errp, "Invalid parameter type for 'addr.data', expected: "
                        "object");
        return -1;
    }
    if (dn)
        addr = json_node_get_object(dn);
    if (type[0] == 'u') {
        path = addr_str(addr, dn ? "addr.data." : "addr.", "path", errp);
        if (!path)
            return -1;
        *unix_path = g_strdup(path);
        return nbd_listen_unix(path, errp);
    }
    host = addr_str(addr, dn ? "addr.data." : "addr.", "host", errp);
    port = host ? addr_str(addr, dn ? "addr.data." : "addr.", "port", errp)
                : NULL;
    if (!port)
        return -1;
    return nbd_listen_tcp(*host ? host : NULL, port, errp);
}

static void server_free(NbdServer *s)
{
    nbd_listener_stop(s->listener);
    g_free(s);
}

/* Listens on @addr and starts accepting; NULL + errp. */
static NbdServer *server_new(JsonObject *addr, int64_t max, GError **errp)
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

static JsonNode *cmd_nbd_server_start(JsonObject *args, GError **errp)
{
    JsonNode *addr = json_object_get_member(args, "addr");
    const char *creds = qmp_arg_str(args, "tls-creds", false, errp);
    const char *authz = !*errp ? qmp_arg_str(args, "tls-authz", false, errp)
                               : NULL;
    int64_t max;

    if (*errp || !qmp_arg_int(args, "max-connections", 0, &max, errp))
        return NULL;
    if (max < 0 || max > UINT32_MAX) {
        qmp_error(errp, "Parameter 'max-connections' expects uint32_t");
        return NULL;
    }
    if (!addr || !JSON_NODE_HOLDS_OBJECT(addr)) {
        qmp_error(errp, addr ? "Invalid parameter type for 'addr', expected: "
                               "object" : "Parameter 'addr' is missing");
        return NULL;
    }
    if (server || cli_server) {
        qmp_error(errp, "NBD server already running");
        return NULL;
    }
    /* the credentials first: no client may get in without them */
    if (!tls_select(creds, authz, errp))
        return NULL;
    server = server_new(json_node_get_object(addr), max, errp);
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

static JsonNode *cmd_nbd_server_stop(JsonObject *args, GError **errp)
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

typedef struct ExportArgs {
    const char *id, *node_name, *name, *description;
    const char *iothread;
    bool writable, writethrough, allocation_depth, fixed_iothread;
    BlockNode *node;
} ExportArgs;

/* BlockExportOptions for type=nbd, in QEMU's order of checks. */
static bool parse_export_args(JsonObject *args, ExportArgs *a, GError **errp)
{
    static const char *const types[] = { "nbd", "vhost-user-blk", "fuse",
                                         "vduse-blk", NULL };
    const char *type = qmp_arg_str(args, "type", true, errp);

    if (!type || !qmp_check_enum("type", type, types, errp))
        return false;
    if (strcmp(type, "nbd") != 0) {
        qmp_error(errp, "Export type '%s' is not supported", type);
        return false;
    }
    a->id = qmp_arg_str(args, "id", true, errp);
    a->node_name = a->id ? qmp_arg_str(args, "node-name", true, errp) : NULL;
    if (!a->node_name)
        return false;
    if (!qmp_arg_bool(args, "writable", false, &a->writable, errp) ||
        !qmp_arg_bool(args, "writethrough", false, &a->writethrough, errp) ||
        !qmp_arg_bool(args, "allocation-depth", false, &a->allocation_depth,
                      errp))
        return false;
    if (!qmp_arg_bool(args, "fixed-iothread", false, &a->fixed_iothread,
                      errp))
        return false;
    a->iothread = qmp_arg_str(args, "iothread", false, errp);
    a->name = *errp ? NULL : qmp_arg_str(args, "name", false, errp);
    a->description = *errp ? NULL
                           : qmp_arg_str(args, "description", false, errp);
    if (*errp)
        return false;
    if (!a->name)
        a->name = a->node_name;
    return true;
}

/* One element of "bitmaps": a name, or {"node", "name"} (QEMU's
 * BlockDirtyBitmapOrStr); *node stays NULL for a name. */
static bool bitmap_ref(JsonNode *b, guint i, const char **node,
                       const char **name, GError **errp)
{
    JsonObject *o;

    *node = NULL;
    if (JSON_NODE_HOLDS_VALUE(b) &&
        json_node_get_value_type(b) == G_TYPE_STRING) {
        *name = json_node_get_string(b);
        return true;
    }
    if (!JSON_NODE_HOLDS_OBJECT(b)) {
        qmp_error(errp, "Invalid parameter type for 'bitmaps[%u]', "
                  "expected: BlockDirtyBitmapOrStr", i);
        return false;
    }
    o = json_node_get_object(b);
    if (!qmp_check_members(o, "node,name", errp))
        return false;
    *node = qmp_arg_str(o, "node", true, errp);
    *name = *node ? qmp_arg_str(o, "name", true, errp) : NULL;
    return *name != NULL;
}

static bool check_bitmaps(JsonObject *args, GError **errp)
{
    JsonNode *n = json_object_get_member(args, "bitmaps");
    JsonArray *arr;
    const char *node, *name;

    if (!n)
        return true;
    if (!JSON_NODE_HOLDS_ARRAY(n)) {
        qmp_error(errp, "Invalid parameter type for 'bitmaps', expected: "
                        "array");
        return false;
    }
    arr = json_node_get_array(n);
    for (guint i = 0; i < json_array_get_length(arr); i++)
        if (!bitmap_ref(json_array_get_element(arr, i), i, &node, &name,
                        errp))
            return false;
    return true;
}

static bool offer_named_bitmap(NbdExport *exp, const char *node,
                               const char *name, GError **errp)
{
    BlockNode *bs = bdrv_find_node(node);
    BdrvDirtyBitmap *bm = bs ? bdrv_find_dirty_bitmap(bs, name) : NULL;

    if (!bs)
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_FOUND,
                    "Node '%s' not found", node);
    else if (!bm)
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_FOUND,
                    "Dirty bitmap '%s' not found", name);
    return bm && nbd_export_offer_bitmap(exp, bm, errp);
}

/* Offers the listed bitmaps on @exp (checked by check_bitmaps). */
static bool add_bitmaps(NbdExport *exp, JsonObject *args, GError **errp)
{
    JsonNode *n = json_object_get_member(args, "bitmaps");
    JsonArray *arr = n ? json_node_get_array(n) : NULL;
    const char *node, *name;
    GError *err = NULL;

    for (guint i = 0; arr && i < json_array_get_length(arr); i++) {
        bitmap_ref(json_array_get_element(arr, i), i, &node, &name, NULL);
        if (node ? !offer_named_bitmap(exp, node, name, &err)
                 : !nbd_export_add_bitmap(exp, name, &err)) {
            qmp_error(errp, "%s", err->message);
            g_error_free(err);
            return false;
        }
    }
    return true;
}

static bool check_export(ExportArgs *a, JsonObject *args, GError **errp)
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
    a->node = bdrv_find_node(a->node_name);
    if (!a->node) {
        qmp_error(errp, "Cannot find device='' nor node-name='%s'",
                  a->node_name);
        return false;
    }
    /* An iothread is a name here (objects.c): every export is served by
     * its connections' threads, so a node is never "moved" and
     * fixed-iothread cannot fail; but the object must exist, as in QEMU. */
    if (a->iothread && !iothread_exists(a->iothread)) {
        qmp_error(errp, "iothread \"%s\" not found", a->iothread);
        return false;
    }
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
    if (a->writable &&
        bdrv_op_is_blocked(a->node, BDRV_OP_EXPORT_WRITABLE, errp))
        return false;
    return check_bitmaps(args, errp);
}

static JsonNode *cmd_block_export_add(JsonObject *args, GError **errp)
{
    ExportArgs a = { 0 };
    QmpExport *e;
    NbdExport *exp;

    if (!parse_export_args(args, &a, errp) || !check_export(&a, args, errp))
        return NULL;
    exp = nbd_export_add(a.name, a.description, a.node, !a.writable,
                         a.writethrough, errp);
    if (!exp)
        return NULL;
    if (!add_bitmaps(exp, args, errp)) {
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
    if (a.iothread)
        exp->iothread_tid = iothread_thread_id(a.iothread);
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

static JsonNode *cmd_block_export_del(JsonObject *args, GError **errp)
{
    static const char *const modes[] = { "safe", "hard", NULL };
    const char *id = qmp_arg_str(args, "id", true, errp);
    const char *mode = id ? qmp_arg_str(args, "mode", false, errp) : NULL;
    QmpExport *e;

    if (!id || *errp || !qmp_check_enum("mode", mode, modes, errp))
        return NULL;
    g_mutex_lock(&qmp_exports_lock);
    e = find_export(id);
    if (!e) {
        qmp_error(errp, "Export '%s' is not found", id);
    } else if (e->shutting_down) {
        qmp_error(errp, "Export '%s' is already shutting down", id);
    } else if ((!mode || !strcmp(mode, "safe")) &&
               g_atomic_int_get(&e->exp->refcnt) > 1) {
        qmp_error(errp, "export '%s' still in use", id);
    } else {
        export_shutdown(e, mode && !strcmp(mode, "hard"));
    }
    g_mutex_unlock(&qmp_exports_lock);
    return NULL;
}

static JsonNode *cmd_query_block_exports(JsonObject *args, GError **errp)
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
static JsonNode *cmd_nbd_server_add(JsonObject *args, GError **errp)
{
    g_autoptr(JsonObject) ex = json_object_new();
    const char *device = qmp_arg_str(args, "device", true, errp);
    const char *name = device ? qmp_arg_str(args, "name", false, errp) : NULL;
    const char *bitmap;
    BlockNode *bs;
    bool writable = false;

    if (*errp || !qmp_arg_bool(args, "writable", false, &writable, errp))
        return NULL;
    bitmap = qmp_arg_str(args, "bitmap", false, errp);
    if (*errp)
        return NULL;
    if (!server && !cli_server) {
        qmp_error(errp, "NBD server not running");
        return NULL;
    }
    bs = bdrv_find_node(device);
    if (!bs) {
        qmp_error(errp, "Cannot find device='%s' nor node-name='%s'", device,
                  device);
        return NULL;
    }
    if (bdrv_is_read_only(bs))
        writable = false;
    name = name ? name : device;
    json_object_set_string_member(ex, "type", "nbd");
    json_object_set_string_member(ex, "id", name);
    json_object_set_string_member(ex, "name", name);
    json_object_set_string_member(ex, "node-name", device);
    json_object_set_boolean_member(ex, "writable", writable);
    if (json_object_has_member(args, "description"))
        json_object_set_member(ex, "description", json_node_copy(
                                   json_object_get_member(args,
                                                          "description")));
    if (bitmap) {
        JsonArray *list = json_array_new();
        json_array_add_string_element(list, bitmap);
        json_object_set_array_member(ex, "bitmaps", list);
    }
    return qmp_execute("block-export-add", ex, errp);
}

static JsonNode *cmd_nbd_server_remove(JsonObject *args, GError **errp)
{
    const char *name = qmp_arg_str(args, "name", true, errp);
    g_autoptr(JsonObject) del = json_object_new();

    if (!name)
        return NULL;
    json_object_set_string_member(del, "id", name);
    if (json_object_has_member(args, "mode"))
        json_object_set_member(del, "mode", json_node_copy(
                                   json_object_get_member(args, "mode")));
    return qmp_execute("block-export-del", del, errp);
}

void qmp_register_nbd_commands(void)
{
    qmp_register_command_args("nbd-server-start", cmd_nbd_server_start,
                              "addr,tls-creds,tls-authz,max-connections");
    qmp_register_command_args("nbd-server-stop", cmd_nbd_server_stop, "");
    qmp_register_command_args("block-export-add", cmd_block_export_add,
                              "type,id,node-name,writable,writethrough,"
                              "name,description,bitmaps,allocation-depth,"
                              "iothread,fixed-iothread");
    qmp_register_command_args("block-export-del", cmd_block_export_del,
                              "id,mode");
    qmp_register_command_args("query-block-exports", cmd_query_block_exports,
                              "");
    qmp_register_command_args("nbd-server-add", cmd_nbd_server_add,
                              "device,name,description,writable,bitmap");
    qmp_register_command_args("nbd-server-remove", cmd_nbd_server_remove,
                              "name,mode");
}
