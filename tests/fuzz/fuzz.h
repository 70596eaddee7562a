/*
 * fuzz.h - what the libFuzzer targets under tests/fuzz/ share.
 *
 * Each target defines LLVMFuzzerTestOneInput (and may define
 * LLVMFuzzerInitialize).  Built with clang -fsanitize=fuzzer (configure
 * --enable-fuzz, ./run fuzz) it is a fuzzer; linked with replay.c instead
 * (any compiler, the normal test suite) it replays the committed corpus
 * and the inputs of crashes found before, so each stays fixed.
 */
#ifndef SNAPNBD_FUZZ_H
#define SNAPNBD_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A memfd holding @size bytes of @data (the image "in memory"), and the
 * path the file driver opens it by; -1 when it cannot be made. */
int fuzz_memfd(const void *data, size_t size, char path[64]);

/* Removes directory @path and the files in it at exit (the private
 * directories of the targets); takes @path. */
void fuzz_remove_at_exit(char *path);

#endif
