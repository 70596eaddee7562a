/*
 * luks.c - the "luks" format driver: a LUKS1 image as QEMU reads, writes
 * and creates it (block/crypto.c and crypto/block-luks.c in QEMU).  The
 * crypto is gnutls': PBKDF2, the hashes of the anti-forensic splitter and
 * AES-XTS; nothing here is hand-written cipher code.
 *
 * Design notes.
 *
 * Layout (all numbers big-endian): a 592-byte header (cipher "aes", mode
 * "xts-plain64" or "xts-plain", a hash for PBKDF2 and the splitter, the
 * payload offset in 512-byte sectors, the master key's size and a PBKDF2
 * digest of it) with eight key slots; an active slot holds, at its own
 * offset, the master key split into 4000 stripes by the anti-forensic
 * splitter and encrypted with a key derived from the password.  The
 * payload follows; guest sector N is encrypted with XTS and the tweak N
 * (plain64: N as a little-endian 64-bit number), as QEMU's driver=luks does.
 *
 * Opening tries the password (the "key-secret" object's bytes) on every
 * active slot: derive the slot key, decrypt the stripes, merge them,
 * compare the PBKDF2 digest of the result with the header's.  The master
 * key then stays in the state, read-only, for the life of the node.
 *
 * Threads: gnutls cipher handles are not shared between threads, so every
 * request makes its own (an AES key schedule: cheap next to the I/O).
 */
#include "block-int.h"
#include "luks.h"

#include <errno.h>
#include <string.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#define LUKS_MAGIC "LUKS\xba\xbe"
#define LUKS_HEADER_SIZE 592
#define LUKS_SECTOR 512
#define LUKS_SLOTS 8
#define LUKS_STRIPES 4000
#define LUKS_SLOT_ENABLED 0x00AC71F3
#define LUKS_SLOT_DISABLED 0x0000DEAD
#define LUKS_DIGEST_SIZE 20
#define LUKS_SALT_SIZE 32
/* Key material starts after 4 KiB, and each slot's is rounded up to it. */
#define LUKS_KEY_SLOT_OFFSET 4096
#define LUKS_MIN_ITERATIONS 1000

typedef struct LuksSlot {
    uint32_t active;
    uint32_t iterations;
    uint8_t salt[LUKS_SALT_SIZE];
    uint32_t key_offset;   /* sectors */
    uint32_t stripes;
} LuksSlot;

typedef struct LuksHeader {
    char cipher_name[33];
    char cipher_mode[33];
    char hash_spec[33];
    uint32_t payload_offset; /* sectors */
    uint32_t key_bytes;
    uint8_t mk_digest[LUKS_DIGEST_SIZE];
    uint8_t mk_digest_salt[LUKS_SALT_SIZE];
    uint32_t mk_digest_iterations;
    char uuid[41];
    LuksSlot slots[LUKS_SLOTS];
} LuksHeader;

struct LuksKey {
    gnutls_cipher_algorithm_t cipher;
    bool plain64;                /* else "plain": the tweak is 32 bits */
    uint8_t master_key[64];
    uint32_t key_bytes;
    uint64_t payload;            /* the header's payload offset, bytes */
};

typedef struct LuksState {
    BlockNode *file;
    LuksKey *key;
} LuksState;

/* --- secrets ------------------------------------------------------------- */

static BdrvSecretLookup secret_lookup;

void bdrv_set_secret_lookup(BdrvSecretLookup fn)
{
    secret_lookup = fn;
}

static GBytes *lookup_secret(const char *id, GError **errp)
{
    if (!secret_lookup) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_FOUND,
                    "No secret with id '%s'", id);
        return NULL;
    }
    return secret_lookup(id, errp);
}

GBytes *bdrv_lookup_secret(const char *id, GError **errp)
{
    return lookup_secret(id, errp);
}

/* --- the header ---------------------------------------------------------- */

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           p[3];
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = v >> 24;
    p[1] = v >> 16;
    p[2] = v >> 8;
    p[3] = v;
}

