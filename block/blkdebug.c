/*
 * blkdebug.c - QEMU's fault-injection filter: the data of its "image"
 * child (our "file"), with errors injected and requests held on events.
 *
 * Design notes.
 *
 * Rules come from a config file in QEMU's format ("config": [inject-error]
 * and [set-state] sections of key = "value" lines) and from inline options
 * (inject-error.N.KEY, set-state.N.KEY), with QEMU's keys and defaults.
 * Each rule belongs to an event (BlkdebugEvent).  Events reach the node
 * through bdrv_debug_event: a format above raises its metadata events on
 * its "file" child (l2_update, refblock_alloc, ...), io.c raises the
 * request path's (pwritev, flush_to_disk, ...) on the node it serves.
 *
 * As in QEMU, an event with inject-error rules for the current state
 * replaces the armed ("active") rules by those; from then on every request
 * of a matching I/O type that covers the rule's sector fails with its
 * errno, until another such event re-arms, or, with once=on, just the
 * first one (the rule is then gone).  set-state rules move the node's state
 * (initially 1; a rule's state 0 means any).  "immediately" only decides
 * in QEMU whether the error completes before or after a coroutine yield,
 * which a blocking request path does not have: it is accepted and has no
 * effect.
 *
 * Breakpoints (bdrv_debug_breakpoint, QEMU's "break EVENT TAG") are
 * suspend rules: the request that raises the event blocks on a condition
 * variable until resumed.  A breakpoint fires once.  bdrv_debug_release_all
 * resumes everything at shutdown and makes breakpoints hold nothing from
 * then on, so that SIGTERM never waits for a resume that cannot come.
 *
 * Locks: blkdebug_lock guards every blkdebug node's rules, armed rules,
 * state and held requests (a test device: one lock is plenty), and
 * blkdebug_cond is broadcast whenever a request is held or resumed.  No
 * other lock is taken under it; I/O runs with it released.
 */
#include "block-int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef enum {
    ACTION_INJECT_ERROR,
    ACTION_SET_STATE,
    ACTION_SUSPEND,
} RuleAction;

/* QEMU's BlkdebugIOType, in its order (bit numbers of a rule's mask). */
enum {
    IO_READ,
    IO_WRITE,
    IO_WRITE_ZEROES,
    IO_DISCARD,
    IO_FLUSH,
    IO_BLOCK_STATUS,
    IO__MAX,
};

static const char *const iotype_names[IO__MAX] = {
    "read", "write", "write-zeroes", "discard", "flush", "block-status",
};

/* Without "iotype", a rule fails everything but block status. */
#define IO_DEFAULT_MASK ((1u << IO_READ) | (1u << IO_WRITE) | \
                         (1u << IO_WRITE_ZEROES) | (1u << IO_DISCARD) | \
                         (1u << IO_FLUSH))

/* QEMU's BlkdebugEvent names, in the order of the enum. */
static const char *const event_names[BLKDBG__MAX] = {
    "l1_update", "l1_grow_alloc_table", "l1_grow_write_table",
    "l1_grow_activate_table", "l2_load", "l2_update", "l2_update_compressed",
    "l2_alloc_cow_read", "l2_alloc_write", "read_aio", "read_backing_aio",
    "read_compressed", "write_aio", "write_compressed", "vmstate_load",
    "vmstate_save", "cow_read", "cow_write", "reftable_load",
    "reftable_grow", "reftable_update", "refblock_load", "refblock_update",
    "refblock_update_part", "refblock_alloc", "refblock_alloc_hookup",
    "refblock_alloc_write", "refblock_alloc_write_blocks",
    "refblock_alloc_write_table", "refblock_alloc_switch_table",
    "cluster_alloc", "cluster_alloc_bytes", "cluster_free", "flush_to_os",
    "flush_to_disk", "pwritev_rmw_head", "pwritev_rmw_after_head",
    "pwritev_rmw_tail", "pwritev_rmw_after_tail", "pwritev", "pwritev_zero",
    "pwritev_done", "empty_image_prepare", "l1_shrink_write_table",
    "l1_shrink_free_l2_clusters", "cor_write", "cluster_alloc_space", "none",
};

