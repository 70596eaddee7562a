/*
 * qmp.h - the QMP control socket (QEMU Machine Protocol), as QEMU speaks it.
 *
 * Commands and transaction actions are registered by the layers that
 * implement them (server/qmp-*.c, jobs); this module owns the sockets, the
 * JSON framing, capabilities negotiation, dispatch and events.
 */
#ifndef SNAPNBD_QMP_H
#define SNAPNBD_QMP_H

#include <stdbool.h>
#include <stdint.h>
#include <json-glib/json-glib.h>

#define QMP_ERROR qmp_error_quark()
GQuark qmp_error_quark(void);
typedef enum {
    QMP_ERROR_GENERIC_ERROR,     /* "GenericError" */
    QMP_ERROR_COMMAND_NOT_FOUND, /* "CommandNotFound" */
    QMP_ERROR_DEVICE_NOT_FOUND,  /* "DeviceNotFound" */
    QMP_ERROR_DEVICE_NOT_ACTIVE, /* "DeviceNotActive" */
} QmpErrorClass;

/* A handler returns the "return" value (NULL means {}), or NULL with *errp
 * set.  Runs on the QMP thread, one command at a time (or, for --blockdev,
 * --nbd-server and --export, on the main thread before the QMP thread
 * starts). */
typedef JsonNode *(*QmpCommandFunc)(JsonObject *args, GError **errp);
void qmp_register_command(const char *name, QmpCommandFunc fn);

/* Thread safe; takes ownership of data (may be NULL); adds the timestamp and
 * sends to every connected QMP client that finished capabilities
 * negotiation. */
void qmp_emit_event(const char *name, JsonObject *data);

/* Like qmp_register_command, and the dispatcher refuses any argument not in
 * @members (comma separated, e.g. "node-name,flat") with QEMU's "Parameter
 * 'x' is unexpected" before the handler runs.  NULL: no such check. */
void qmp_register_command_args(const char *name, QmpCommandFunc fn,
                               const char *members);

/* transaction: each action type registers prepare/commit/abort; prepare may
 * fail.  state is per-action opaque.  The actions' prepares run in order;
 * if one fails (it must undo its own partial work), abort runs for every
 * action already prepared, in reverse order; otherwise commit runs for all
 * of them in order.  clean (may be NULL) then runs for every prepared
 * action. */
typedef struct QmpTransactionOps {
    bool (*prepare)(JsonObject *data, void **state, GError **errp);
    void (*commit)(void *state);
    void (*abort)(void *state);
    void (*clean)(void *state);
} QmpTransactionOps;
void qmp_register_transaction_action(const char *type,
                                     const QmpTransactionOps *ops);

/* Helpers for handlers: typed argument access with QEMU's messages
 * ("Parameter 'x' is missing", "Invalid parameter type for 'x', expected:
 * string"). */
const char *qmp_arg_str(JsonObject *args, const char *key, bool required,
                        GError **errp);
bool qmp_arg_bool(JsonObject *args, const char *key, bool def, bool *out,
                  GError **errp);
bool qmp_arg_int(JsonObject *args, const char *key, int64_t def,
                 int64_t *out, GError **errp);

/* During a transaction's prepare: the "completion-mode" property,
 * "individual" (the default) or "grouped". */
const char *qmp_transaction_completion_mode(void);
/* Counts transactions: actions of one transaction see the same number. */
unsigned qmp_transaction_serial(void);

/* A QMP error with QEMU's GenericError class. */
void qmp_error(GError **errp, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

/* --- the server ------------------------------------------------------ */

/* Adds a listening socket from a --qmp spec ("unix:PATH,server[,wait=off]")
 * or a --chardev socket spec ("socket,path=PATH,server=on,wait=off,id=X");
 * false + errp when the spec is bad or the socket cannot be bound. */
bool qmp_add_listener(const char *spec, GError **errp);
/* Starts the QMP thread serving the listeners added so far. */
bool qmp_start(GError **errp);
/* Flushes what is queued for the clients, closes every QMP socket and joins
 * the thread.  Safe to call when never started. */
void qmp_stop(void);

/* Registers the commands of every module (core, block, nbd). */
void qmp_register_all(void);

#endif
