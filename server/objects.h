/*
 * objects.h - --object: every type qemu-nbd 7.2 accepts is either made
 * (secret here, throttle-group in the block layer; the TLS credentials and
 * authz-simple in tls.c) or refused
 * with a message naming it.
 */
#ifndef SNAPNBD_OBJECTS_H
#define SNAPNBD_OBJECTS_H

#include <glib.h>
#include <stdbool.h>

/* Makes the secrets of @specs and returns (in *@tls_specs, a NULL-ended
 * array the caller frees with g_strfreev) the specs that tls.c makes;
 * false with @errp set on a refused or malformed object. */
bool objects_setup(char **specs, char ***tls_specs, GError **errp);

/* The bytes of the secret object @id, or NULL with @errp set ("No secret
 * with id '...'"). */
GBytes *secret_lookup(const char *id, GError **errp);

void objects_cleanup(void);

#endif
