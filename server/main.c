/*
 * main.c - snapnbd: the qemu-nbd-compatible server.
 *
 * The NBD server's listener (nbd/listen.c) accepts in a thread of its own
 * and gives each client a thread.  Signals are blocked in every
 * thread and read by the main thread from a signalfd, so a SIGTERM is a
 * normal event: stop accepting, let clients finish what they read, close
 * the image cleanly.  With the control socket (--qmp) and no image, the
 * main thread only waits for that signal (or QMP's quit, which raises it)
 * while the QMP thread does the rest: daemon mode.
 */
#include "block/block.h"
#include "cli.h"
#include "server/nbd/export.h"
#include "image.h"
#include "list.h"
#include "server/nbd/listen.h"
#include "server/nbd/nbd-server.h"
#include "objects.h"
#include "server/qmp/qmp-cli.h"
#include "server/qmp/qmp-int.h"
#include "server/nbd/tls.h"
#include "trace.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* A client that stopped reading replies gets 5 seconds, then its
 * connection is cut so that shutdown always ends. */
static void wait_for_clients(void)
{
    for (int waited = 0; nbd_server_client_count() > 0; waited++) {
        if (waited == 500)
            nbd_server_abort_clients();
        g_usleep(10000);
    }
}

/* Shutdown: no request may wait any more for a blkdebug breakpoint's
 * resume, a throttle group's budget or room in a fleecing store, so that
 * every client can finish. */
static void release_waits(void)
{
    bdrv_debug_release_all();
    throttle_release_all();
    bdrv_cbw_release_all();
}

/* Serves until a signal, or until the last client leaves (without -t). */
static void serve(const CliOptions *o, NbdListener *listener, int sig_fd)
{
    for (;;) {
        struct pollfd fds[2] = {
            { sig_fd, POLLIN, 0 },
            { nbd_listener_client_done_fd(listener), POLLIN, 0 },
        };
        if (poll(fds, 2, -1) < 0 && errno != EINTR)
            break;
        if (fds[0].revents)
            break;
        if (fds[1].revents) {
            char buf[64];

            while (read(fds[1].fd, buf, sizeof(buf)) > 0) {
            }
            if (!o->persistent && nbd_listener_had_client(listener) &&
                nbd_listener_clients(listener) == 0)
                break;
        }
    }
    nbd_listener_stop(listener);
    release_waits();
    nbd_server_shutdown();
    wait_for_clients();
}

/* Started with stdin, stdout or stderr closed, the first image opened
 * would take its number: messages would go into the image, and a stdio
 * monitor would read it.  /dev/null takes the number instead. */
static void open_standard_fds(void)
{
    for (int fd = STDIN_FILENO; fd <= STDERR_FILENO; fd++) {
        if (fcntl(fd, F_GETFD) < 0 && errno == EBADF) {
            int null_fd = open("/dev/null", O_RDWR);

            if (null_fd >= 0 && null_fd != fd) {
                dup2(null_fd, fd);
                close(null_fd);
            }
        }
    }
}

/* What every way out of the daemon closes while its monitors still hear,
 * in qemu-storage-daemon's order, so that QMP clients get the events: no
 * more commands; NBD clients finish what they sent; exports close
 * (BLOCK_EXPORT_DELETED); jobs are cancelled (their events).  quit runs it
 * on the QMP thread before answering, SIGTERM on the main thread; the
 * second run finds nothing left. */
static void close_exports_and_jobs(void)
{
    static GMutex lock;

    g_mutex_lock(&lock);
    qmp_stop_input();
    release_waits();
    nbd_server_shutdown();
    wait_for_clients();
    qmp_nbd_cleanup();
    qmp_jobs_cleanup();
    g_mutex_unlock(&lock);
}

static int block_signals(void)
{
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    return signalfd(-1, &set, SFD_CLOEXEC);
}

/* --fork: the parent exits once the child listens, with the child's
 * status on failure.  Returns the fd the child writes "ready" to. */
static int daemonize(void)
{
    int p[2];
    pid_t pid;
    char status = 1;

    if (pipe(p) < 0 || (pid = fork()) < 0) {
        fprintf(stderr, "snapnbd: cannot fork: %s\n", strerror(errno));
        exit(EXIT_FAILURE);
    }
    if (pid > 0) {
        close(p[1]);
        if (read(p[0], &status, 1) != 1)
            status = 1;
        _exit(status);
    }
    close(p[0]);
    setsid();
    return p[1];
}

