/*
 * backup-main.c - snapnbd-backup's command line.
 *
 *   snapnbd-backup full URI DIR
 *   snapnbd-backup inc URI DIR --bitmap NAME
 *   snapnbd-backup restore DIR[/BACKUP] TARGET
 *   snapnbd-backup verify DIR[/BACKUP]
 *   snapnbd-backup list DIR
 *
 * Every failure is one line on stderr; the exit status says which kind
 * (BackupErrorCode, documented in docs/snapnbd-backup.pod).
 */
#include "tools/backup.h"

#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_REQUESTS 16
#define DEFAULT_CHUNK (4 << 20)
/* libnbd refuses reads and writes above 64 MiB. */
#define MAX_CHUNK (64 << 20)

G_DEFINE_QUARK(snapnbd-backup-error-quark, backup_error)

static const char usage_text[] =
    "Usage:\n"
    "  snapnbd-backup full URI DIR\n"
    "  snapnbd-backup inc URI DIR --bitmap NAME\n"
    "  snapnbd-backup restore DIR[/BACKUP] TARGET\n"
    "  snapnbd-backup verify DIR[/BACKUP]\n"
    "  snapnbd-backup list DIR\n"
    "Options:\n"
    "  -B, --bitmap NAME      inc: read the ranges qemu:dirty-bitmap:NAME "
    "marks\n"
    "  -r, --requests N       requests in flight (default 16)\n"
    "  -c, --chunk-size SIZE  largest request, e.g. 1M (default 4M)\n"
    "  -p, --progress         draw the progress bar even when stderr is not "
    "a terminal\n"
    "      --no-progress      never draw it\n"
    "  -q, --quiet            no summary on stdout\n"
    "      --force            restore: even a chain that fails "
    "verification\n"
    "  -h, --help             this text\n"
    "  -V, --version\n"
    "See snapnbd-backup(1).\n";

typedef struct Command {
    const char *name;
    int nargs;
    const char *args;
} Command;

static const Command commands[] = {
    {"full", 2, "URI DIR"},
    {"inc", 2, "URI DIR --bitmap NAME"},
    {"restore", 2, "DIR[/BACKUP] TARGET"},
    {"verify", 1, "DIR[/BACKUP]"},
    {"list", 1, "DIR"},
};

static bool parse_size(const char *s, int64_t *out)
{
    char *end;
    uint64_t v = g_ascii_strtoull(s, &end, 10);
    int shift = 0;

    switch (g_ascii_toupper(*end)) {
    case 'K': shift = 10; end++; break;
    case 'M': shift = 20; end++; break;
    case 'G': shift = 30; end++; break;
    }
    if (end == s || *end || v == 0 || v > (uint64_t)MAX_CHUNK >> shift)
        return false;
    *out = (int64_t)v << shift;
    return true;
}

static bool usage_error(GError **errp, const char *fmt, ...)
    G_GNUC_PRINTF(2, 3);
static bool usage_error(GError **errp, const char *fmt, ...)
{
    g_autofree char *msg = NULL;
    va_list ap;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error(errp, BACKUP_ERROR, BACKUP_ERROR_USAGE,
                "%s (see snapnbd-backup --help)", msg);
    return false;
}

enum { OPT_NO_PROGRESS = 256, OPT_FORCE };

/* Parses the options (anywhere on the line); the rest stays in argv. */
static bool parse_options(int *argc, char ***argv, Options *o,
                          GError **errp)
{
    static const struct option longs[] = {
        {"bitmap", required_argument, NULL, 'B'},
        {"requests", required_argument, NULL, 'r'},
        {"chunk-size", required_argument, NULL, 'c'},
        {"progress", no_argument, NULL, 'p'},
        {"no-progress", no_argument, NULL, OPT_NO_PROGRESS},
        {"quiet", no_argument, NULL, 'q'},
        {"force", no_argument, NULL, OPT_FORCE},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    int c;

    opterr = 0;
    while ((c = getopt_long(*argc, *argv, "B:r:c:pqhV", longs, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'B': o->bitmap = optarg; break;
        case 'p': o->progress = true; break;
        case OPT_NO_PROGRESS: o->progress = false; break;
        case 'q': o->quiet = true; break;
        case OPT_FORCE: o->force = true; break;
        case 'h': fputs(usage_text, stdout); exit(0);
        case 'V': printf("snapnbd-backup %s\n", PACKAGE_VERSION); exit(0);
        case 'r':
            o->requests = (int)strtol(optarg, &end, 10);
            if (*end || o->requests < 1 || o->requests > 1024)
                return usage_error(errp, "--requests must be 1 to 1024, "
                                   "not '%s'", optarg);
            break;
        case 'c':
            if (!parse_size(optarg, &o->chunk_size) ||
                o->chunk_size % 512)
                return usage_error(errp, "--chunk-size must be a multiple "
                                   "of 512 up to 64M, not '%s'", optarg);
            break;
        default:
            return usage_error(errp, "unknown or incomplete option '%s'",
                               (*argv)[optind - 1]);
        }
    }
    *argc -= optind;
    *argv += optind;
    return true;
}

static bool run(const Options *o, int argc, char **argv, GError **errp)
{
    const Command *cmd = NULL;

    for (size_t i = 0; argc > 0 && i < G_N_ELEMENTS(commands); i++)
        if (!strcmp(argv[0], commands[i].name))
            cmd = &commands[i];
    if (!argc)
        return usage_error(errp, "no command given");
    if (!cmd)
        return usage_error(errp, "unknown command '%s'", argv[0]);
    if (argc - 1 != cmd->nargs)
        return usage_error(errp, "usage: snapnbd-backup %s %s", cmd->name,
                           cmd->args);
    if (!strcmp(cmd->name, "inc") && !o->bitmap)
        return usage_error(errp, "'%s' needs --bitmap NAME", "inc");
    if (strcmp(cmd->name, "inc") && o->bitmap)
        return usage_error(errp, "--bitmap is for 'inc', not '%s'",
                           cmd->name);
    if (strcmp(cmd->name, "restore") && o->force)
        return usage_error(errp, "--force is for 'restore', not '%s'",
                           cmd->name);
    if (!strcmp(cmd->name, "full") || !strcmp(cmd->name, "inc"))
        return cmd_backup(o, cmd->name[0] == 'i', argv[1], argv[2], errp);
    if (!strcmp(cmd->name, "restore"))
        return cmd_restore(o, argv[1], argv[2], errp);
    if (!strcmp(cmd->name, "verify"))
        return cmd_verify(o, argv[1], errp);
    return cmd_list(o, argv[1], errp);
}

int main(int argc, char **argv)
{
    Options o = {
        .requests = DEFAULT_REQUESTS,
        .chunk_size = DEFAULT_CHUNK,
        .progress = isatty(STDERR_FILENO),
    };
    GError *err = NULL;
    int status = 0;

    if (!parse_options(&argc, &argv, &o, &err) || !run(&o, argc, argv, &err)) {
        fprintf(stderr, "snapnbd-backup: %s\n", err->message);
        status = err->domain == BACKUP_ERROR ? err->code : 1;
        g_error_free(err);
    }
    return status;
}
