/*
 * cli.h - the qemu-nbd-compatible command line, parsed into one struct.
 */
#ifndef SNAPNBD_CLI_H
#define SNAPNBD_CLI_H

#include <glib.h>
#include <stdbool.h>

typedef struct CliOptions {
    char *filename;
    char *port;            /* -p, default "10809" */
    char *bind;            /* -b, default "0.0.0.0" */
    char *socket_path;     /* -k */
    char *export_name;     /* -x, default "" */
    char *description;     /* -D */
    char *format;          /* -f; NULL = probe */
    char *cache;           /* --cache, default writeback */
    char *aio;             /* --aio, default threads */
    char *discard;         /* --discard, default ignore */
    char *detect_zeroes;   /* --detect-zeroes, default off */
    char *pid_file;        /* --pid-file, or qemu-storage-daemon's --pidfile */
    char **objects;        /* --object, repeatable */
    char *tls_creds;       /* --tls-creds: id of a tls-creds-* object */
    char *tls_authz;       /* --tls-authz: id of an authz-simple object */
    char *load_snapshot;   /* -l: ID_OR_NAME or snapshot.id=,snapshot.name= */
    char **bitmaps;        /* -B, repeatable: exported dirty bitmaps */
    gint64 offset;         /* -o */
    int shared;            /* -e: clients at once, 0 = unlimited */
    gboolean read_only;
    gboolean persistent;
    gboolean nocache;
    gboolean fork;
    gboolean daemonize;    /* qemu-storage-daemon's --daemonize: --fork,
                            * then the daemon works in / */
    gboolean version;
    gboolean verbose;
    gboolean allocation_depth; /* -A: offer qemu:allocation-depth */
    gboolean snapshot;     /* -s: writes go to a temporary overlay */
    gboolean image_opts;   /* --image-opts: FILENAME is an option string */
    gboolean list;         /* -L: list the exports of a server, as a client */
    char *selinux_label;   /* --selinux-label: refused (no SELinux here) */
    char *connect_device;  /* -c DEV: refused (no kernel NBD client yet) */
    int activated_fds;     /* sockets passed by systemd's socket activation */
    gboolean disconnect;   /* -d DEV: likewise */
} CliOptions;

/* Parses argv; on a bad command line prints one line naming the problem
 * and returns false. */
bool cli_parse(int argc, char **argv, CliOptions *o);
/* --cache asks for stable writes (the export's FUA). */
bool cli_writethrough(const CliOptions *o);
void cli_free(CliOptions *o);

#endif
