/*
 * list.h - qemu-nbd's -L/--list: the client that lists a server's exports.
 */
#ifndef SNAPNBD_LIST_H
#define SNAPNBD_LIST_H

#include "cli.h"

/* Prints the exports of the server that -k or -b/-p name, in qemu-nbd
 * 7.2's words; returns the exit status. */
int list_exports(const CliOptions *o);

#endif
