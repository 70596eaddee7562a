/*
 * qemu-opts.h - QEMU's option string syntax, as --object, --image-opts and
 * -l snapshot.id=... write it: "key=value,key=value", where ",," stands for
 * a comma inside a key or value.
 */
#ifndef SNAPNBD_QEMU_OPTS_H
#define SNAPNBD_QEMU_OPTS_H

#include <glib.h>

/* The items of @s split at single commas (",," unescaped); at least one,
 * possibly empty, item. */
GPtrArray *qemu_opts_split(const char *s);

/* The keys and values of @s; a later key replaces an earlier one, as in
 * QEMU.  An item without '=' means "@implied=item" when it comes first and
 * @implied is not NULL, else "item=on"; empty items mean nothing. */
GHashTable *qemu_opts_parse(const char *s, const char *implied);

#endif