static void parse_header(const uint8_t *b, LuksHeader *h)
{
    memcpy(h->cipher_name, b + 8, 32);
    h->cipher_name[32] = 0;
    memcpy(h->cipher_mode, b + 40, 32);
    h->cipher_mode[32] = 0;
    memcpy(h->hash_spec, b + 72, 32);
    h->hash_spec[32] = 0;
    h->payload_offset = be32(b + 104);
    h->key_bytes = be32(b + 108);
    memcpy(h->mk_digest, b + 112, LUKS_DIGEST_SIZE);
    memcpy(h->mk_digest_salt, b + 132, LUKS_SALT_SIZE);
    h->mk_digest_iterations = be32(b + 164);
    memcpy(h->uuid, b + 168, 40);
    h->uuid[40] = 0;
    for (int i = 0; i < LUKS_SLOTS; i++) {
        const uint8_t *s = b + 208 + i * 48;
        h->slots[i].active = be32(s);
        h->slots[i].iterations = be32(s + 4);
        memcpy(h->slots[i].salt, s + 8, LUKS_SALT_SIZE);
        h->slots[i].key_offset = be32(s + 40);
        h->slots[i].stripes = be32(s + 44);
    }
}

static void build_header(const LuksHeader *h, uint8_t *b)
{
    memset(b, 0, LUKS_HEADER_SIZE);
    memcpy(b, LUKS_MAGIC, 6);
    b[7] = 1; /* version */
    memcpy(b + 8, h->cipher_name, strnlen(h->cipher_name, 32));
    memcpy(b + 40, h->cipher_mode, strnlen(h->cipher_mode, 32));
    memcpy(b + 72, h->hash_spec, strnlen(h->hash_spec, 32));
    put_be32(b + 104, h->payload_offset);
    put_be32(b + 108, h->key_bytes);
    memcpy(b + 112, h->mk_digest, LUKS_DIGEST_SIZE);
    memcpy(b + 132, h->mk_digest_salt, LUKS_SALT_SIZE);
    put_be32(b + 164, h->mk_digest_iterations);
    memcpy(b + 168, h->uuid, 40);
    for (int i = 0; i < LUKS_SLOTS; i++) {
        uint8_t *s = b + 208 + i * 48;
        put_be32(s, h->slots[i].active);
        put_be32(s + 4, h->slots[i].iterations);
        memcpy(s + 8, h->slots[i].salt, LUKS_SALT_SIZE);
        put_be32(s + 40, h->slots[i].key_offset);
        put_be32(s + 44, h->slots[i].stripes);
    }
}

/* The hash of the header's hash_spec, for PBKDF2 and the splitter. */
static bool hash_alg(const char *spec, gnutls_mac_algorithm_t *mac,
                     gnutls_digest_algorithm_t *dig)
{
    static const struct {
        const char *name;
        gnutls_mac_algorithm_t mac;
        gnutls_digest_algorithm_t dig;
    } hashes[] = {
        { "sha1", GNUTLS_MAC_SHA1, GNUTLS_DIG_SHA1 },
        { "sha224", GNUTLS_MAC_SHA224, GNUTLS_DIG_SHA224 },
        { "sha256", GNUTLS_MAC_SHA256, GNUTLS_DIG_SHA256 },
        { "sha384", GNUTLS_MAC_SHA384, GNUTLS_DIG_SHA384 },
        { "sha512", GNUTLS_MAC_SHA512, GNUTLS_DIG_SHA512 },
    };

    for (size_t i = 0; i < G_N_ELEMENTS(hashes); i++) {
        if (strcmp(spec, hashes[i].name) == 0) {
            *mac = hashes[i].mac;
            *dig = hashes[i].dig;
            return true;
        }
    }
    return false;
}

/* --- crypto primitives (gnutls) ----------------------------------------- */

static bool pbkdf2(gnutls_mac_algorithm_t mac, const void *pw, size_t pwlen,
                   const uint8_t *salt, uint32_t iterations, void *out,
                   size_t outlen)
{
    gnutls_datum_t key = { (unsigned char *)pw, pwlen };
    gnutls_datum_t s = { (unsigned char *)salt, LUKS_SALT_SIZE };

    return gnutls_pbkdf2(mac, &key, &s, iterations, out, outlen) == 0;
}

/* XTS over whole 512-byte sectors, in place; the tweak of the first is
 * @sector.  Returns 0 or -EIO. */
