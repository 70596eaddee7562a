/*
 * file.c - the "file" protocol driver: a host file or block device.
 *
 * Design notes.
 *
 * I/O runs on the calling worker thread.  With aio=threads it is plain
 * preadv2/pwritev2 (the worker threads of the server are the thread pool).
 * With aio=io_uring each worker thread owns a ring of its own, created on
 * first use: a request becomes one SQE (a FUA write becomes a write with
 * RWF_DSYNC, no separate flush) and one io_uring_submit_and_wait.  Rings are
 * per thread so no lock is taken on the I/O path.  If a ring cannot be set
 * up at open, the node falls back to aio=threads and says so in -v output.
 *
 * Image locking uses the OFD byte-range locks of QEMU's file-posix: a shared
 * lock on byte 100+P for each permission P held, and on byte 200+P for each
 * permission not shared with others (P: 0 consistent read, 1 write,
 * 2 write unchanged, 3 resize).  So qemu-nbd, qemu-img and snapnbd see each
 * other's locks.
 */
#include "block-int.h"
#include "nocancel.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

enum { LOCK_PERM_BASE = 100, LOCK_SHARED_BASE = 200 };
/* QEMU locks the first four permissions (not graph-mod). */
enum { LOCKED_PERMS = 4 };

typedef enum { AIO_THREADS, AIO_IO_URING } FileAio;

typedef struct FileState {
    int fd;
    char *filename;
    FileAio aio;
    bool use_locking;
    bool is_block_device;
    /* auto-read-only: the descriptor is read-only until a parent takes
     * a write permission (file_set_perm reopens it then), as QEMU's. */
    bool fd_read_only;
    uint32_t direct_alignment; /* O_DIRECT block size, with cache.direct */
    int no_splice;             /* atomic: splice() refused this file */
} FileState;

static void ring_free(gpointer p)
{
    io_uring_queue_exit(p);
    g_free(p);
}

static GPrivate thread_ring = G_PRIVATE_INIT(ring_free);

static struct io_uring *get_ring(void)
{
    struct io_uring *ring = g_private_get(&thread_ring);

    if (!ring) {
        ring = g_new0(struct io_uring, 1);
        if (io_uring_queue_init(8, ring, 0) < 0) {
            g_free(ring);
            return NULL;
        }
        g_private_set(&thread_ring, ring);
    }
    return ring;
}

/* One read or write through this thread's ring; returns bytes or -errno. */
static ssize_t uring_rw(int fd, bool write, void *buf, size_t len,
                        int64_t offset, int rw_flags)
{
    struct io_uring *ring = get_ring();
    struct io_uring_sqe *sqe;
    struct io_uring_cqe *cqe;
    ssize_t ret;

    if (!ring)
        return -EAGAIN;
    sqe = io_uring_get_sqe(ring);
    if (write)
        io_uring_prep_write(sqe, fd, buf, len, offset);
    else
        io_uring_prep_read(sqe, fd, buf, len, offset);
    sqe->rw_flags = rw_flags;
    do {
        ret = io_uring_submit_and_wait(ring, 1);
    } while (ret == -EINTR);
    if (ret < 0) {
        /* The SQE may still sit in the ring: a later submit would run it
         * against a stale buffer.  Throw the ring away; the caller falls
         * back to a plain syscall. */
        g_private_replace(&thread_ring, NULL);
        return -EAGAIN;
    }
    ret = io_uring_wait_cqe(ring, &cqe);
    if (ret < 0)
        return ret;
    ret = cqe->res;
    io_uring_cqe_seen(ring, cqe);
    return ret;
}

static ssize_t do_rw(FileState *s, bool write, void *buf, size_t len,
                     int64_t offset, int rw_flags)
{
    ssize_t ret;

    if (s->aio == AIO_IO_URING) {
        ret = uring_rw(s->fd, write, buf, len, offset, rw_flags);
        if (ret != -EAGAIN)
            return ret;
    }
    do {
        struct iovec iov = { .iov_base = buf, .iov_len = len };
        ret = write ? nc_pwritev2(s->fd, &iov, 1, offset, rw_flags)
                    : nc_preadv2(s->fd, &iov, 1, offset, 0);
    } while (ret < 0 && errno == EINTR);
    return ret < 0 ? -errno : ret;
}

