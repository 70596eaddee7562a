/*
 * objects.h - QEMU's user-creatable objects ("/objects" in QOM): made by
 * --object at startup and by QMP object-add at run time, deleted by
 * object-del.  Secrets and iothreads live here, throttle groups in the
 * block layer, TLS credentials and authz objects in tls.c; this table
 * knows every id and its type, so that ids are unique across types as in
 * QEMU's "/objects" container.  Every function may be called from any
 * thread.
 */
#ifndef SNAPNBD_OBJECTS_H
#define SNAPNBD_OBJECTS_H

#include <glib.h>
#include <stdbool.h>

/* Is @type one of QEMU's object types (qemu-storage-daemon's ObjectType
 * or what `qemu-nbd --object help` lists) that snapnbd does not make?
 * Then true with @errp set. */
bool object_type_refused(const char *type, GError **errp);

/* object-add: an object of @type named @id with the properties @props
 * (flat "key" / "a.b" -> string, as the option syntax writes them; already
 * checked against the type's property types by the caller).  QEMU's
 * messages: "attempt to add duplicate property ..." and the type's own. */
bool object_create(const char *type, const char *id, GHashTable *props,
                   GError **errp);

/* object-del: "object 'x' not found"; a throttle group a node uses is
 * "in use, can not be deleted".  A secret, credentials or an iothread in
 * use go as in QEMU: whoever uses them keeps what it already took. */
bool object_delete(const char *id, GError **errp);

/* Is @type one snapnbd makes at run time? */
bool object_type_supported(const char *type);

/* Calls @fn with the id and type of every object, under the table's lock
 * (@fn must not call back into this module). */
void objects_foreach(void (*fn)(const char *id, const char *type,
                                void *opaque),
                     void *opaque);

/* Has any object ever been made?  QEMU makes its "/objects" container
 * with the first one (qom-list answers DeviceNotFound before that). */
bool objects_container_exists(void);

/* Is there an iothread object named @id? */
bool iothread_exists(const char *id);

/* The bytes of the secret object @id, or NULL with @errp set ("No secret
 * with id '...'").  They stay valid until objects_cleanup, even if the
 * secret is deleted meanwhile. */
GBytes *secret_lookup(const char *id, GError **errp);

void objects_cleanup(void);

#endif
