/*
 * backup-progress.c - a one-line progress bar on stderr: bytes done, rate,
 * time left.  Only the main thread calls it.  It redraws at most ten times
 * a second so that a fast copy does not spend its time on the terminal.
 */
#include "tools/backup.h"

#include <stdio.h>
#include <string.h>

#define REDRAW_US (G_USEC_PER_SEC / 10)
#define BAR_WIDTH 24

struct Progress {
    int64_t total;
    int64_t done;
    gint64 start;     /* monotonic µs */
    gint64 last_draw;
    bool enabled;
    bool drawn;       /* a line is on the terminal, to erase at the end */
};

Progress *progress_new(int64_t total, bool enabled)
{
    Progress *p = g_new0(Progress, 1);

    p->total = total;
    p->enabled = enabled;
    p->start = g_get_monotonic_time();
    return p;
}

/* "1.5 GiB" in at most 9 characters. */
static void human(char *buf, size_t len, double bytes)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;

    while (bytes >= 1024 && u < 4) {
        bytes /= 1024;
        u++;
    }
    snprintf(buf, len, u ? "%.1f %s" : "%.0f %s", bytes, units[u]);
}

static void draw(Progress *p, gint64 now)
{
    double secs = (now - p->start) / (double)G_USEC_PER_SEC;
    double rate = secs > 0 ? p->done / secs : 0;
    double frac = p->total ? (double)p->done / p->total : 1;
    int fill = CLAMP((int)(frac * BAR_WIDTH), 0, BAR_WIDTH);
    char bar[BAR_WIDTH + 1], done[16], total[16], speed[16];
    char eta[16] = "--:--";

    memset(bar, '#', fill);
    memset(bar + fill, ' ', BAR_WIDTH - fill);
    bar[BAR_WIDTH] = 0;
    human(done, sizeof(done), p->done);
    human(total, sizeof(total), p->total);
    human(speed, sizeof(speed), rate);
    if (rate > 0) {
        int64_t left = (int64_t)((p->total - p->done) / rate);
        snprintf(eta, sizeof(eta), "%02d:%02d", (int)MIN(left / 60, 99),
                 (int)(left % 60));
    }
    fprintf(stderr, "\r[%s] %3d%% %9s / %-9s %9s/s ETA %s\033[K", bar,
            (int)(frac * 100), done, total, speed, eta);
    fflush(stderr);
    p->drawn = true;
    p->last_draw = now;
}

void progress_add(Progress *p, int64_t bytes)
{
    gint64 now;

    if (!p)
        return;
    p->done += bytes;
    if (!p->enabled)
        return;
    now = g_get_monotonic_time();
    if (now - p->last_draw >= REDRAW_US || p->done == p->total)
        draw(p, now);
}

void progress_free(Progress *p)
{
    if (!p)
        return;
    if (p->drawn) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
    }
    g_free(p);
}