static int file_pread(BlockNode *bs, int64_t offset, int64_t bytes, void *buf)
{
    FileState *s = bs->opaque;

    while (bytes > 0) {
        ssize_t n = do_rw(s, false, buf, bytes, offset, 0);
        if (n < 0)
            return n;
        if (n == 0) {
            /* Past the end of a file that shrank: reads as zeroes. */
            memset(buf, 0, bytes);
            return 0;
        }
        buf = (char *)buf + n;
        offset += n;
        bytes -= n;
    }
    return 0;
}

/* Moves page cache pages into the pipe (no copy on tmpfs and most file
 * systems).  Never waits for room in the pipe: the caller's pipe is
 * empty and big enough, else -EAGAIN.  O_DIRECT files bypass the page
 * cache, so they do not splice. */
static int file_pread_pipe(BlockNode *bs, int64_t offset, int64_t bytes,
                           int pipe_fd)
{
    FileState *s = bs->opaque;

    if (bs->cache_direct || g_atomic_int_get(&s->no_splice))
        return -ENOTSUP;
    while (bytes > 0) {
        loff_t off = offset;
        ssize_t n = nc_splice(s->fd, &off, pipe_fd, NULL, bytes,
                              SPLICE_F_MOVE | SPLICE_F_NONBLOCK);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EINVAL) {
            /* The file system cannot splice: not worth asking again. */
            g_atomic_int_set(&s->no_splice, 1);
            return -ENOTSUP;
        }
        if (n < 0)
            return -errno;
        if (n == 0)
            return -ENOTSUP; /* past the end of a file that shrank */
        offset += n;
        bytes -= n;
    }
    return 0;
}

static int file_pwrite(BlockNode *bs, int64_t offset, int64_t bytes,
                       const void *buf, int flags)
{
    FileState *s = bs->opaque;
    int rw_flags = (flags & BDRV_REQ_FUA) ? RWF_DSYNC : 0;

    while (bytes > 0) {
        ssize_t n = do_rw(s, true, (void *)buf, bytes, offset, rw_flags);
        if (n < 0)
            return n;
        if (n == 0)
            return -ENOSPC;
        buf = (const char *)buf + n;
        offset += n;
        bytes -= n;
    }
    return 0;
}

static int file_fallocate(FileState *s, int mode, int64_t offset,
                          int64_t bytes)
{
    int ret;

    do {
        ret = fallocate(s->fd, mode, offset, bytes);
    } while (ret < 0 && errno == EINTR);
    if (ret == 0)
        return 0;
    if (errno == EOPNOTSUPP || errno == ENOSYS)
        return -ENOTSUP;
    return -errno;
}

static int file_pwrite_zeroes(BlockNode *bs, int64_t offset, int64_t bytes,
                              int flags)
{
    FileState *s = bs->opaque;
    int ret = -ENOTSUP;

    if (s->is_block_device) {
        uint64_t range[2] = { offset, bytes };
        /* BLKZEROOUT may write zeroes block by block: not a fast zero. */
        if (flags & BDRV_REQ_NO_FALLBACK)
            return -ENOTSUP;
        if (ioctl(s->fd, BLKZEROOUT, range) == 0)
            return 0;
        return -ENOTSUP;
    }
    if (flags & BDRV_REQ_MAY_UNMAP)
        ret = file_fallocate(s, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                             offset, bytes);
    if (ret == -ENOTSUP)
        ret = file_fallocate(s, FALLOC_FL_ZERO_RANGE, offset, bytes);
    return ret;
}

static int file_pdiscard(BlockNode *bs, int64_t offset, int64_t bytes)
{
    FileState *s = bs->opaque;

    if (s->is_block_device) {
        uint64_t range[2] = { offset, bytes };
        return ioctl(s->fd, BLKDISCARD, range) == 0 ? 0 : -ENOTSUP;
    }
    return file_fallocate(s, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                          offset, bytes);
}