static int xts_crypt(gnutls_cipher_algorithm_t alg, const uint8_t *key,
                     uint32_t key_bytes, bool plain64, uint64_t sector,
                     uint8_t *buf, size_t len, bool encrypt)
{
    gnutls_cipher_hd_t hd;
    gnutls_datum_t k = { (unsigned char *)key, key_bytes };
    uint8_t iv[16] = { 0 };
    int ret = 0;

    if (gnutls_cipher_init(&hd, alg, &k, NULL) < 0)
        return -EIO;
    for (size_t done = 0; done < len; done += LUKS_SECTOR, sector++) {
        uint64_t n = plain64 ? sector : (uint32_t)sector;

        for (int i = 0; i < 8; i++)
            iv[i] = n >> (8 * i);
        gnutls_cipher_set_iv(hd, iv, sizeof(iv));
        if ((encrypt ? gnutls_cipher_encrypt(hd, buf + done, LUKS_SECTOR)
                     : gnutls_cipher_decrypt(hd, buf + done, LUKS_SECTOR))
            < 0) {
            ret = -EIO;
            break;
        }
    }
    gnutls_cipher_deinit(hd);
    return ret;
}

/* The splitter's diffusion: each digest-sized piece of @block becomes the
 * hash of (its index, big-endian 32 bits; the piece). */
static void af_diffuse(gnutls_digest_algorithm_t dig, uint8_t *block,
                       size_t len)
{
    size_t dlen = gnutls_hash_get_len(dig);
    uint8_t out[64];

    for (size_t i = 0, off = 0; off < len; i++, off += dlen) {
        size_t n = MIN(dlen, len - off);
        gnutls_hash_hd_t h;
        uint8_t idx[4];

        put_be32(idx, i);
        gnutls_hash_init(&h, dig);
        gnutls_hash(h, idx, 4);
        gnutls_hash(h, block + off, n);
        gnutls_hash_deinit(h, out);
        memcpy(block + off, out, n);
    }
}

static void xor_into(uint8_t *dst, const uint8_t *src, size_t len)
{
    for (size_t i = 0; i < len; i++)
        dst[i] ^= src[i];
}

/* Merges @stripes blocks of @len bytes into the key they hide. */
static void af_merge(gnutls_digest_algorithm_t dig, const uint8_t *split,
                     uint32_t stripes, size_t len, uint8_t *key)
{
    g_autofree uint8_t *block = g_malloc0(len);

    for (uint32_t i = 0; i + 1 < stripes; i++) {
        xor_into(block, split + (size_t)i * len, len);
        af_diffuse(dig, block, len);
    }
    memcpy(key, split + (size_t)(stripes - 1) * len, len);
    xor_into(key, block, len);
}

/* The reverse: random stripes, the last one chosen so they merge into
 * @key.  False if the random generator fails. */
static bool af_split(gnutls_digest_algorithm_t dig, const uint8_t *key,
                     uint32_t stripes, size_t len, uint8_t *split)
{
    g_autofree uint8_t *block = g_malloc0(len);

    if (gnutls_rnd(GNUTLS_RND_RANDOM, split, (size_t)(stripes - 1) * len))
        return false;
    for (uint32_t i = 0; i + 1 < stripes; i++) {
        xor_into(block, split + (size_t)i * len, len);
        af_diffuse(dig, block, len);
    }
    memcpy(split + (size_t)(stripes - 1) * len, key, len);
    xor_into(split + (size_t)(stripes - 1) * len, block, len);
    return true;
}

static gnutls_cipher_algorithm_t xts_cipher(uint32_t key_bytes)
{
    return key_bytes == 32 ? GNUTLS_CIPHER_AES_128_XTS
         : key_bytes == 64 ? GNUTLS_CIPHER_AES_256_XTS
                           : GNUTLS_CIPHER_UNKNOWN;
}

/* --- opening -------------------------------------------------------------- */

static bool check_header(BlockNode *file, const uint8_t *raw,
                         const LuksHeader *h, GError **errp)
{
    const char *fn = bdrv_filename(file);

    if (memcmp(raw, LUKS_MAGIC, 6) != 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Volume '%s' is not in LUKS format", fn);
        return false;
    }
    if (raw[6] != 0 || raw[7] != 1) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "'%s': LUKS version %u is not supported",
                    fn, (unsigned)raw[6] << 8 | raw[7]);
        return false;
    }
    if (strcmp(h->cipher_name, "aes") != 0 ||
        (strcmp(h->cipher_mode, "xts-plain64") != 0 &&
         strcmp(h->cipher_mode, "xts-plain") != 0) ||
        xts_cipher(h->key_bytes) == GNUTLS_CIPHER_UNKNOWN) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "'%s': LUKS cipher %s-%s with a %u-byte key is not "
                    "supported (only aes-xts-plain64)",
                    fn, h->cipher_name, h->cipher_mode, h->key_bytes);
        return false;
    }
    return true;
}