typedef struct BlkdebugRule {
    BlkdebugEvent event;
    RuleAction action;
    int64_t state;          /* fires only in this state; 0: any */
    /* inject-error */
    int error;              /* positive errno */
    bool once;              /* removed after failing one request */
    int64_t offset;         /* a byte the request must cover; -1: any */
    uint32_t iotype_mask;   /* 1 << IO_* */
    /* set-state */
    int64_t new_state;
    /* suspend (a breakpoint) */
    char *tag;
} BlkdebugRule;

/* A request held at a breakpoint, owned by the thread it holds. */
typedef struct Suspended {
    char *tag;
    bool resumed;
} Suspended;

/* All fields but file and the limits are guarded by blkdebug_lock. */
typedef struct BlkdebugState {
    BlockNode *file;
    int64_t state;
    GList *rules[BLKDBG__MAX];  /* of BlkdebugRule *, owned */
    GList *active;              /* armed inject-error rules (in rules[]) */
    GList *suspended;           /* of Suspended *, held requests */
    uint64_t align, max_transfer;
    uint64_t opt_write_zero, max_write_zero, opt_discard, max_discard;
    uint32_t take_child_perms;    /* taken on the child besides the
                                   * parents' (BDRV_PERM_*) */
    uint32_t unshare_child_perms; /* not shared on the child */
} BlkdebugState;

static GMutex blkdebug_lock;
static GCond blkdebug_cond;
static bool released; /* shutdown: breakpoints hold nothing; blkdebug_lock */

/* --- rules ------------------------------------------------------------- */

static int event_by_name(const char *name)
{
    for (int i = 0; i < BLKDBG__MAX; i++)
        if (strcmp(event_names[i], name) == 0)
            return i;
    return -1;
}

static void rule_free(BlkdebugRule *rule)
{
    g_free(rule->tag);
    g_free(rule);
}

/* Takes integer @key of @opts (default @def); false with errp if it is
 * no number. */
static bool take_int(GHashTable *opts, const char *key, int64_t def,
                     int64_t *out, GError **errp)
{
    g_autofree char *v = opt_take(opts, key);
    char *end;

    *out = def;
    if (!v)
        return true;
    errno = 0;
    *out = g_ascii_strtoll(v, &end, 0);
    if (errno || end == v || *end) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Parameter '%s' expects a number, not '%s'", key, v);
        return false;
    }
    return true;
}

static bool take_iotype(GHashTable *opts, uint32_t *mask, GError **errp)
{
    g_autofree char *v = opt_take(opts, "iotype");

    *mask = IO_DEFAULT_MASK;
    if (!v)
        return true;
    for (int i = 0; i < IO__MAX; i++) {
        if (strcmp(v, iotype_names[i]) == 0) {
            *mask = 1u << i;
            return true;
        }
    }
    g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                "Parameter 'iotype' does not accept value '%s'", v);
    return false;
}

static bool take_inject_options(BlkdebugRule *rule, GHashTable *opts,
                                GError **errp)
{
    GError *err = NULL;
    int64_t error, sector;

    if (!take_int(opts, "errno", EIO, &error, errp) ||
        !take_int(opts, "sector", -1, &sector, errp) ||
        !take_iotype(opts, &rule->iotype_mask, errp))
        return false;
    if (error < 0 || error > 4095 || sector < -1 ||
        sector > BDRV_MAX_LENGTH / 512) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Invalid errno or sector in an inject-error rule");
        return false;
    }
    rule->error = error;
    rule->offset = sector < 0 ? -1 : sector * 512;
    rule->once = opt_take_bool(opts, "once", false, &err);
    if (!err)
        opt_take_bool(opts, "immediately", false, &err);
    if (err) {
        g_propagate_error(errp, err);
        return false;
    }
    return true;
}

/* One rule from its options (a config section or inline); every key must
 * be known. */
