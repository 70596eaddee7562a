/*
 * fuzz-util.c - helpers of the fuzz targets (see fuzz.h).
 */
#include "tests/fuzz/fuzz.h"

#include <stdio.h>
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