/* Tries the password on the slot; true (and the master key) if it fits. */
static int try_slot(BlockNode *file, uint64_t hdr, LuksKey *k,
                    const LuksHeader *h, const LuksSlot *slot,
                    GBytes *password, gnutls_mac_algorithm_t mac,
                    gnutls_digest_algorithm_t dig)
{
    size_t split_len = (size_t)h->key_bytes * slot->stripes;
    size_t split_alloc = ROUND_UP(split_len, LUKS_SECTOR);
    g_autofree uint8_t *split = g_malloc(split_alloc);
    uint8_t slot_key[64], key[64], digest[LUKS_DIGEST_SIZE];
    gsize pwlen;
    const void *pw = g_bytes_get_data(password, &pwlen);
    int ret;

    if (!pbkdf2(mac, pw, pwlen, slot->salt, slot->iterations, slot_key,
                h->key_bytes))
        return -EIO;
    ret = bdrv_pread(file, hdr + (int64_t)slot->key_offset * LUKS_SECTOR,
                     split_alloc, split);
    if (ret < 0)
        return ret;
    ret = xts_crypt(k->cipher, slot_key, h->key_bytes, k->plain64, 0, split,
                    split_alloc, false);
    if (ret < 0)
        return ret;
    af_merge(dig, split, slot->stripes, h->key_bytes, key);
    if (!pbkdf2(mac, key, h->key_bytes, h->mk_digest_salt,
                h->mk_digest_iterations, digest, sizeof(digest)))
        return -EIO;
    if (memcmp(digest, h->mk_digest, sizeof(digest)) != 0)
        return 0;
    memcpy(k->master_key, key, h->key_bytes);
    return 1;
}

static int unlock(BlockNode *file, uint64_t hdr, LuksKey *k,
                  const LuksHeader *h, GBytes *password, GError **errp)
{
    gnutls_mac_algorithm_t mac;
    gnutls_digest_algorithm_t dig;

    if (!hash_alg(h->hash_spec, &mac, &dig)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "'%s': LUKS hash '%s' is not supported",
                    bdrv_filename(file), h->hash_spec);
        return -ENOTSUP;
    }
    for (int i = 0; i < LUKS_SLOTS; i++) {
        const LuksSlot *slot = &h->slots[i];
        int ret;

        if (slot->active != LUKS_SLOT_ENABLED || slot->stripes == 0 ||
            slot->iterations == 0)
            continue;
        ret = try_slot(file, hdr, k, h, slot, password, mac, dig);
        if (ret < 0) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                        "'%s': cannot read LUKS key slot %d: %s",
                        bdrv_filename(file), i, g_strerror(-ret));
            return ret;
        }
        if (ret > 0)
            return 0;
    }
    /* QEMU's words */
    g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                "Invalid password, cannot unlock any keyslot");
    return -EPERM;
}

LuksKey *luks_key_open(BlockNode *file, uint64_t hdr, const char *secret_id,
                       GError **errp)
{
    g_autoptr(GBytes) password = NULL;
    uint8_t raw[LUKS_HEADER_SIZE];
    LuksHeader h;
    LuksKey *k;
    int ret;

    ret = bdrv_pread(file, hdr, sizeof(raw), raw);
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "Could not read the LUKS header of '%s': %s",
                    bdrv_filename(file), g_strerror(-ret));
        return NULL;
    }
    parse_header(raw, &h);
    if (!check_header(file, raw, &h, errp))
        return NULL;
    if (!secret_id) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Parameter 'key-secret' is required for cipher");
        return NULL;
    }
    password = lookup_secret(secret_id, errp);
    if (!password)
        return NULL;
    g_bytes_ref(password);
    k = g_new0(LuksKey, 1);
    k->cipher = xts_cipher(h.key_bytes);
    k->plain64 = strcmp(h.cipher_mode, "xts-plain64") == 0;
    k->key_bytes = h.key_bytes;
    k->payload = (uint64_t)h.payload_offset * LUKS_SECTOR;
    if (unlock(file, hdr, k, &h, password, errp) < 0) {
        luks_key_free(k);
        return NULL;
    }
    return k;
}

