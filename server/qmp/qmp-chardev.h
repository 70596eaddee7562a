/*
 * qmp-chardev.h - qemu-storage-daemon's --chardev: QEMU's QemuOpts syntax
 * and its character device checks, in QEMU 7.2's order and words; what
 * snapnbd serves QMP on is a unix socket in server mode, bound when the
 * option is given (as QEMU creates the chardev then), or stdin and stdout
 * (the stdio backend, for one chardev at most).
 */
#ifndef SNAPNBD_QMP_CHARDEV_H
#define SNAPNBD_QMP_CHARDEV_H

#include <glib.h>
#include <stdbool.h>

typedef struct QmpChardev QmpChardev;

/* --chardev @spec: parsed and checked as QEMU does, then the socket bound.
 * False with @errp set on error (warnings QEMU gives go to stderr,
 * prefixed "snapnbd: --chardev @spec: ").  A help request prints on stdout
 * and returns false with @errp unset and *@help_status the exit status
 * QEMU gives it (0 for the backend list, 1 for the option list). */
bool qmp_chardev_add(const char *spec, int *help_status, GError **errp);

/* The chardev of that id, or NULL. */
QmpChardev *qmp_chardev_find(const char *id);

/* Hands the bound socket to a --monitor (once: a second one gets QEMU's
 * "Device '...' is in use"): its fd and path (the caller owns both), and
 * whether to wait for the first client (QEMU's wait=on).  A stdio chardev
 * has no socket: *@fd is -1 and *@path NULL. */
bool qmp_chardev_take(QmpChardev *chr, int *fd, char **path, bool *wait,
                      GError **errp);

/* Is it the stdio backend? */
bool qmp_chardev_is_stdio(const QmpChardev *chr);

/* --fork or --daemonize (@option, as the message names it; NULL: neither):
 * stdio is refused then, as QEMU refuses it with -daemonize (the daemon's
 * stdin and stdout become /dev/null).  Call before any --chardev. */
void qmp_chardev_set_daemonizing(const char *option);

/* Closes the sockets no --monitor took and removes their files. */
void qmp_chardev_cleanup(void);

#endif