static int file_flush(BlockNode *bs)
{
    FileState *s = bs->opaque;

    return fdatasync(s->fd) == 0 ? 0 : -errno;
}

static int file_prefetch(BlockNode *bs, int64_t offset, int64_t bytes)
{
    FileState *s = bs->opaque;

    posix_fadvise(s->fd, offset, bytes, POSIX_FADV_WILLNEED);
    return 0;
}

/* Data or hole from SEEK_DATA/SEEK_HOLE; anything unclear is data. */
static int file_block_status(BlockNode *bs, int64_t offset, int64_t bytes,
                             int64_t *pnum)
{
    FileState *s = bs->opaque;
    off_t data, hole;

    *pnum = bytes;
    if (s->is_block_device)
        return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
    data = lseek(s->fd, offset, SEEK_DATA);
    if (data < 0) {
        if (errno == ENXIO) /* only a hole up to the end of the file */
            return BDRV_BLOCK_ZERO;
        return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
    }
    if (data > offset) {
        *pnum = MIN(bytes, data - offset);
        return BDRV_BLOCK_ZERO;
    }
    hole = lseek(s->fd, offset, SEEK_HOLE);
    if (hole > offset)
        *pnum = MIN(bytes, hole - offset);
    return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
}

/* As in QEMU 7.2, whose lengths count 512-byte sectors: a file of 1000
 * bytes is 1024 bytes long, the tail past its end reads as zeroes
 * (file_pread) and a write there extends the file. */
static int64_t file_get_length(BlockNode *bs)
{
    FileState *s = bs->opaque;
    off_t end = lseek(s->fd, 0, SEEK_END);

    return end < 0 ? -errno : (end + 511) & ~(off_t)511;
}

/* O_DIRECT alignment: the smallest size a direct read accepts. */
static uint32_t probe_alignment(int fd)
{
    static const uint32_t sizes[] = { 512, 1024, 2048, 4096 };
    void *buf;
    int sector_size;

    if (ioctl(fd, BLKSSZGET, &sector_size) == 0 && sector_size > 0)
        return sector_size;
    if (posix_memalign(&buf, 4096, 4096) != 0)
        return 4096;
    for (size_t i = 0; i < G_N_ELEMENTS(sizes); i++) {
        ssize_t n = pread(fd, buf, sizes[i], 0);
        /* An empty file accepts anything; only a real read proves it. */
        if (n > 0) {
            free(buf);
            return sizes[i];
        }
        if (n == 0)
            break;
    }
    free(buf);
    return 4096;
}

/* O_DIRECT cannot read or write a partial last block: an image whose size
 * is not a multiple of the block size is refused with cache=none rather
 * than served with an unreadable tail (qemu-nbd rounds the size up). */
static bool check_direct_size(FileState *s, GError **errp)
{
    off_t size = lseek(s->fd, 0, SEEK_END);

    s->direct_alignment = probe_alignment(s->fd);
    if (size >= 0 && size % s->direct_alignment == 0)
        return true;
    g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                "Cannot use cache=none on '%s': its size (%lld bytes) is not "
                "a multiple of its %u-byte block size",
                s->filename, (long long)size, s->direct_alignment);
    return false;
}

static void file_refresh_limits(BlockNode *bs, BlockLimits *limits)
{
    FileState *s = bs->opaque;

    if (bs->cache_direct) {
        limits->request_alignment = s->direct_alignment;
        limits->buffer_alignment = s->direct_alignment;
    }
    limits->max_transfer = 1 << 30;
}

static char *file_describe(BlockNode *bs)
{
    FileState *s = bs->opaque;

    return g_strdup_printf("%s (aio=%s, cache.direct=%s, locking=%s)",
                           s->filename,
                           s->aio == AIO_IO_URING ? "io_uring" : "threads",
                           bs->cache_direct ? "on" : "off",
                           s->use_locking ? "on" : "off");
}