int luks_key_crypt(const LuksKey *k, uint64_t sector, void *buf, size_t len,
                   bool encrypt)
{
    return xts_crypt(k->cipher, k->master_key, k->key_bytes, k->plain64,
                     sector, buf, len, encrypt);
}

void luks_key_free(LuksKey *k)
{
    if (!k)
        return;
    gnutls_memset(k->master_key, 0, sizeof(k->master_key));
    g_free(k);
}

static int luks_open(BlockNode *bs, GHashTable *options, GError **errp)
{
    LuksState *s = bs->opaque;
    g_autofree char *secret_id = opt_take(options, "key-secret");

    s->file = bdrv_open_child(bs, options, "file", errp);
    if (!s->file)
        return -EINVAL;
    s->key = luks_key_open(s->file, 0, secret_id, errp);
    if (!s->key)
        return -EINVAL;
    if ((uint64_t)bdrv_getlength(s->file) < s->key->payload) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "'%s': the LUKS payload offset is beyond the end of "
                    "the file", bdrv_filename(s->file));
        return -EINVAL;
    }
    return 0;
}

static void luks_close(BlockNode *bs)
{
    LuksState *s = bs->opaque;

    luks_key_free(s->key);
}

static int64_t luks_get_length(BlockNode *bs)
{
    LuksState *s = bs->opaque;
    int64_t len = bdrv_getlength(s->file);

    return len < 0 ? len : (int64_t)((uint64_t)len - s->key->payload);
}

/* block_resize: the payload grows or shrinks with the file, as QEMU's
 * block_crypto_co_truncate. */
static int luks_truncate(BlockNode *bs, int64_t size, GError **errp)
{
    LuksState *s = bs->opaque;

    if ((uint64_t)size > (uint64_t)INT64_MAX - s->key->payload) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "The requested size is too large");
        return -EFBIG;
    }
    return bdrv_truncate(s->file, size + s->key->payload, errp);
}

/* Whole sectors only: io.c does the read-modify-write around them. */
static void luks_refresh_limits(BlockNode *bs, BlockLimits *limits)
{
    LuksState *s = bs->opaque;

    *limits = *bdrv_limits(s->file);
    limits->request_alignment = MAX(limits->request_alignment, LUKS_SECTOR);
    if (!limits->max_transfer || limits->max_transfer > (1 << 24))
        limits->max_transfer = 1 << 24;
}

static int luks_pread(BlockNode *bs, int64_t offset, int64_t bytes,
                      void *buf)
{
    LuksState *s = bs->opaque;
    int ret = bdrv_pread(s->file, s->key->payload + offset, bytes, buf);

    if (ret < 0)
        return ret;
    return luks_key_crypt(s->key, offset / LUKS_SECTOR, buf, bytes, false);
}

static int luks_pwrite(BlockNode *bs, int64_t offset, int64_t bytes,
                       const void *buf, int flags)
{
    LuksState *s = bs->opaque;
    g_autofree uint8_t *enc = g_malloc(bytes);
    int ret;

    memcpy(enc, buf, bytes);
    ret = luks_key_crypt(s->key, offset / LUKS_SECTOR, enc, bytes, true);
    if (ret < 0)
        return ret;
    return bdrv_pwrite(s->file, s->key->payload + offset, bytes, enc, flags);
}

static char *luks_describe(BlockNode *bs)
{
    LuksState *s = bs->opaque;

    return g_strdup_printf("aes-%u-xts-%s, payload at %" G_GUINT64_FORMAT,
                           s->key->key_bytes * 4,
                           s->key->plain64 ? "plain64" : "plain",
                           s->key->payload);
}

/* --- creating ---------------------------------------------------------- */

/* PBKDF2 iterations that take about @ms milliseconds here. */
static uint32_t iterations_for(gnutls_mac_algorithm_t mac, uint64_t ms)
{
    uint8_t salt[LUKS_SALT_SIZE] = { 0 }, out[32];
    const uint32_t probe = 10000;
    gint64 start = g_get_monotonic_time(), took;
    uint64_t n;

    pbkdf2(mac, "probe", 5, salt, probe, out, sizeof(out));
    took = MAX(g_get_monotonic_time() - start, 1);
    n = (uint64_t)probe * ms * 1000 / took;
    return (uint32_t)CLAMP(n, LUKS_MIN_ITERATIONS, UINT32_MAX);
}