static void tell_parent(int ready_fd, char status)
{
    int null_fd;

    if (ready_fd < 0)
        return;
    if (write(ready_fd, &status, 1) < 0) {
        /* the parent died: keep serving */
    }
    close(ready_fd);
    null_fd = open("/dev/null", O_RDWR);
    if (null_fd >= 0) {
        dup2(null_fd, STDIN_FILENO);
        dup2(null_fd, STDOUT_FILENO);
        dup2(null_fd, STDERR_FILENO);
        close(null_fd);
    }
}

/* The pid file, as QEMU's qemu_write_pidfile: created, locked (so a second
 * daemon given the same file fails instead of overwriting it) and kept
 * open, then written.  Its absolute path is kept for the removal at exit,
 * which --daemonize's change to / must not break.  Errors are printed with
 * @prefix (qemu-storage-daemon's "cannot create PID file: "). */
static int pid_fd = -1;
static char *pid_path;

static bool pid_file_open(const char *path, const char *prefix)
{
    for (;;) {
        struct flock lock = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
        struct stat now, opened;
        int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);

        if (fd < 0) {
            fprintf(stderr, "snapnbd: %sCould not create '%s': %s\n", prefix,
                    path, strerror(errno));
            return false;
        }
        if (fstat(fd, &opened) < 0 || fcntl(fd, F_SETLK, &lock) < 0) {
            fprintf(stderr, "snapnbd: %s%s: %s\n", prefix,
                    errno == EAGAIN || errno == EACCES
                        ? "Cannot lock pid file" : "Cannot stat file",
                    strerror(errno));
            close(fd);
            return false;
        }
        /* the one locked must be the one at @path (another daemon may
         * have removed it meanwhile) */
        if (stat(path, &now) == 0 && now.st_ino == opened.st_ino &&
            now.st_dev == opened.st_dev) {
            pid_fd = fd;
            return true;
        }
        close(fd);
    }
}

static bool write_pid_file(const char *path, const char *prefix)
{
    g_autofree char *pid = g_strdup_printf("%d\n", (int)getpid());

    if (!pid_file_open(path, prefix))
        return false;
    if (ftruncate(pid_fd, 0) < 0 ||
        write(pid_fd, pid, strlen(pid)) != (ssize_t)strlen(pid)) {
        fprintf(stderr, "snapnbd: %sFailed to write PID file: %s\n", prefix,
                strerror(errno));
        return false;
    }
    pid_path = realpath(path, NULL);
    return true;
}

/* The exit status when the options stopped startup: help printed
 * (qemu-storage-daemon's status for it), or a failure. */
static int help_or_failure(void)
{
    int status = qmp_cli_help_exit_status();

    return status >= 0 ? status : EXIT_FAILURE;
}

/* --object, JSON or options (QEMU's keyval), in order: as object-add.
 * Messages as qemu-nbd's when an image is served, else as
 * qemu-storage-daemon's (naming the option). */
static bool setup_objects(const CliOptions *o)
{
    bool name_option = !o->filename;

    for (char **s = o->objects; s && *s; s++) {
        if (!(**s == '{' ? qmp_cli_object_add_json(*s, name_option)
                         : qmp_cli_object_add_options(*s, name_option)))
            return false;
    }
    bdrv_set_secret_lookup(secret_lookup);
    bdrv_set_tls_creds_lookup(tls_client_creds);
    return tls_setup(o->tls_creds, o->tls_authz);
}

static BlockNode *open_image(const CliOptions *o)
{
    g_autoptr(GError) err = NULL;
    BlockNode *node = image_open(o, &err);

    if (!node) {
        fprintf(stderr, "snapnbd: %s\n", err->message);
        return NULL;
    }
    if (trace_enabled[TRACE_IMAGE_OPEN]) {
        g_autofree char *d = bdrv_describe(node);
        trace(TRACE_IMAGE_OPEN, "opened %s", d);
    }
    return node;
}

static bool add_export(const CliOptions *o, BlockNode *node)
{
    g_autoptr(GError) err = NULL;
    NbdExport *exp = nbd_export_add(o->export_name ? o->export_name : "",
                                    o->description, node, o->read_only,
                                    cli_writethrough(o), &err);

    if (!exp) {
        fprintf(stderr, "snapnbd: %s\n", err->message);
        return false;
    }
    exp->multi_conn = o->shared != 1;
    exp->allocation_depth = o->allocation_depth;
    /* qemu-nbd offers its -B bitmaps last first: so do we. */
    for (int i = o->bitmaps ? g_strv_length(o->bitmaps) : 0; i-- > 0;) {
        if (!nbd_export_add_bitmap(exp, o->bitmaps[i], &err)) {
            fprintf(stderr, "snapnbd: %s\n", err->message);
            nbd_export_remove(exp->name);
            return false;
        }
    }
    return true;
}