static int lock_byte(int fd, int cmd, short type, off_t byte)
{
    struct flock fl = {
        .l_whence = SEEK_SET, .l_start = byte, .l_len = 1, .l_type = type,
    };

    if (fcntl(fd, cmd, &fl) < 0)
        return -errno;
    if (cmd == F_OFD_GETLK)
        return fl.l_type == F_UNLCK ? 0 : -EAGAIN;
    return 0;
}

/* Holds QEMU's lock bytes for @perms taken and @unshared permissions (and
 * lets go of the others), then checks that no other open file description
 * holds a conflicting one. */
static bool apply_locks(FileState *s, unsigned perms, unsigned unshared,
                        GError **errp)
{
    for (int p = 0; p < LOCKED_PERMS; p++) {
        short perm_lock = ((perms >> p) & 1) ? F_RDLCK : F_UNLCK;
        short share_lock = ((unshared >> p) & 1) ? F_RDLCK : F_UNLCK;
        if (lock_byte(s->fd, F_OFD_SETLK, perm_lock, LOCK_PERM_BASE + p) < 0 ||
            lock_byte(s->fd, F_OFD_SETLK, share_lock,
                      LOCK_SHARED_BASE + p) < 0)
            goto failed_to_lock;
    }
    for (int p = 0; p < LOCKED_PERMS; p++) {
        const char *what = NULL;
        if (((perms >> p) & 1) &&
            lock_byte(s->fd, F_OFD_GETLK, F_WRLCK, LOCK_SHARED_BASE + p) < 0)
            what = "";
        else if (((unshared >> p) & 1) &&
                 lock_byte(s->fd, F_OFD_GETLK, F_WRLCK, LOCK_PERM_BASE + p) <
                     0)
            what = "shared";
        if (what) {
            g_autofree char *name = bdrv_perm_names(1u << p);
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_BUSY,
                        "Failed to get %s%s\"%s\" lock on '%s': is another "
                        "process using the image?",
                        what, *what ? " " : "", name, s->filename);
            return false;
        }
    }
    return true;

failed_to_lock:
    g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                "Failed to lock '%s': %s", s->filename, g_strerror(errno));
    return false;
}

static int file_reopen_writable(BlockNode *bs, GError **errp);

/* The locks follow the node's permissions, as QEMU's file-posix's do: two
 * nodes of this process on one image conflict as two processes would.  A
 * writable auto-read-only node gets its writable descriptor with its
 * first writer (in QEMU's words when the file refuses). */
static bool file_set_perm(BlockNode *bs, uint32_t perm, uint32_t shared,
                          GError **errp)
{
    FileState *s = bs->opaque;
    uint32_t writing = BDRV_PERM_WRITE | BDRV_PERM_WRITE_UNCHANGED |
                       BDRV_PERM_RESIZE;

    if ((perm & writing) && s->fd_read_only && !bs->read_only) {
        g_autoptr(GError) err = NULL;
        int ret = file_reopen_writable(bs, &err);
        if (ret < 0) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                        "Could not open '%s': %s", s->filename,
                        g_strerror(-ret));
            return false;
        }
    }
    if (!s->use_locking)
        return true;
    return apply_locks(s, perm, ~shared & BDRV_PERM_ALL, errp);
}

static bool parse_aio(FileState *s, const char *aio, bool cache_direct,
                      GError **errp)
{
    if (!aio || !strcmp(aio, "threads")) {
        s->aio = AIO_THREADS;
    } else if (!strcmp(aio, "native") && !cache_direct) {
        /* qemu-nbd's rule: Linux AIO only makes sense without the cache. */
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "aio=native was specified, but it requires "
                    "cache.direct=on, which was not specified.");
        return false;
    } else if (!strcmp(aio, "io_uring") || !strcmp(aio, "native")) {
        struct io_uring probe;
        s->aio = AIO_IO_URING;
        if (io_uring_queue_init(2, &probe, 0) < 0) {
            if (bdrv_verbose)
                fprintf(stderr, "snapnbd: io_uring is not available here; "
                                "'%s' uses aio=threads\n", s->filename);
            s->aio = AIO_THREADS;
        } else {
            io_uring_queue_exit(&probe);
        }
    } else {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Invalid aio option '%s' (use threads or io_uring)", aio);
        return false;
    }
    return true;
}