static bool add_rule(BlkdebugState *s, RuleAction action, GHashTable *opts,
                     const char *where, GError **errp)
{
    g_autofree char *event = opt_take(opts, "event");
    BlkdebugRule *rule;
    GHashTableIter it;
    gpointer key;
    int ev;

    if (!event) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Parameter '%s.event' is missing", where);
        return false;
    }
    ev = event_by_name(event);
    if (ev < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Parameter 'event' does not accept value '%s'", event);
        return false;
    }
    rule = g_new0(BlkdebugRule, 1);
    rule->event = ev;
    rule->action = action;
    if (!take_int(opts, "state", 0, &rule->state, errp) ||
        (action == ACTION_INJECT_ERROR &&
         !take_inject_options(rule, opts, errp)) ||
        (action == ACTION_SET_STATE &&
         !take_int(opts, "new_state", 0, &rule->new_state, errp))) {
        rule_free(rule);
        return false;
    }
    g_hash_table_iter_init(&it, opts);
    if (g_hash_table_iter_next(&it, &key, NULL)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Invalid parameter '%s'", (const char *)key);
        rule_free(rule);
        return false;
    }
    /* QEMU puts a new rule first in its event's list. */
    s->rules[ev] = g_list_prepend(s->rules[ev], rule);
    return true;
}

static bool action_by_group(const char *group, RuleAction *action)
{
    if (strcmp(group, "inject-error") == 0)
        *action = ACTION_INJECT_ERROR;
    else if (strcmp(group, "set-state") == 0)
        *action = ACTION_SET_STATE;
    else
        return false;
    return true;
}

/* A line '[group]' or '[group "id"]': the group's name, or NULL. */
static char *group_name(const char *line)
{
    const char *end = strchr(line, ']');
    const char *space = strpbrk(line, " \t");

    if (!end || end[1])
        return NULL;
    return g_strndup(line + 1, (space && space < end ? space : end) - line - 1);
}

/* Ends the config section in @section, if any: its rule is added. */
static bool end_section(BlkdebugState *s, GHashTable **section,
                        RuleAction action, GError **errp)
{
    bool ok = !*section ||
              add_rule(s, action, *section,
                       action == ACTION_SET_STATE ? "set-state"
                                                  : "inject-error",
                       errp);

    g_clear_pointer(section, g_hash_table_unref);
    return ok;
}

/* The sections of a config file in QEMU's format (qemu_config_parse):
 * '#' comment lines, "[inject-error]" or "[set-state]", key = "value". */
static bool read_config(BlkdebugState *s, const char *path, GError **errp)
{
    g_autofree char *text = NULL;
    g_auto(GStrv) lines = NULL;
    GHashTable *section = NULL;
    g_autoptr(GError) err = NULL;
    RuleAction action = ACTION_INJECT_ERROR;

    if (access(path, R_OK) < 0 ||
        !g_file_get_contents(path, &text, NULL, &err)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Could not read blkdebug config file: %s",
                    err ? err->message : g_strerror(errno));
        return false;
    }
    lines = g_strsplit(text, "\n", -1);
    for (int i = 0; lines[i]; i++) {
        char *line = g_strstrip(lines[i]), *eq;
        g_autofree char *group = NULL, *key = NULL, *value = NULL;
        size_t n;

        if (!*line || *line == '#')
            continue;
        if (*line == '[') {
            if (!end_section(s, &section, action, errp))
                return false;
            group = group_name(line);
            if (!group || !action_by_group(group, &action)) {
                g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                            "Could not parse blkdebug config file: %s:%d: "
                            "there is no option group '%s'", path, i + 1,
                            group ? group : line);
                return false;
            }
            section = opt_new();
            continue;
        }
        eq = strchr(line, '=');
        if (!section || !eq) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                        "Could not parse blkdebug config file: %s:%d: %s",
                        path, i + 1,
                        section ? "parse error" : "no group defined");
            g_clear_pointer(&section, g_hash_table_unref);
            return false;
        }
        key = g_strstrip(g_strndup(line, eq - line));
        value = g_strstrip(g_strdup(eq + 1));
        n = strlen(value);
        if (n >= 2 && value[0] == '"' && value[n - 1] == '"') {
            memmove(value, value + 1, n - 2);
            value[n - 2] = '\0';
        }
        g_hash_table_insert(section, g_steal_pointer(&key),
                            g_steal_pointer(&value));
    }
    return end_section(s, &section, action, errp);
}

