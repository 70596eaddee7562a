/*
 * luks.h - the LUKS1 key and sector crypto of block/luks.c, for the
 * drivers that hold a LUKS header: "luks" itself, and qcow2 with
 * encrypt.format=luks (its header in clusters of the image).
 */
#ifndef SNAPNBD_LUKS_H
#define SNAPNBD_LUKS_H

#include "block-int.h"

typedef struct LuksKey LuksKey;

#define LUKS_SECTOR_SIZE 512

/* Reads the LUKS header at @hdr in @file (key slot offsets count from
 * there) and unlocks the master key with the secret @secret_id; NULL with
 * @errp set (QEMU's words for a wrong password). */
LuksKey *luks_key_open(BlockNode *file, uint64_t hdr, const char *secret_id,
                       GError **errp);
/* En- or decrypts whole 512-byte sectors in place, the first with the
 * tweak @sector.  0 or -EIO. */
int luks_key_crypt(const LuksKey *k, uint64_t sector, void *buf, size_t len,
                   bool encrypt);
void luks_key_free(LuksKey *k);

/* Creating: the bytes a new LUKS header with @options takes (header and
 * key slots), and writing it at @hdr in @file.  @options are QEMU's
 * (key-secret, cipher-alg, cipher-mode, ivgen-alg, hash-alg, iter-time);
 * the writer takes them from the table, and fails on any left over. */
uint64_t luks_header_bytes(GHashTable *options);
int luks_write_header(BlockNode *file, uint64_t hdr, GHashTable *options,
                      GError **errp);

#endif