static bool parse_locking(FileState *s, const char *locking, GError **errp)
{
    if (!locking || !strcmp(locking, "auto")) {
        struct flock fl = { .l_whence = SEEK_SET, .l_start = 0, .l_len = 1,
                            .l_type = F_WRLCK };
        s->use_locking = fcntl(s->fd, F_OFD_GETLK, &fl) == 0;
    } else if (!strcmp(locking, "on")) {
        s->use_locking = true;
    } else if (!strcmp(locking, "off")) {
        s->use_locking = false;
    } else {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Invalid locking option '%s' (use auto, on or off)",
                    locking);
        return false;
    }
    return true;
}

static int file_open(BlockNode *bs, GHashTable *options, GError **errp)
{
    FileState *s = bs->opaque;
    g_autofree char *aio = opt_take(options, "aio");
    g_autofree char *locking = opt_take(options, "locking");
    g_autofree char *pr_manager = opt_take(options, "pr-manager");
    int flags = (bs->read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
    struct stat st;

    s->fd = -1;
    s->filename = opt_take(options, "filename");
    if (!s->filename) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Parameter 'filename' is required for the file driver");
        return -EINVAL;
    }
    if (!*s->filename) { /* QEMU's bdrv_open_common */
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "The 'file' block driver requires a file name");
        g_clear_pointer(&s->filename, g_free);
        return -EINVAL;
    }
    /* snapnbd makes no pr-manager-helper objects: QEMU's lookup, which
     * comes before the file is opened, always fails */
    if (pr_manager) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "No persistent reservation manager with id '%s'",
                    pr_manager);
        g_clear_pointer(&s->filename, g_free);
        return -EINVAL;
    }
    if (bs->cache_direct)
        flags |= O_DIRECT;
    s->fd_read_only = bs->read_only || bs->auto_read_only;
    if (s->fd_read_only)
        flags = (flags & ~O_RDWR) | O_RDONLY;
    s->fd = open(s->filename, flags);
    if (s->fd < 0) {
        int err = errno;
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "Could not open '%s': %s%s", s->filename, g_strerror(err),
                    err == EINVAL && bs->cache_direct
                        ? " (the filesystem may not support cache=none)"
                        : "");
        g_clear_pointer(&s->filename, g_free);
        return -err;
    }
    if (fstat(s->fd, &st) < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "Could not stat file: %s", g_strerror(errno));
        goto fail;
    }
    /* QEMU's host_device is this driver's block device (qemu-nbd users
     * give /dev/sdX); anything else but a regular file is refused. */
    s->is_block_device = S_ISBLK(st.st_mode);
    if (!S_ISREG(st.st_mode) && !s->is_block_device) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "'file' driver requires '%s' to be a regular file",
                    s->filename);
        goto fail;
    }
    if (bs->cache_direct && !check_direct_size(s, errp))
        goto fail;
    bs->filename = g_strdup(s->filename);
    if (!parse_aio(s, aio, bs->cache_direct, errp) ||
        !parse_locking(s, locking, errp))
        goto fail;
    return 0;

fail:
    close(s->fd);
    s->fd = -1;
    g_clear_pointer(&s->filename, g_free);
    return -EINVAL;
}

static void file_close(BlockNode *bs)
{
    FileState *s = bs->opaque;

    if (s->fd >= 0)
        close(s->fd);
    g_free(s->filename);
}

/* The same file, opened for writing under the same descriptor number, so
 * requests in flight and threads' cached numbers stay valid; the image
 * locks are taken again on the new description when the caller refreshes
 * the permissions. */
static int file_reopen_writable(BlockNode *bs, GError **errp)
{
    FileState *s = bs->opaque;
    int flags = O_RDWR | O_CLOEXEC | (bs->cache_direct ? O_DIRECT : 0);
    int fd = open(s->filename, flags);

    if (fd < 0) {
        int err = errno;
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "Could not reopen '%s' for writing: %s", s->filename,
                    g_strerror(err));
        return -err;
    }
    if (dup3(fd, s->fd, O_CLOEXEC) < 0) {
        int err = errno;
        close(fd);
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "Could not reopen '%s' for writing: %s", s->filename,
                    g_strerror(err));
        return -err;
    }
    close(fd);
    s->fd_read_only = false;
    return 0;
}