static gint compare_indices(gconstpointer a, gconstpointer b)
{
    long x = strtol(*(char *const *)a, NULL, 10);
    long y = strtol(*(char *const *)b, NULL, 10);

    return x < y ? -1 : x > y;
}

/* Inline rules: PREFIX.N.KEY options, in the order of N (QEMU's list). */
static bool take_inline_rules(BlkdebugState *s, GHashTable *options,
                              const char *prefix, RuleAction action,
                              GError **errp)
{
    g_autoptr(GHashTable) all = opt_take_prefix(options, prefix);
    g_autoptr(GPtrArray) indices = g_ptr_array_new_with_free_func(g_free);
    GHashTableIter it;
    gpointer k;

    g_hash_table_iter_init(&it, all);
    while (g_hash_table_iter_next(&it, &k, NULL)) {
        const char *key = k, *dot = strchr(key, '.');
        g_autofree char *index = dot ? g_strndup(key, dot - key) : NULL;
        char *end;
        bool seen = false;

        if (!index || !*index || (strtol(index, &end, 10), *end)) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                        "Parameter '%s.%s' is unexpected (a list of rules "
                        "is expected)", prefix, key);
            return false;
        }
        for (guint i = 0; i < indices->len && !seen; i++)
            seen = strcmp(g_ptr_array_index(indices, i), index) == 0;
        if (!seen)
            g_ptr_array_add(indices, g_steal_pointer(&index));
    }
    g_ptr_array_sort(indices, compare_indices);
    for (guint i = 0; i < indices->len; i++) {
        const char *index = g_ptr_array_index(indices, i);
        g_autoptr(GHashTable) opts = opt_take_prefix(all, index);
        g_autofree char *where = g_strdup_printf("%s[%s]", prefix, index);
        if (!add_rule(s, action, opts, where, errp))
            return false;
    }
    return true;
}

/* QEMU names blkdebug's child "image": its keys become our "file". */
static bool map_image_to_file(GHashTable *options, GError **errp)
{
    g_autoptr(GHashTable) image = opt_take_prefix(options, "image");
    g_autofree char *ref = opt_take(options, "image");
    GHashTableIter it;
    gpointer k, v;

    if ((ref || g_hash_table_size(image)) && opt_has_prefix(options, "file")) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "blkdebug takes its child as 'image' or 'file', not both");
        return false;
    }
    if (ref)
        g_hash_table_insert(options, g_strdup("file"), g_steal_pointer(&ref));
    g_hash_table_iter_init(&it, image);
    while (g_hash_table_iter_next(&it, &k, &v))
        g_hash_table_insert(options, g_strconcat("file.", k, NULL),
                            g_strdup(v));
    return true;
}

/* --- open and limits ------------------------------------------------------ */

/* A limit that must be a multiple of @align (QEMU's messages). */
static bool check_limit(const char *name, uint64_t value, uint64_t align,
                        GError **errp)
{
    if (value && (value >= INT32_MAX || value % align)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Cannot meet constraints with %s %" G_GUINT64_FORMAT,
                    name, value);
        return false;
    }
    return true;
}

static bool take_limits(BlkdebugState *s, GHashTable *options, GError **errp)
{
    return opt_take_size(options, "align", &s->align, errp) &&
           opt_take_size(options, "max-transfer", &s->max_transfer, errp) &&
           opt_take_size(options, "opt-write-zero", &s->opt_write_zero,
                         errp) &&
           opt_take_size(options, "max-write-zero", &s->max_write_zero,
                         errp) &&
           opt_take_size(options, "opt-discard", &s->opt_discard, errp) &&
           opt_take_size(options, "max-discard", &s->max_discard, errp);
}

