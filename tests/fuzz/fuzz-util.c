/*
 * fuzz-util.c - helpers of the fuzz targets (see fuzz.h).
 */
#include "tests/fuzz/fuzz.h"

#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int fuzz_memfd(const void *data, size_t size, char path[64])
{
    int fd = memfd_create("snapnbd-fuzz", MFD_CLOEXEC);
    const char *p = data;

    if (fd < 0)
        return -1;
    while (size > 0) {
        ssize_t n = write(fd, p, size);
        if (n <= 0) {
            close(fd);
            return -1;
        }
        p += n;
        size -= n;
    }
    snprintf(path, 64, "/proc/self/fd/%d", fd);
    return fd;
}

static GPtrArray *private_dirs;

static void remove_dirs(void)
{
    for (guint i = 0; i < private_dirs->len; i++) {
        const char *d = g_ptr_array_index(private_dirs, i);
        g_autoptr(GDir) dir = g_dir_open(d, 0, NULL);
        const char *name;

        while (dir && (name = g_dir_read_name(dir))) {
            g_autofree char *p = g_build_filename(d, name, NULL);
            unlink(p);
        }
        rmdir(d);
    }
}

void fuzz_remove_at_exit(char *path)
{
    if (!private_dirs) {
        private_dirs = g_ptr_array_new_with_free_func(g_free);
        atexit(remove_dirs);
    }
    g_ptr_array_add(private_dirs, path);
}
