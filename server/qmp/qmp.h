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

/* Commands are registered with their typed handlers,
 * qmp_register_typed_CMD(fn) (server/qmp-types-gen.h, generated from
 * server/qmp-schema.json): fn receives the decoded arguments and returns
 * the "return" value (NULL means {}), or NULL with *errp set.  It runs on
 * the QMP thread, one command at a time (or, for --blockdev, --nbd-server
 * and --export, on the main thread before the QMP thread starts). */

/* For server/qmp-types-gen.c only: @decode_and_call decodes the checked
 * arguments into the command's C struct and calls the handler. */
typedef JsonNode *(*QmpCommandFunc)(JsonObject *args, GError **errp);
void qmp_register_command_decoder(const char *name,
                                  QmpCommandFunc decode_and_call);

/* Thread safe; takes ownership of data (may be NULL); adds the timestamp and
 * sends to every connected QMP client that finished capabilities
 * negotiation. */
void qmp_emit_event(const char *name, JsonObject *data);

/* transaction: each action type registers prepare/commit/abort; prepare may
 * fail.  state is per-action opaque.  The actions' prepares run in order;
 * if one fails (it must undo its own partial work), abort runs for every
 * action already prepared, in reverse order; otherwise commit runs for all
 * of them in order.  clean (may be NULL) then runs for every prepared
 * action. */
typedef struct QmpTransactionAction QmpTransactionAction; /* generated */
typedef struct QmpTransactionOps {
    /* @action: the decoded element of "actions"; its branch (u.TYPE->data)
     * is the action's arguments */
    bool (*prepare)(const QmpTransactionAction *action, void **state,
                    GError **errp);
    void (*commit)(void *state);
    void (*abort)(void *state);
    void (*clean)(void *state);
} QmpTransactionOps;
void qmp_register_transaction_action(const char *type,
                                     const QmpTransactionOps *ops);

/* During a transaction's prepare: the "completion-mode" property,
 * "individual" (the default) or "grouped". */
const char *qmp_transaction_completion_mode(void);
/* Counts transactions: actions of one transaction see the same number. */
unsigned qmp_transaction_serial(void);

/* A QMP error with QEMU's GenericError class. */
void qmp_error(GError **errp, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
/* A socket address's "fd" (a number, as QEMU's socket_get_fd() takes it
 * without a monitor): the descriptor, or -1 + errp with QEMU's words when
 * it is no number or no socket. */
int qmp_socket_get_fd(const char *fd, GError **errp);

/* --- the server ------------------------------------------------------ */

/* Adds a listening socket from a --qmp spec ("unix:PATH,server[,wait=off]");
 * false + errp when the spec is bad or the socket cannot be bound. */
bool qmp_add_listener(const char *spec, GError **errp);
/* Adds the socket @fd, listening on @path (taken), bound already (a
 * --chardev); with @wait, accepts the first client before returning. */
void qmp_add_listener_fd(int fd, char *path, bool wait);
/* Adds a client reading stdin and writing stdout (--chardev stdio).  The
 * end of stdin ends its input, not its output: replies and events still go
 * to stdout, as in QEMU, until the daemon exits. */
void qmp_add_stdio_client(void);
/* Starts the QMP thread serving the listeners and clients added so far. */
bool qmp_start(GError **errp);
/* No command is read any more; returns once the one in progress (if any)
 * is done.  Output, events included, still flows until qmp_stop().  May
 * be called from a command (quit's hook). */
void qmp_stop_input(void);
/* quit runs @hook before it answers (the daemon's closing of exports and
 * jobs, whose events come first then). */
void qmp_set_quit_hook(void (*hook)(void));
/* Flushes what is queued for the clients, closes every QMP socket and joins
 * the thread.  Safe to call when never started. */
void qmp_stop(void);

/* Registers the commands of every module (core, block, nbd). */
void qmp_register_all(void);

#endif
