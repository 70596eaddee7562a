/*
 * backup-chain.c - the backup directory.
 *
 * Design notes.
 *
 * A backup is three files named by its number and kind, e.g. 0002-inc:
 *
 *   0002-inc.qcow2     the data, a qcow2 layer whose backing file is the
 *                      previous backup ("0001-full.qcow2", a relative name,
 *                      so the directory can move)
 *   0002-inc.sums      one line per chunk the backup wrote: offset, length,
 *                      "data" and its SHA-256, or "zero"
 *   0002-inc.manifest  a GKeyFile: the parent, the export, the counts, the
 *                      SHA-256 of the sums file
 *
 * The manifest is written last, atomically: a backup without one is
 * incomplete and is not part of any chain (its number is not reused).  The
 * chain of a backup follows the manifests' parents down to a full backup;
 * the qcow2 files must agree, each backed by the file its manifest's
 * parent names, so that qemu-img sees the same chain we do.
 */
#include "tools/backup.h"

#include <errno.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define GROUP "backup"
#define MANIFEST_FORMAT 1
#define SUMS_HEADER "# snapnbd-backup sums 1\n"
/* The largest request libnbd makes, so the largest data chunk. */
#define MAX_DATA_CHUNK (64 << 20)
/* A chain deeper than this is a loop in the manifests. */
#define MAX_CHAIN 100000

/* --- one backup ----------------------------------------------------------- */

Backup *backup_new(const char *dir, int seq, bool incremental)
{
    Backup *b = g_new0(Backup, 1);

    b->dir = g_strdup(dir);
    b->seq = seq;
    b->incremental = incremental;
    b->name = g_strdup_printf("%04d-%s", seq, incremental ? "inc" : "full");
    return b;
}

void backup_free(Backup *b)
{
    if (!b)
        return;
    g_free(b->dir);
    g_free(b->name);
    g_free(b->parent);
    g_free(b->source);
    g_free(b->bitmap);
    g_free(b->started);
    g_free(b->sums_sha256);
    g_free(b);
}

char *backup_path(const Backup *b, const char *suffix)
{
    g_autofree char *file = g_strconcat(b->name, suffix, NULL);

    return g_build_filename(b->dir, file, NULL);
}

static void set_int(GKeyFile *kf, const char *key, int64_t v)
{
    g_key_file_set_int64(kf, GROUP, key, v);
}

static void set_str(GKeyFile *kf, const char *key, const char *v)
{
    if (v)
        g_key_file_set_string(kf, GROUP, key, v);
}

bool backup_save(const Backup *b, GError **errp)
{
    g_autoptr(GKeyFile) kf = g_key_file_new();
    g_autofree char *path = backup_path(b, ".manifest");
    g_autofree char *data = NULL;
    gsize len;

    set_int(kf, "format", MANIFEST_FORMAT);
    set_str(kf, "name", b->name);
    set_str(kf, "kind", b->incremental ? "inc" : "full");
    set_str(kf, "parent", b->parent);
    set_int(kf, "sequence", b->seq);
    set_str(kf, "source", b->source);
    set_str(kf, "bitmap", b->bitmap);
    set_int(kf, "export-size", b->size);
    set_str(kf, "started", b->started);
    g_key_file_set_double(kf, GROUP, "seconds", b->seconds);
    set_int(kf, "bytes-read", b->bytes_read);
    set_int(kf, "bytes-dirty", b->bytes_dirty);
    set_int(kf, "bytes-data", b->bytes_data);
    set_int(kf, "bytes-zero", b->bytes_zero);
    set_int(kf, "extents", b->extents);
    set_str(kf, "sums-sha256", b->sums_sha256);
    data = g_key_file_to_data(kf, &len, NULL);
    return g_file_set_contents_full(path, data, len,
                                    G_FILE_SET_CONTENTS_CONSISTENT |
                                        G_FILE_SET_CONTENTS_DURABLE,
                                    0644, errp);
}