static bool check_limits(BlkdebugState *s, GError **errp)
{
    uint64_t align;

    if (s->align && (s->align >= INT32_MAX || (s->align & (s->align - 1)))) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Cannot meet constraints with align %" G_GUINT64_FORMAT,
                    s->align);
        return false;
    }
    align = MAX(s->align, bdrv_limits(s->file)->request_alignment);
    return check_limit("max-transfer", s->max_transfer, align, errp) &&
           check_limit("opt-write-zero", s->opt_write_zero, align, errp) &&
           check_limit("max-write-zero", s->max_write_zero,
                       MAX(s->opt_write_zero, align), errp) &&
           check_limit("opt-discard", s->opt_discard, align, errp) &&
           check_limit("max-discard", s->max_discard,
                       MAX(s->opt_discard, align), errp);
}

/* A list of QEMU's BlockPermission names (take-child-perms.N=write). */
static bool take_perms(GHashTable *options, const char *key, uint32_t *out,
                       GError **errp)
{
    static const char *const names[] = {
        "consistent-read", "write", "write-unchanged", "resize", "graph-mod",
    };
    g_autoptr(GHashTable) list = opt_take_prefix(options, key);
    GHashTableIter it;
    gpointer k, v;

    *out = 0;
    g_hash_table_iter_init(&it, list);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        uint32_t bit = 0;
        for (size_t i = 0; i < G_N_ELEMENTS(names) && !bit; i++)
            if (strcmp(v, names[i]) == 0)
                bit = 1u << i;
        if (!bit) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                        "Parameter '%s[%s]' does not accept value '%s'", key,
                        (const char *)k, (const char *)v);
            return false;
        }
        *out |= bit;
    }
    return true;
}

static void free_rules(BlkdebugState *s)
{
    g_mutex_lock(&blkdebug_lock);
    g_list_free(g_steal_pointer(&s->active));
    for (int i = 0; i < BLKDBG__MAX; i++)
        g_list_free_full(g_steal_pointer(&s->rules[i]),
                         (GDestroyNotify)rule_free);
    g_mutex_unlock(&blkdebug_lock);
}

static int blkdebug_open(BlockNode *bs, GHashTable *options, GError **errp)
{
    BlkdebugState *s = bs->opaque;
    g_autofree char *config = opt_take(options, "config");

    s->state = 1;
    if (!map_image_to_file(options, errp) ||
        (config && !read_config(s, config, errp)) ||
        !take_inline_rules(s, options, "inject-error", ACTION_INJECT_ERROR,
                           errp) ||
        !take_inline_rules(s, options, "set-state", ACTION_SET_STATE, errp) ||
        !take_limits(s, options, errp) ||
        !take_perms(options, "take-child-perms", &s->take_child_perms,
                    errp) ||
        !take_perms(options, "unshare-child-perms", &s->unshare_child_perms,
                    errp))
        goto fail;
    s->file = bdrv_open_child(bs, options, "file", errp);
    if (!s->file || !check_limits(s, errp))
        goto fail;
    return 0;

fail:
    free_rules(s);
    return -EINVAL;
}

static void blkdebug_close(BlockNode *bs)
{
    free_rules(bs->opaque);
}

static int64_t blkdebug_get_length(BlockNode *bs)
{
    BlkdebugState *s = bs->opaque;
    return bdrv_getlength(s->file);
}

/* The child's limits, overridden by the options: io.c then aligns and
 * splits requests for this node as a device with those limits needs. */
static void blkdebug_refresh_limits(BlockNode *bs, BlockLimits *limits)
{
    BlkdebugState *s = bs->opaque;

    *limits = *bdrv_limits(s->file);
    if (s->align)
        limits->request_alignment = MAX(s->align,
                                        limits->request_alignment);
    if (s->max_transfer)
        limits->max_transfer = s->max_transfer;
    if (s->opt_write_zero)
        limits->pwrite_zeroes_alignment = s->opt_write_zero;
    if (s->max_write_zero)
        limits->max_pwrite_zeroes = s->max_write_zero;
    if (s->opt_discard)
        limits->pdiscard_alignment = s->opt_discard;
    if (s->max_discard)
        limits->max_pdiscard = s->max_discard;
}

