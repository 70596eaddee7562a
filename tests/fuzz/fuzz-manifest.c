/*
 * fuzz-manifest.c - snapnbd-backup's backup directory as it reads it:
 * manifests (key files) and sums files, untrusted as any file on disk.
 *
 * The input is a manifest, optionally followed by a line "--sums--" and
 * the sums file; both are written into a private directory as backup
 * 0001-full (with an empty qcow2 file beside them), and the chain is
 * loaded and listed.  The sums file is checked against the manifest's
 * SHA-256 first, so the target puts the right one into the loaded
 * manifest before the sums are read: their parser is fuzzed too.
 */
#include "tests/fuzz/fuzz.h"
#include "tools/backup.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

G_DEFINE_QUARK(snapnbd-backup-error-quark, backup_error)

static char *dir;

/* Plain writes: g_file_set_contents may fsync, which is slow. */
static void put_file(const char *name, const char *data, size_t len)
{
    g_autofree char *path = g_build_filename(dir, name, NULL);
    FILE *f = fopen(path, "w");

    if (!f)
        abort();
    fwrite(data, 1, len, f);
    fclose(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    g_autofree char *text = g_strndup((const char *)data, size);
    char *sums = strstr(text, "\n--sums--\n");
    g_autoptr(GPtrArray) chain = NULL, list = NULL;
    g_autofree char *newest = NULL;

    if (sums) {
        *sums = 0;
        sums += strlen("\n--sums--\n");
    }
    put_file("0001-full.manifest", text, strlen(text));
    put_file("0001-full.sums", sums ? sums : "", sums ? strlen(sums) : 0);
    chain = chain_load(dir, "0001-full", NULL);
    list = chain_list(dir, NULL);
    newest = chain_newest(dir, NULL);
    if (chain && chain->len > 0) {
        Backup *b = chain->pdata[chain->len - 1];
        g_autoptr(GArray) chunks = g_array_new(FALSE, FALSE, sizeof(Extent));
        g_autoptr(GArray) got = g_array_new(FALSE, FALSE, sizeof(ChunkSum));
        g_free(b->sums_sha256);
        b->sums_sha256 = g_compute_checksum_for_string(G_CHECKSUM_SHA256,
                                                       sums ? sums : "", -1);
        sums_load(b, chunks, got, NULL);
    }
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    dir = g_strdup("/tmp/snapnbd-fuzz-manifest.XXXXXX");
    if (!g_mkdtemp(dir))
        abort();
    put_file("0001-full.qcow2", "", 0);
    fuzz_remove_at_exit(g_strdup(dir));
    return 0;
}