static GError *chain_error(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static GError *chain_error(const char *fmt, ...)
{
    va_list ap;
    g_autofree char *msg = NULL;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    return g_error_new(BACKUP_ERROR, BACKUP_ERROR_CHAIN, "%s", msg);
}

/* Fills @b from its manifest's keys; false when one is missing or bad. */
static bool backup_parse(Backup *b, GKeyFile *kf)
{
    g_autofree char *kind = g_key_file_get_string(kf, GROUP, "kind", NULL);
    g_autofree char *name = g_key_file_get_string(kf, GROUP, "name", NULL);
    GError *err = NULL;

    if (!kind || !name || strcmp(name, b->name) ||
        (strcmp(kind, "full") && strcmp(kind, "inc")) ||
        g_key_file_get_int64(kf, GROUP, "format", NULL) != MANIFEST_FORMAT)
        return false;
    b->incremental = !strcmp(kind, "inc");
    b->parent = g_key_file_get_string(kf, GROUP, "parent", NULL);
    b->seq = g_key_file_get_integer(kf, GROUP, "sequence", NULL);
    b->source = g_key_file_get_string(kf, GROUP, "source", NULL);
    b->bitmap = g_key_file_get_string(kf, GROUP, "bitmap", NULL);
    b->started = g_key_file_get_string(kf, GROUP, "started", NULL);
    b->sums_sha256 = g_key_file_get_string(kf, GROUP, "sums-sha256", NULL);
    b->seconds = g_key_file_get_double(kf, GROUP, "seconds", NULL);
    b->bytes_read = g_key_file_get_int64(kf, GROUP, "bytes-read", NULL);
    b->bytes_dirty = g_key_file_get_int64(kf, GROUP, "bytes-dirty", NULL);
    b->bytes_data = g_key_file_get_int64(kf, GROUP, "bytes-data", NULL);
    b->bytes_zero = g_key_file_get_int64(kf, GROUP, "bytes-zero", NULL);
    b->extents = g_key_file_get_int64(kf, GROUP, "extents", NULL);
    b->size = g_key_file_get_int64(kf, GROUP, "export-size", &err);
    if (err) {
        g_error_free(err);
        return false;
    }
    return b->size > 0 && b->sums_sha256 &&
           b->incremental == (b->parent != NULL);
}

static Backup *backup_load(const char *dir, const char *name, GError **errp)
{
    g_autoptr(Backup) b = g_new0(Backup, 1);
    g_autoptr(GKeyFile) kf = g_key_file_new();
    g_autofree char *path = NULL;
    GError *err = NULL;

    b->dir = g_strdup(dir);
    b->name = g_strdup(name);
    path = backup_path(b, ".manifest");
    if (!g_key_file_load_from_file(kf, path, G_KEY_FILE_NONE, &err)) {
        g_propagate_error(errp, chain_error("%s: %s", path, err->message));
        g_error_free(err);
        return NULL;
    }
    if (!backup_parse(b, kf)) {
        g_propagate_error(errp,
                          chain_error("%s: not a snapnbd-backup manifest",
                                      path));
        return NULL;
    }
    return g_steal_pointer(&b);
}

/* --- the directory -------------------------------------------------------- */

/* The number of a backup's file ("0002-inc.qcow2" -> 2), or -1. */
static int name_seq(const char *file)
{
    char *end;
    long n = strtol(file, &end, 10);

    return end != file && *end == '-' && n >= 0 && n < INT_MAX ? (int)n : -1;
}

int chain_next_seq(const char *dir)
{
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
    const char *f;
    int max = 0;

    while (d && (f = g_dir_read_name(d)))
        max = MAX(max, name_seq(f));
    return max + 1;
}

static gint by_seq(gconstpointer a, gconstpointer b)
{
    const Backup *x = *(Backup *const *)a, *y = *(Backup *const *)b;

    return (x->seq > y->seq) - (x->seq < y->seq);
}

GPtrArray *chain_list(const char *dir, GError **errp)
{
    g_autoptr(GPtrArray) list = g_ptr_array_new_with_free_func(
        (GDestroyNotify)backup_free);
    g_autoptr(GError) err = NULL;
    g_autoptr(GDir) d = g_dir_open(dir, 0, &err);
    const char *f;

    if (!d) {
        g_propagate_error(errp, chain_error("%s", err->message));
        return NULL;
    }
    while ((f = g_dir_read_name(d))) {
        g_autofree char *name = NULL;
        Backup *b;
        if (!g_str_has_suffix(f, ".manifest") || name_seq(f) < 0)
            continue;
        name = g_strndup(f, strlen(f) - strlen(".manifest"));
        b = backup_load(dir, name, errp);
        if (!b)
            return NULL;
        g_ptr_array_add(list, b);
    }
    g_ptr_array_sort(list, by_seq);
    return g_steal_pointer(&list);
}

char *chain_newest(const char *dir, GError **errp)
{
    g_autoptr(GPtrArray) list = chain_list(dir, errp);

    if (!list)
        return NULL;
    if (!list->len) {
        g_propagate_error(errp, chain_error("%s has no full backup: take one"
                                            " with 'snapnbd-backup full'",
                                            dir));
        return NULL;
    }
    return g_strdup(((Backup *)list->pdata[list->len - 1])->name);
}

bool backup_resolve(const char *arg, char **dir, char **name, GError **errp)
{
    static const char *const suffixes[] = {".qcow2", ".manifest", ".sums"};
    g_autofree char *base = g_path_get_basename(arg);

    if (g_file_test(arg, G_FILE_TEST_IS_DIR)) {
        *name = chain_newest(arg, errp);
        *dir = *name ? g_strdup(arg) : NULL;
        return *name != NULL;
    }
    for (size_t i = 0; i < G_N_ELEMENTS(suffixes); i++) {
        if (g_str_has_suffix(base, suffixes[i])) {
            base[strlen(base) - strlen(suffixes[i])] = 0;
            break;
        }
    }
    *dir = g_path_get_dirname(arg);
    *name = g_steal_pointer(&base);
    return true;
}

/* The lock file is removed by its holder at the end (chain_unlock).  So
 * a lock taken on a file that was just removed (opened before the removal)
 * is no lock: the path must still name the file locked, else try again. */
int chain_lock(const char *dir, GError **errp)
{
    g_autofree char *path = g_build_filename(dir, ".lock", NULL);

    for (;;) {
        struct stat held, named;
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);

        if (fd < 0) {
            g_propagate_error(errp, chain_error("%s: %s", path,
                                                g_strerror(errno)));
            return -1;
        }
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
            g_propagate_error(errp, chain_error("%s is in use by another "
                                                "snapnbd-backup", dir));
            close(fd);
            return -1;
        }
        if (fstat(fd, &held) == 0 && stat(path, &named) == 0 &&
            held.st_dev == named.st_dev && held.st_ino == named.st_ino)
            return fd;
        close(fd);
    }
}