/* --- events and injected errors ------------------------------------------ */

static void process_rule(BlkdebugState *s, BlkdebugRule *rule, bool *armed,
                         int64_t *new_state, GPtrArray *held)
{
    Suspended *r;

    if (rule->state && rule->state != s->state)
        return;
    switch (rule->action) {
    case ACTION_INJECT_ERROR:
        /* The first rule of this event replaces what earlier events
         * armed. */
        if (!*armed)
            g_list_free(g_steal_pointer(&s->active));
        *armed = true;
        s->active = g_list_prepend(s->active, rule);
        break;
    case ACTION_SET_STATE:
        *new_state = rule->new_state;
        break;
    case ACTION_SUSPEND:
        s->rules[rule->event] = g_list_remove(s->rules[rule->event], rule);
        if (!released) {
            r = g_new0(Suspended, 1);
            r->tag = g_steal_pointer(&rule->tag);
            s->suspended = g_list_append(s->suspended, r);
            g_ptr_array_add(held, r);
            if (bdrv_verbose)
                fprintf(stderr, "blkdebug: Suspended request '%s'\n",
                        r->tag);
        }
        rule_free(rule);
        break;
    }
}

static void blkdebug_debug_event(BlockNode *bs, BlkdebugEvent event)
{
    BlkdebugState *s = bs->opaque;
    g_autoptr(GPtrArray) held = g_ptr_array_new();
    bool armed = false;
    int64_t new_state;
    GList *next;

    g_mutex_lock(&blkdebug_lock);
    new_state = s->state;
    for (GList *l = s->rules[event]; l; l = next) {
        next = l->next; /* a breakpoint removes its own rule */
        process_rule(s, l->data, &armed, &new_state, held);
    }
    s->state = new_state;
    if (held->len)
        g_cond_broadcast(&blkdebug_cond); /* for wait_break */
    for (guint i = 0; i < held->len; i++) {
        Suspended *r = g_ptr_array_index(held, i);
        while (!r->resumed && !released)
            g_cond_wait(&blkdebug_cond, &blkdebug_lock);
        s->suspended = g_list_remove(s->suspended, r);
        g_free(r->tag);
        g_free(r);
    }
    g_mutex_unlock(&blkdebug_lock);
}

/* The errno an armed rule injects into this request, or 0 (QEMU's
 * rule_check).  A flush (bytes 0) matches only rules without a sector. */
static int rule_check(BlockNode *bs, int64_t offset, int64_t bytes,
                      int iotype)
{
    BlkdebugState *s = bs->opaque;
    BlkdebugRule *rule = NULL;
    int error = 0;

    if (!g_atomic_pointer_get(&s->active))
        return 0;
    g_mutex_lock(&blkdebug_lock);
    for (GList *l = s->active; l && !rule; l = l->next) {
        BlkdebugRule *r = l->data;
        if ((r->offset == -1 ||
             (bytes && r->offset >= offset && r->offset < offset + bytes)) &&
            (r->iotype_mask & (1u << iotype)))
            rule = r;
    }
    if (rule && rule->error) {
        error = rule->error;
        if (rule->once) {
            s->active = g_list_remove(s->active, rule);
            s->rules[rule->event] = g_list_remove(s->rules[rule->event],
                                                  rule);
            rule_free(rule);
        }
    }
    g_mutex_unlock(&blkdebug_lock);
    if (error && bdrv_verbose)
        fprintf(stderr, "blkdebug: injecting %s into %s at %" G_GINT64_FORMAT
                "\n", g_strerror(error), iotype_names[iotype], offset);
    return -error;
}

/* --- I/O: checked, then passed to the child ---------------------------- */

static int blkdebug_pread(BlockNode *bs, int64_t offset, int64_t bytes,
                          void *buf)
{
    BlkdebugState *s = bs->opaque;
    int ret = rule_check(bs, offset, bytes, IO_READ);

    return ret < 0 ? ret : bdrv_pread(s->file, offset, bytes, buf);
}