static void set_nocow(int fd)
{
#ifdef FS_NOCOW_FL
    int attr;

    if (ioctl(fd, FS_IOC_GETFLAGS, &attr) == 0) {
        attr |= FS_NOCOW_FL;
        ioctl(fd, FS_IOC_SETFLAGS, &attr); /* only where the fs has it */
    }
#endif
}

static int file_create(const char *filename, uint64_t size,
                       GHashTable *options, GError **errp)
{
    GError *err = NULL;
    bool nocow = opt_take_bool(options, "nocow", false, &err);
    g_autofree char *prealloc = opt_take(options, "preallocation");
    int fd, ret = 0;

    if (err) {
        g_propagate_error(errp, err);
        return -EINVAL;
    }
    if (prealloc && strcmp(prealloc, "off") && strcmp(prealloc, "falloc")) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Unsupported preallocation mode '%s' for '%s' "
                    "(use off or falloc)", prealloc, filename);
        return -ENOTSUP;
    }
    if (g_hash_table_size(options) > 0) {
        GList *keys = g_hash_table_get_keys(options);
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Invalid option '%s' for creating '%s'",
                    (const char *)keys->data, filename);
        g_list_free(keys);
        return -EINVAL;
    }
    /* Not O_TRUNC: QEMU's raw_co_create takes the "write" and "resize"
     * locks first, so an image open elsewhere (in this process too: a node
     * of the graph) is refused instead of truncated under its user. */
    fd = open(filename, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        ret = -errno;
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "Could not create '%s': %s", filename, g_strerror(errno));
        return ret;
    }
    FileState lock_state = { .fd = fd, .filename = (char *)filename };
    if (!apply_locks(&lock_state, BDRV_PERM_WRITE | BDRV_PERM_RESIZE,
                     BDRV_PERM_RESIZE, errp)) {
        close(fd);
        return -EBUSY;
    }
    if (nocow)
        set_nocow(fd); /* must happen while the file is still empty */
    if (ftruncate(fd, 0) < 0 || ftruncate(fd, size) < 0 ||
        (prealloc && !strcmp(prealloc, "falloc") && size > 0 &&
         posix_fallocate(fd, 0, size) != 0)) {
        ret = -errno;
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "Could not resize '%s' to %" G_GUINT64_FORMAT " bytes: %s",
                    filename, size, g_strerror(errno));
    }
    close(fd);
    return ret;
}

/* block_resize: regular files only; a device keeps its size (QEMU grows
 * none and refuses to, and shrinking a device means nothing). */
static int file_truncate(BlockNode *bs, int64_t size, GError **errp)
{
    FileState *s = bs->opaque;

    if (s->is_block_device) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Cannot grow device files");
        return -ENOTSUP;
    }
    if (ftruncate(s->fd, size) < 0) {
        int ret = -errno;
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "Failed to resize file: %s", g_strerror(errno));
        return ret;
    }
    return 0;
}

const BlockDriver bdrv_file = {
    .name = "file",
    .state_size = sizeof(FileState),
    .is_protocol = true,
    .open = file_open,
    .close = file_close,
    .create = file_create,
    .get_length = file_get_length,
    .truncate = file_truncate,
    .refresh_limits = file_refresh_limits,
    .describe = file_describe,
    .pread = file_pread,
    .pread_pipe = file_pread_pipe,
    .pwrite = file_pwrite,
    .pwrite_zeroes = file_pwrite_zeroes,
    .pdiscard = file_pdiscard,
    .flush = file_flush,
    .prefetch = file_prefetch,
    .block_status = file_block_status,
    .supported_write_flags = BDRV_REQ_FUA,
    .supported_zero_flags = BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK,
    .set_perm = file_set_perm,
    .reopen_writable = file_reopen_writable,
    .can_fast_zero = true,
};