void chain_unlock(const char *dir, int fd)
{
    g_autofree char *path = g_build_filename(dir, ".lock", NULL);

    if (fd < 0)
        return;
    unlink(path);
    close(fd);
}

/* --- the chain ------------------------------------------------------------ */

/* Is the backup's qcow2 file there? */
static bool layer_exists(const Backup *b, GError **errp)
{
    g_autofree char *path = backup_path(b, ".qcow2");

    if (g_file_test(path, G_FILE_TEST_IS_REGULAR))
        return true;
    g_propagate_error(errp, chain_error("chain broken: %s is missing", path));
    return false;
}

/* Loads @b's parent, which must be older, complete and of the same size. */
static Backup *parent_load(const Backup *b, GError **errp)
{
    GError *err = NULL;
    Backup *p = backup_load(b->dir, b->parent, &err);

    if (!p) {
        g_propagate_prefixed_error(errp, err, "chain broken: %s is layered "
                                   "on %s, which is unusable: ", b->name,
                                   b->parent);
        return NULL;
    }
    if (p->seq >= b->seq || p->size != b->size) {
        g_propagate_error(errp, chain_error("chain broken: %s cannot be "
                                            "layered on %s (%s)", b->name,
                                            p->name, p->seq >= b->seq
                                            ? "it is newer"
                                            : "the export size differs"));
        backup_free(p);
        return NULL;
    }
    return p;
}