static int blkdebug_pwrite(BlockNode *bs, int64_t offset, int64_t bytes,
                           const void *buf, int flags)
{
    BlkdebugState *s = bs->opaque;
    int ret = rule_check(bs, offset, bytes, IO_WRITE);

    return ret < 0 ? ret : bdrv_pwrite(s->file, offset, bytes, buf, flags);
}

static int blkdebug_pwrite_zeroes(BlockNode *bs, int64_t offset,
                                  int64_t bytes, int flags)
{
    BlkdebugState *s = bs->opaque;
    int ret = rule_check(bs, offset, bytes, IO_WRITE_ZEROES);

    return ret < 0 ? ret
                   : bdrv_pwrite_zeroes(s->file, offset, bytes, flags);
}

static int blkdebug_pdiscard(BlockNode *bs, int64_t offset, int64_t bytes)
{
    BlkdebugState *s = bs->opaque;
    int ret = rule_check(bs, offset, bytes, IO_DISCARD);

    return ret < 0 ? ret : bdrv_pdiscard(s->file, offset, bytes);
}

/* io.c flushes the child after this. */
static int blkdebug_flush(BlockNode *bs)
{
    return rule_check(bs, 0, 0, IO_FLUSH);
}

static int blkdebug_prefetch(BlockNode *bs, int64_t offset, int64_t bytes)
{
    BlkdebugState *s = bs->opaque;
    return bdrv_prefetch(s->file, offset, bytes);
}

static int blkdebug_block_status(BlockNode *bs, int64_t offset,
                                 int64_t bytes, int64_t *pnum)
{
    BlkdebugState *s = bs->opaque;
    int ret = rule_check(bs, offset, bytes, IO_BLOCK_STATUS);

    return ret < 0 ? ret : bdrv_block_status(s->file, offset, bytes, pnum);
}

/* --- breakpoints ------------------------------------------------------------ */

static BlkdebugState *find_blkdebug(BlockNode *bs, GError **errp)
{
    const char *name = bs ? bdrv_node_name(bs) : "";

    while (bs && bs->drv != &bdrv_blkdebug)
        bs = bdrv_child(bs, "file");
    if (!bs)
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "No blkdebug node at or below node '%s'", name);
    return bs ? bs->opaque : NULL;
}

bool bdrv_debug_breakpoint(BlockNode *bs, const char *event, const char *tag,
                           GError **errp)
{
    BlkdebugState *s = find_blkdebug(bs, errp);
    BlkdebugRule *rule;
    int ev;

    if (!s)
        return false;
    ev = event_by_name(event);
    if (ev < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Parameter 'event' does not accept value '%s'", event);
        return false;
    }
    rule = g_new0(BlkdebugRule, 1);
    rule->event = ev;
    rule->action = ACTION_SUSPEND;
    rule->tag = g_strdup(tag);
    g_mutex_lock(&blkdebug_lock);
    s->rules[ev] = g_list_prepend(s->rules[ev], rule);
    g_mutex_unlock(&blkdebug_lock);
    return true;
}

/* Resumes the first (or, with @all, every) request held at @tag; how many.
 * Under blkdebug_lock. */
static int resume_locked(BlkdebugState *s, const char *tag, bool all)
{
    int n = 0;

    for (GList *l = s->suspended; l && (all || !n); l = l->next) {
        Suspended *r = l->data;
        if (!r->resumed && strcmp(r->tag, tag) == 0) {
            r->resumed = true;
            n++;
        }
    }
    if (n)
        g_cond_broadcast(&blkdebug_cond);
    return n;
}

bool bdrv_debug_remove_breakpoint(BlockNode *bs, const char *tag,
                                  GError **errp)
{
    BlkdebugState *s = find_blkdebug(bs, errp);
    int found = 0;
    GList *next;

    if (!s)
        return false;
    g_mutex_lock(&blkdebug_lock);
    for (int i = 0; i < BLKDBG__MAX; i++) {
        for (GList *l = s->rules[i]; l; l = next) {
            BlkdebugRule *rule = l->data;
            next = l->next;
            if (rule->action == ACTION_SUSPEND && !strcmp(rule->tag, tag)) {
                s->rules[i] = g_list_delete_link(s->rules[i], l);
                rule_free(rule);
                found++;
            }
        }
    }
    found += resume_locked(s, tag, true);
    g_mutex_unlock(&blkdebug_lock);
    if (!found)
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_FOUND,
                    "No breakpoint or held request with tag '%s'", tag);
    return found > 0;
}