static NbdListener *open_listener(const CliOptions *o)
{
    g_autoptr(GError) err = NULL;
    NbdListener *l = NULL;
    int fd = o->activated_fds
                 ? nbd_listen_fd(NBD_SOCKET_ACTIVATION_FIRST_FD, &err)
             : o->socket_path ? nbd_listen_unix(o->socket_path, &err)
             : nbd_listen_tcp(o->bind ? o->bind : "0.0.0.0",
                              o->port ? o->port : "10809", &err);

    if (fd >= 0)
        l = nbd_listener_start(fd, o->socket_path, o->shared, &err);
    if (!l)
        fprintf(stderr, "snapnbd: %s%s\n", o->activated_fds ?
                "Failed to use socket activation: " : "", err->message);
    return l;
}

/* Daemon mode: the QMP thread and the NBD server it started do the work;
 * the main thread waits for SIGTERM/SIGINT (QMP's quit raises SIGTERM),
 * then stops the control socket first, so that no command runs while the
 * rest goes. */
static int serve_daemon(const CliOptions *o, int sig_fd, int *ready_fd)
{
    struct pollfd pfd = { sig_fd, POLLIN, 0 };

    if (o->pid_file && !write_pid_file(o->pid_file, "cannot create PID file: "))
        return EXIT_FAILURE;
    tell_parent(*ready_fd, 0);
    *ready_fd = -1;
    if (o->daemonize && chdir("/") < 0) {
        /* QEMU's os_setup_post exits then; the daemon has started */
    }
    while (poll(&pfd, 1, -1) < 0 && errno == EINTR) {
    }
    close_exports_and_jobs();
    return EXIT_SUCCESS;
}

int main(int argc, char **argv)
{
    CliOptions o = { 0 };
    BlockNode *node;
    NbdListener *listener;
    int sig_fd, ready_fd = -1, ret = EXIT_FAILURE;

    open_standard_fds();
    if (!cli_parse(argc, argv, &o)) {
        cli_free(&o);
        return EXIT_FAILURE;
    }
    if (o.version) {
        printf("snapnbd " PACKAGE_VERSION "\n");
        return EXIT_SUCCESS;
    }
    if (o.list) {
        ret = list_exports(&o);
        goto out;
    }
    /* objects after both: an iothread object's thread must have the
     * signals blocked, and be the child's */
    sig_fd = block_signals();
    o.fork |= o.daemonize;
    if (o.fork)
        ready_fd = daemonize();
    if (sig_fd < 0)
        goto out;
    if (!setup_objects(&o)) {
        ret = help_or_failure();
        goto out;
    }
    qmp_set_quit_hook(close_exports_and_jobs);
    if (qmp_cli_given() &&
        !qmp_cli_start(o.daemonize ? "-daemonize" : o.fork ? "--fork" : NULL)) {
        ret = help_or_failure();
        goto out;
    }
    if (!o.filename) {
        ret = serve_daemon(&o, sig_fd, &ready_fd);
        goto out;
    }
    node = open_image(&o);
    if (!node)
        goto out;
    if (!add_export(&o, node)) {
        bdrv_unref(node);
        goto out;
    }
    listener = open_listener(&o);
    if (listener && o.pid_file && !write_pid_file(o.pid_file, "")) {
        nbd_listener_stop(listener);
        listener = NULL;
    }
    if (listener) {
        tell_parent(ready_fd, 0);
        ready_fd = -1;
        qmp_nbd_set_cli_server(true);
        serve(&o, listener, sig_fd);
        ret = EXIT_SUCCESS;
    }
    /* The pid file stays, as qemu-nbd 7.2 leaves it (scripts written for
     * it remove it themselves after the SIGTERM). */
    nbd_export_remove(o.export_name ? o.export_name : "");
    bdrv_flush(node);
    bdrv_unref(node);
out:
    /* the control socket's exports, jobs and nodes (nothing if it never
     * ran); the events of the first two still reach its clients */
    qmp_stop_input();
    qmp_nbd_cleanup();
    qmp_jobs_cleanup();
    qmp_stop();
    qmp_block_cleanup();
    throttle_group_delete_all();
    qmp_cli_free();
    objects_cleanup();
    /* Daemon mode removes its pid file, as qemu-storage-daemon does, and
     * last: whoever waits for it to vanish finds every image flushed,
     * closed and unlocked.  (qemu-nbd's mode leaves it, as above.) */
    if (pid_path && ret == EXIT_SUCCESS && !o.filename)
        unlink(pid_path);
    free(pid_path);
    tell_parent(ready_fd, ret == EXIT_SUCCESS ? 0 : 1); /* help: 0 */
    cli_free(&o);
    return ret;
}