GPtrArray *chain_load(const char *dir, const char *name, GError **errp)
{
    g_autoptr(GPtrArray) chain = g_ptr_array_new_with_free_func(
        (GDestroyNotify)backup_free);
    Backup *b = backup_load(dir, name, errp);

    while (b) {
        g_ptr_array_insert(chain, 0, b);
        if (!layer_exists(b, errp))
            return NULL;
        if (!b->incremental)
            return g_steal_pointer(&chain);
        if (chain->len >= MAX_CHAIN) {
            g_propagate_error(errp, chain_error("chain broken: deeper than "
                                                "%d backups", MAX_CHAIN));
            return NULL;
        }
        b = parent_load(b, errp);
    }
    return NULL;
}

BlockNode *qcow2_node_open(const char *path, bool read_only, GError **errp)
{
    g_autoptr(GHashTable) o = g_hash_table_new(g_str_hash, g_str_equal);

    g_hash_table_insert(o, "driver", "qcow2");
    g_hash_table_insert(o, "file.driver", "file");
    g_hash_table_insert(o, "file.filename", (char *)path);
    g_hash_table_insert(o, "read-only", read_only ? "on" : "off");
    return bdrv_open(o, errp);
}

/* Is @node's file the one at @want? (both resolved: names may differ) */
static bool same_file(BlockNode *node, const char *want)
{
    g_autofree char *a = realpath(bdrv_filename(node), NULL);
    g_autofree char *b = realpath(want, NULL);

    return a && b && !strcmp(a, b);
}

/* Checks, from the top down, that each node of the open chain is the file
 * of the backup the manifests say. */
static bool chain_check(const GPtrArray *chain, BlockNode *top,
                        GError **errp)
{
    BlockNode *node = top;

    for (guint i = chain->len; i-- > 0;) {
        const Backup *b = chain->pdata[i];
        g_autofree char *want = backup_path(b, ".qcow2");
        if (!node || !same_file(node, want)) {
            const Backup *child = chain->pdata[MIN(i + 1, chain->len - 1)];
            g_propagate_error(errp, chain_error(
                "chain broken: %s.qcow2 is backed by %s, not by %s.qcow2",
                child->name, node ? bdrv_filename(node) : "nothing",
                b->name));
            return false;
        }
        node = bdrv_child(node, "backing");
    }
    if (node) {
        g_propagate_error(errp, chain_error(
            "chain broken: the full backup %s.qcow2 has a backing file (%s)",
            ((Backup *)chain->pdata[0])->name, bdrv_filename(node)));
        return false;
    }
    return true;
}

BlockNode *chain_open(const GPtrArray *chain, GError **errp)
{
    const Backup *top = chain->pdata[chain->len - 1];
    g_autofree char *path = backup_path(top, ".qcow2");
    GError *err = NULL;
    BlockNode *node = qcow2_node_open(path, true, &err);

    if (!node) {
        g_propagate_error(errp, chain_error("chain broken: %s",
                                            err->message));
        g_error_free(err);
        return NULL;
    }
    if (!chain_check(chain, node, errp)) {
        bdrv_unref(node);
        return NULL;
    }
    if (bdrv_getlength(node) != top->size) {
        g_propagate_error(errp, chain_error("chain broken: %s is not of the"
                                            " size its manifest says", path));
        bdrv_unref(node);
        return NULL;
    }
    return node;
}

/* --- checksums ------------------------------------------------------------ */

