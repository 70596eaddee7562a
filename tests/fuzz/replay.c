/*
 * replay.c - main() for a fuzz target outside libFuzzer: runs the target
 * once per file named on the command line (a directory: each file in it).
 * The normal test suite replays the committed corpora and crash inputs
 * with it (tests/test-fuzz-replay.sh).
 */
#include "tests/fuzz/fuzz.h"

#include <glib.h>
#include <stdio.h>

/* The target may not define an initializer; then this one does nothing. */
__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

static int replay_file(const char *path)
{
    g_autofree char *data = NULL;
    gsize len;
    g_autoptr(GError) err = NULL;

    if (!g_file_get_contents(path, &data, &len, &err)) {
        fprintf(stderr, "replay: %s\n", err->message);
        return 1;
    }
    LLVMFuzzerTestOneInput((const uint8_t *)data, len);
    return 0;
}

int main(int argc, char **argv)
{
    int failed = 0, runs = 0;
    g_autoptr(GPtrArray) files = g_ptr_array_new_with_free_func(g_free);

    /* Names first: the initializer may change the working directory. */
    for (int i = 1; i < argc; i++) {
        g_autofree char *arg = g_canonicalize_filename(argv[i], NULL);
        g_autoptr(GDir) dir = g_dir_open(arg, 0, NULL);
        const char *name;

        if (!dir)
            g_ptr_array_add(files, g_steal_pointer(&arg));
        while (dir && (name = g_dir_read_name(dir)))
            g_ptr_array_add(files, g_build_filename(arg, name, NULL));
    }
    LLVMFuzzerInitialize(&argc, &argv);
    for (guint i = 0; i < files->len; i++, runs++)
        failed |= replay_file(g_ptr_array_index(files, i));
    printf("replay: %d inputs\n", runs);
    return failed;
}