static void random_uuid(char *uuid)
{
    uint8_t r[16];

    gnutls_rnd(GNUTLS_RND_NONCE, r, sizeof(r));
    r[6] = (r[6] & 0x0f) | 0x40;
    r[8] = (r[8] & 0x3f) | 0x80;
    g_snprintf(uuid, 37,
               "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
               "%02x%02x%02x%02x%02x%02x",
               r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9],
               r[10], r[11], r[12], r[13], r[14], r[15]);
}

/* Options as QEMU's qemu-img create -f luks / blockdev-create take them:
 * key-secret (required), cipher-alg (aes-256 or aes-128), cipher-mode
 * (xts), ivgen-alg (plain64 or plain), hash-alg, iter-time (ms). */
/* The slot's stripes take this many sectors, rounded to 4 KiB as QEMU. */
static uint32_t split_sectors_for(uint32_t key_bytes)
{
    size_t split_len = (size_t)key_bytes * LUKS_STRIPES;

    return ROUND_UP(ROUND_UP(split_len, LUKS_SECTOR) / LUKS_SECTOR,
                    LUKS_KEY_SLOT_OFFSET / LUKS_SECTOR);
}

uint64_t luks_header_bytes(GHashTable *options)
{
    const char *alg = g_hash_table_lookup(options, "cipher-alg");
    uint32_t key_bytes = alg && !strcmp(alg, "aes-128") ? 32 : 64;

    return LUKS_KEY_SLOT_OFFSET +
           (uint64_t)LUKS_SLOTS * split_sectors_for(key_bytes) * LUKS_SECTOR;
}