static void to_hex(const uint8_t *sha, char *hex)
{
    for (int i = 0; i < 32; i++)
        sprintf(hex + 2 * i, "%02x", sha[i]);
}

static bool from_hex(const char *hex, uint8_t *sha)
{
    for (int i = 0; i < 32; i++) {
        int hi = g_ascii_xdigit_value(hex[2 * i]);
        int lo = hi < 0 ? -1 : g_ascii_xdigit_value(hex[2 * i + 1]);
        if (lo < 0)
            return false;
        sha[i] = hi << 4 | lo;
    }
    return hex[64] == 0;
}

static char *sha256_hex(const void *data, size_t len)
{
    uint8_t sha[32];
    char *hex = g_malloc(65);

    gnutls_hash_fast(GNUTLS_DIG_SHA256, data, len, sha);
    to_hex(sha, hex);
    return hex;
}

bool sums_save(Backup *b, const GArray *chunks, const ChunkSum *sums,
               GError **errp)
{
    g_autoptr(GString) s = g_string_new(SUMS_HEADER);
    g_autofree char *path = backup_path(b, ".sums");
    char hex[65];

    for (guint i = 0; i < chunks->len; i++) {
        const Extent *k = &g_array_index(chunks, Extent, i);
        g_string_append_printf(s, "%" PRId64 " %" PRId64 " ", k->offset,
                               k->length);
        if (sums[i].zero) {
            g_string_append(s, "zero\n");
        } else {
            to_hex(sums[i].sha256, hex);
            g_string_append_printf(s, "data %s\n", hex);
        }
    }
    g_free(b->sums_sha256);
    b->sums_sha256 = sha256_hex(s->str, s->len);
    b->extents = chunks->len;
    return g_file_set_contents_full(path, s->str, s->len,
                                    G_FILE_SET_CONTENTS_CONSISTENT |
                                        G_FILE_SET_CONTENTS_DURABLE,
                                    0644, errp);
}

/* One line of a sums file into @k and @sum. */
static bool sums_parse_line(const char *line, int64_t size, Extent *k,
                            ChunkSum *sum)
{
    char kind[8], hex[72] = "";
    int n = sscanf(line, "%" SCNd64 " %" SCNd64 " %7s %71s", &k->offset,
                   &k->length, kind, hex);

    if (n < 3 || k->offset < 0 || k->length <= 0 || k->offset > size ||
        k->length > size - k->offset)
        return false;
    sum->zero = !strcmp(kind, "zero");
    k->zero = false;
    if (sum->zero)
        return n == 3;
    /* A data chunk was one request: it fits one buffer. */
    return n == 4 && !strcmp(kind, "data") && k->length <= MAX_DATA_CHUNK &&
           from_hex(hex, sum->sha256);
}

bool sums_load(const Backup *b, GArray *chunks, GArray *sums, GError **errp)
{
    g_autofree char *path = backup_path(b, ".sums");
    g_autofree char *data = NULL, *sha = NULL;
    g_auto(GStrv) lines = NULL;
    gsize len;

    if (!g_file_get_contents(path, &data, &len, errp))
        return false;
    sha = sha256_hex(data, len);
    if (strcmp(sha, b->sums_sha256) || !g_str_has_prefix(data, SUMS_HEADER)) {
        g_set_error(errp, BACKUP_ERROR, BACKUP_ERROR_CORRUPT,
                    "%s: the checksum file differs from the one the "
                    "manifest describes", path);
        return false;
    }
    lines = g_strsplit(data + strlen(SUMS_HEADER), "\n", -1);
    for (guint i = 0; lines[i] && lines[i][0]; i++) {
        Extent k;
        ChunkSum sum;
        if (!sums_parse_line(lines[i], b->size, &k, &sum)) {
            g_set_error(errp, BACKUP_ERROR, BACKUP_ERROR_CORRUPT,
                        "%s:%u: bad line", path, i + 2);
            return false;
        }
        g_array_append_val(chunks, k);
        g_array_append_val(sums, sum);
    }
    return true;
}
