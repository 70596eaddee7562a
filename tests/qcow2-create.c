/*
 * qcow2-create FILE SIZE [KEY=VALUE...]: creates a qcow2 image with the
 * block layer's qcow2 driver, for tests/test-qcow2-create.sh to check with
 * qemu-img.  Prints the error and exits 1 on failure.
 */
#include "block/block.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    g_autoptr(GHashTable) opts = g_hash_table_new_full(g_str_hash,
                                                       g_str_equal, g_free,
                                                       g_free);
    GError *err = NULL;

    if (argc < 3) {
        fprintf(stderr, "usage: qcow2-create FILE SIZE [KEY=VALUE...]\n");
        return 2;
    }
    for (int i = 3; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        if (!eq)
            return 2;
        g_hash_table_insert(opts, g_strndup(argv[i], eq - argv[i]),
                            g_strdup(eq + 1));
    }
    if (bdrv_create("qcow2", argv[1], strtoull(argv[2], NULL, 0), opts,
                    &err) < 0) {
        fprintf(stderr, "qcow2-create: %s\n", err->message);
        g_error_free(err);
        return 1;
    }
    return 0;
}