bool bdrv_debug_resume(BlockNode *bs, const char *tag, GError **errp)
{
    BlkdebugState *s = find_blkdebug(bs, errp);
    int n;

    if (!s)
        return false;
    g_mutex_lock(&blkdebug_lock);
    n = resume_locked(s, tag, false);
    g_mutex_unlock(&blkdebug_lock);
    if (!n)
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_FOUND,
                    "No request is held at tag '%s'", tag);
    return n > 0;
}

static bool is_suspended_locked(BlkdebugState *s, const char *tag)
{
    for (GList *l = s->suspended; l; l = l->next) {
        Suspended *r = l->data;
        if (!r->resumed && strcmp(r->tag, tag) == 0)
            return true;
    }
    return false;
}

bool bdrv_debug_is_suspended(BlockNode *bs, const char *tag)
{
    BlkdebugState *s = find_blkdebug(bs, NULL);
    bool held;

    if (!s)
        return false;
    g_mutex_lock(&blkdebug_lock);
    held = is_suspended_locked(s, tag);
    g_mutex_unlock(&blkdebug_lock);
    return held;
}

bool bdrv_debug_wait_break(BlockNode *bs, const char *tag,
                           int64_t timeout_ms, GError **errp)
{
    BlkdebugState *s = find_blkdebug(bs, errp);
    gint64 deadline = g_get_monotonic_time() + timeout_ms * 1000;
    bool held = false;

    if (!s)
        return false;
    g_mutex_lock(&blkdebug_lock);
    while (!(held = is_suspended_locked(s, tag)) && !released &&
           g_cond_wait_until(&blkdebug_cond, &blkdebug_lock, deadline)) {
    }
    held = held || is_suspended_locked(s, tag);
    g_mutex_unlock(&blkdebug_lock);
    if (!held)
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "No request reached breakpoint '%s' within %" G_GINT64_FORMAT
                    " ms", tag, timeout_ms);
    return held;
}

void bdrv_debug_release_all(void)
{
    g_mutex_lock(&blkdebug_lock);
    released = true;
    g_cond_broadcast(&blkdebug_cond);
    g_mutex_unlock(&blkdebug_lock);
}

/* A filter: parents' permissions pass through to the child, plus
 * take-child-perms, minus unshare-child-perms (QEMU's blkdebug). */
static void blkdebug_child_perm(BlockNode *bs, const char *name,
                                uint32_t perm, uint32_t shared,
                                uint32_t *nperm, uint32_t *nshared)
{
    BlkdebugState *s = bs->opaque;

    bdrv_child_perm_filtered(bs, name, perm, shared, nperm, nshared);
    *nperm |= s->take_child_perms;
    *nshared &= ~s->unshare_child_perms;
}

const BlockDriver bdrv_blkdebug = {
    .name = "blkdebug",
    .state_size = sizeof(BlkdebugState),
    .is_filter = true,
    .open = blkdebug_open,
    .close = blkdebug_close,
    .get_length = blkdebug_get_length,
    .refresh_limits = blkdebug_refresh_limits,
    .pread = blkdebug_pread,
    .pwrite = blkdebug_pwrite,
    .pwrite_zeroes = blkdebug_pwrite_zeroes,
    .pdiscard = blkdebug_pdiscard,
    .flush = blkdebug_flush,
    .prefetch = blkdebug_prefetch,
    .block_status = blkdebug_block_status,
    .debug_event = blkdebug_debug_event,
    .child_perm = blkdebug_child_perm,
    .supported_write_flags = BDRV_REQ_FUA,
    .supported_zero_flags = BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK,
    .can_fast_zero = true,
};
