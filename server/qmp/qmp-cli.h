/*
 * qmp-cli.h - the control socket's command line: --qmp, and
 * qemu-storage-daemon's --chardev/--monitor, --blockdev, --nbd-server and
 * --export.  With any of them and no image argument, snapnbd runs as a
 * daemon that only does what these options and the control socket say.
 */
#ifndef SNAPNBD_QMP_CLI_H
#define SNAPNBD_QMP_CLI_H

#include <glib.h>
#include <stdbool.h>

/* The options' group, for cli_parse's GOptionContext (storage is static). */
GOptionGroup *qmp_cli_option_group(void);

/* Was any of these options given? */
bool qmp_cli_given(void);

/* Registers the QMP commands, then runs --qmp, --chardev, --monitor,
 * --blockdev, --nbd-server and --export in the order given, as
 * qemu-storage-daemon does (the last three as the QMP commands they stand
 * for); on error prints one line naming the option and returns false.
 * Starts the QMP thread last.  With @fork_option (the option that forks:
 * "--fork", "-daemonize" in QEMU's words), --chardev stdio is refused. */
bool qmp_cli_start(const char *fork_option);

/* --object in JSON syntax: object-add with those arguments (checked and
 * decoded like QMP input); on error prints one line (naming the option, as
 * qemu-storage-daemon does, if @name_option; not, as qemu-nbd) and
 * returns false. */
bool qmp_cli_object_add_json(const char *spec, bool name_option);

/* --object in option syntax (QEMU's keyval, "qom-type" implied): the same,
 * with the values typed as qemu-storage-daemon and qemu-nbd type them.  A
 * help request prints the object types, or a type's properties, on stdout
 * and returns false (see qmp_cli_help_exit_status). */
bool qmp_cli_object_add_options(const char *spec, bool name_option);

/* Does this --object in option syntax ask for help ("help" or "?" among
 * its items)?  Such a command line needs no image: it only prints. */
bool qmp_cli_object_wants_help(const char *spec);

/* After qmp_cli_start() or qmp_cli_object_add_options() returned false:
 * -1 if it failed, else the exit status of the help it printed on stdout
 * instead (QEMU's: 0, but 1 for --chardev's option list). */
int qmp_cli_help_exit_status(void);

void qmp_cli_free(void);

#endif
