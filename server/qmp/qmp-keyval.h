/*
 * qmp-keyval.h - QEMU's key=value option syntax (util/keyval.c) into QMP
 * arguments.
 */
#ifndef SNAPNBD_QMP_KEYVAL_H
#define SNAPNBD_QMP_KEYVAL_H

#include <json-glib/json-glib.h>
#include <stdbool.h>

/* "a.b=v" keys make nested objects, "a.0=v" lists, ",," a comma in a
 * value; all values are strings (the schema types them later).  An item
 * without "=" first is @implied_key's value (may be NULL).  NULL with
 * @errp set (qemu-storage-daemon's messages) on bad syntax. */
JsonObject *qmp_keyval_parse(const char *params, const char *implied_key,
                             GError **errp);

/* The same, where a "help" (or "?") item asks for help (QEMU's p_help):
 * *@help says whether one did; the other items are parsed and checked all
 * the same (a syntax error wins). */
JsonObject *qmp_keyval_parse_help(const char *params, const char *implied_key,
                                  bool *help, GError **errp);

/* QEMU's QDict bucket of a key (qobject/qdict.c: tdb_hash % 512): a
 * QDict's members come in this order, which decides which of several
 * errors QEMU reports. */
unsigned qmp_qdict_bucket(const char *key);

#endif