int luks_write_header(BlockNode *file, uint64_t hdr, GHashTable *options,
                      GError **errp)
{
    g_autofree char *secret_id = opt_take(options, "key-secret");
    g_autofree char *alg = opt_take(options, "cipher-alg");
    g_autofree char *mode = opt_take(options, "cipher-mode");
    g_autofree char *ivgen = opt_take(options, "ivgen-alg");
    g_autofree char *hash = opt_take(options, "hash-alg");
    g_autofree char *iter_time = opt_take(options, "iter-time");
    g_autoptr(GBytes) password = NULL;
    gnutls_mac_algorithm_t mac;
    gnutls_digest_algorithm_t dig;
    LuksHeader h = { 0 };
    uint8_t master[64], slot_key[64], raw[LUKS_HEADER_SIZE];
    g_autofree uint8_t *split = NULL;
    uint32_t split_sectors;
    size_t split_len;
    uint64_t ms = iter_time ? g_ascii_strtoull(iter_time, NULL, 10) : 2000;
    gsize pwlen;
    const void *pw;
    int ret;

    if (!secret_id) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Parameter 'key-secret' is required for cipher");
        return -EINVAL;
    }
    if ((alg && strcmp(alg, "aes-256") && strcmp(alg, "aes-128")) ||
        (mode && strcmp(mode, "xts")) ||
        (ivgen && strcmp(ivgen, "plain64") && strcmp(ivgen, "plain")) ||
        !hash_alg(hash ? hash : "sha256", &mac, &dig)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "LUKS: only cipher-alg aes-256/aes-128, cipher-mode "
                    "xts, ivgen-alg plain64/plain and hash-alg sha1/sha2 "
                    "are supported");
        return -ENOTSUP;
    }
    if (g_hash_table_size(options) > 0) {
        GHashTableIter it;
        gpointer k;

        g_hash_table_iter_init(&it, options);
        g_hash_table_iter_next(&it, &k, NULL);
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Invalid parameter '%s'", (const char *)k);
        return -EINVAL;
    }
    password = lookup_secret(secret_id, errp);
    if (!password)
        return -EINVAL;
    g_bytes_ref(password);
    pw = g_bytes_get_data(password, &pwlen);

    strcpy(h.cipher_name, "aes");
    g_snprintf(h.cipher_mode, sizeof(h.cipher_mode), "xts-%s",
               ivgen ? ivgen : "plain64");
    strcpy(h.hash_spec, hash ? hash : "sha256");
    h.key_bytes = alg && !strcmp(alg, "aes-128") ? 32 : 64;
    random_uuid(h.uuid);
    split_len = (size_t)h.key_bytes * LUKS_STRIPES;
    split_sectors = split_sectors_for(h.key_bytes);
    for (int i = 0; i < LUKS_SLOTS; i++) {
        h.slots[i].active = LUKS_SLOT_DISABLED;
        h.slots[i].key_offset = LUKS_KEY_SLOT_OFFSET / LUKS_SECTOR +
                                i * split_sectors;
        h.slots[i].stripes = LUKS_STRIPES;
    }
    h.payload_offset = LUKS_KEY_SLOT_OFFSET / LUKS_SECTOR +
                       LUKS_SLOTS * split_sectors;

    /* As QEMU: the master key digest costs an eighth of the slot's time. */
    if (gnutls_rnd(GNUTLS_RND_KEY, master, h.key_bytes) ||
        gnutls_rnd(GNUTLS_RND_NONCE, h.mk_digest_salt, LUKS_SALT_SIZE) ||
        gnutls_rnd(GNUTLS_RND_NONCE, h.slots[0].salt, LUKS_SALT_SIZE)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "LUKS: no random numbers");
        return -EIO;
    }
    h.mk_digest_iterations = iterations_for(mac, ms / 8);
    h.slots[0].iterations = iterations_for(mac, ms);
    h.slots[0].active = LUKS_SLOT_ENABLED;
    split = g_malloc0((size_t)split_sectors * LUKS_SECTOR);
    if (!pbkdf2(mac, master, h.key_bytes, h.mk_digest_salt,
                h.mk_digest_iterations, h.mk_digest, LUKS_DIGEST_SIZE) ||
        !pbkdf2(mac, pw, pwlen, h.slots[0].salt, h.slots[0].iterations,
                slot_key, h.key_bytes) ||
        !af_split(dig, master, LUKS_STRIPES, h.key_bytes, split)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "LUKS: key derivation failed");
        return -EIO;
    }
    ret = xts_crypt(xts_cipher(h.key_bytes), slot_key, h.key_bytes,
                    !ivgen || !strcmp(ivgen, "plain64"), 0, split,
                    ROUND_UP(split_len, LUKS_SECTOR), true);
    gnutls_memset(master, 0, sizeof(master));
    gnutls_memset(slot_key, 0, sizeof(slot_key));
    build_header(&h, raw);
    bdrv_set_growable(file);
    if (ret == 0)
        ret = bdrv_pwrite(file, hdr, sizeof(raw), raw, 0);
    if (ret == 0)
        ret = bdrv_pwrite(file,
                          hdr + (int64_t)h.slots[0].key_offset * LUKS_SECTOR,
                          (size_t)split_sectors * LUKS_SECTOR, split, 0);
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "Could not write the LUKS header of '%s': %s",
                    bdrv_filename(file), g_strerror(-ret));
        return ret;
    }
    return 0;
}

static int luks_format(BlockNode *file, uint64_t size, GHashTable *options,
                       GError **errp)
{
    uint64_t end = luks_header_bytes(options) + ROUND_UP(size, LUKS_SECTOR);
    uint8_t zero[LUKS_SECTOR] = { 0 };
    int ret = luks_write_header(file, 0, options, errp);

    /* the payload's last sector makes the file its full length */
    if (ret == 0 && size > 0)
        ret = bdrv_pwrite(file, end - LUKS_SECTOR, LUKS_SECTOR, zero, 0);
    if (ret == 0)
        ret = bdrv_flush(file);
    if (ret < 0 && errp && !*errp)
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "Could not write the LUKS image '%s': %s",
                    bdrv_filename(file), g_strerror(-ret));
    return ret;
}

/* query-named-block-nodes: a LUKS node is encrypted. */
static void luks_get_image_info(BlockNode *bs, BdrvImageInfo *info)
{
    info->encrypted = true;
}

const BlockDriver bdrv_luks = {
    .name = "luks",
    .state_size = sizeof(LuksState),
    .open = luks_open,
    .close = luks_close,
    .format = luks_format,
    .get_length = luks_get_length,
    .get_image_info = luks_get_image_info,
    .truncate = luks_truncate,
    .refresh_limits = luks_refresh_limits,
    .describe = luks_describe,
    .pread = luks_pread,
    .pwrite = luks_pwrite,
    .supported_write_flags = BDRV_REQ_FUA,
};
