/*
 * handshake.c - fixed newstyle negotiation as a small state machine.
 *
 * States: GREETING -> CLIENT_FLAGS -> OPTION (loops) -> TRANSMISSION, and
 * every state may move to DEAD, the one sink that ends the connection.
 * Every length read from the client is checked against what is left of the
 * option before it is used, so a lying client costs an error reply, never a
 * read past a buffer; option payloads above MAX_OPTION_LEN are never
 * allocated.
 *
 * With --tls-creds the server runs in the spec's FORCEDTLS mode: until
 * STARTTLS succeeds, every option but STARTTLS and ABORT is answered
 * NBD_REP_ERR_TLS_REQD (EXPORT_NAME, which cannot be answered, hangs up),
 * so nothing about the exports is said in clear text.
 */
#include "connection.h"
#include "server/trace.h"

#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#define MAX_OPTION_LEN (64 * 1024)
#define MAX_DRAIN_LEN  (16 * 1024 * 1024)

typedef enum {
    HS_GREETING,
    HS_CLIENT_FLAGS,
    HS_OPTION,
    HS_TRANSMISSION,
    HS_DEAD,
} HandshakeState;

/* One option being answered. */
typedef struct Option {
    uint32_t code;
    uint32_t len;
    char *data;     /* len bytes (plus a NUL), NULL when too big */
    uint32_t pos;   /* parse cursor */
} Option;

static int send_reply(NbdConn *c, uint32_t opt, uint32_t type,
                      const void *data, uint32_t len)
{
    struct {
        uint64_t magic;
        uint32_t opt;
        uint32_t type;
        uint32_t len;
    } __attribute__((packed)) hdr = {
        htobe64(NBD_REP_MAGIC), htobe32(opt), htobe32(type), htobe32(len),
    };
    struct iovec iov[2] = {
        { &hdr, sizeof(hdr) },
        { (void *)data, len },
    };
    return conn_writev(c, iov, len ? 2 : 1);
}

static int send_ack(NbdConn *c, uint32_t opt)
{
    return send_reply(c, opt, NBD_REP_ACK, NULL, 0);
}

/* An error reply carries a sentence for the client's user. */
static int send_error(NbdConn *c, uint32_t opt, uint32_t type,
                      const char *fmt, ...) G_GNUC_PRINTF(4, 5);
static int send_error(NbdConn *c, uint32_t opt, uint32_t type,
                      const char *fmt, ...)
{
    g_autofree char *msg = NULL;
    va_list ap;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    trace(TRACE_NBD_OPTION_REFUSED, "option %u refused: %s", opt, msg);
    return send_reply(c, opt, type, msg, strlen(msg));
}

/* --- parsing an option's payload ------------------------------------- */

static bool take_u32(Option *o, uint32_t *v)
{
    if (o->len - o->pos < 4)
        return false;
    memcpy(v, o->data + o->pos, 4);
    *v = be32toh(*v);
    o->pos += 4;
    return true;
}

static bool take_u16(Option *o, uint16_t *v)
{
    if (o->len - o->pos < 2)
        return false;
    memcpy(v, o->data + o->pos, 2);
    *v = be16toh(*v);
    o->pos += 2;
    return true;
}

/* A length-prefixed string; NULL if the prefix lies or the string holds a
 * NUL byte (names and queries must not). */
static char *take_string(Option *o)
{
    uint32_t n;

    if (!take_u32(o, &n) || n > o->len - o->pos || n > NBD_MAX_STRING ||
        memchr(o->data + o->pos, '\0', n))
        return NULL;
    o->pos += n;
    return g_strndup(o->data + o->pos - n, n);
}

/* A client's string made fit for an error message: valid UTF-8, short. */
static char *quote_for_message(const char *s)
{
    g_autofree char *valid = g_utf8_make_valid(s, -1);

    g_autofree char *head = NULL;

    if (g_utf8_strlen(valid, -1) <= 64)
        return g_steal_pointer(&valid);
    head = g_utf8_substring(valid, 0, 64);
    return g_strconcat(head, "...", NULL);
}

/* --- options ---------------------------------------------------------- */

static uint16_t export_flags(NbdConn *c, NbdExport *exp)
{
    uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH |
                 NBD_FLAG_SEND_CACHE | NBD_FLAG_SEND_FUA;

    if (exp->multi_conn && bdrv_can_multi_conn(nbd_export_node(exp)))
        f |= NBD_FLAG_CAN_MULTI_CONN;
    if (c->structured_replies)
        f |= NBD_FLAG_SEND_DF;
    if (exp->read_only)
        return f | NBD_FLAG_READ_ONLY;
    f |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES;
    if (bdrv_can_fast_zero(nbd_export_node(exp)))
        f |= NBD_FLAG_SEND_FAST_ZERO;
    return f;
}

static HandshakeState enter_transmission(NbdConn *c, NbdExport *exp)
{
    c->exp = exp;
    c->eflags = export_flags(c, exp);
    /* Contexts chosen for another export do not carry over. */
    if (g_strcmp0(c->meta_export, exp->name) != 0) {
        c->ctx_base_allocation = false;
        c->ctx_allocation_depth = false;
        c->ctx_bitmaps = 0;
    }
    trace(TRACE_NBD_CLIENT_EXPORT, "client chose export '%s'", exp->name);
    return HS_TRANSMISSION;
}

static HandshakeState opt_export_name(NbdConn *c, Option *o)
{
    /* A name with a NUL byte or over the limit names no export. */
    bool valid = o->data && o->len <= NBD_MAX_STRING &&
                 !memchr(o->data, '\0', o->len);
    NbdExport *exp = valid ? nbd_export_lookup(o->data) : NULL;
    static const char zeroes[124];
    struct {
        uint64_t size;
        uint16_t flags;
    } __attribute__((packed)) reply;
    struct iovec iov[2];

    if (!exp) /* no way to answer an error here: the spec says hang up */
        return HS_DEAD;
    reply.size = htobe64(nbd_export_size(exp));
    reply.flags = htobe16(export_flags(c, exp));
    iov[0] = (struct iovec){ &reply, sizeof(reply) };
    iov[1] = (struct iovec){ (void *)zeroes, sizeof(zeroes) };
    if (conn_writev(c, iov, c->no_zeroes ? 1 : 2) < 0) {
        nbd_export_unref(exp);
        return HS_DEAD;
    }
    return enter_transmission(c, exp);
}

/* NBD_REP_SERVER: the name, then the description as free text. */
static int send_server_reply(NbdConn *c, uint32_t opt, const char *name)
{
    NbdExport *exp = nbd_export_lookup(name);
    const char *desc = exp && exp->description ? exp->description : "";
    uint32_t len = strlen(name), be = htobe32(len);
    g_autofree char *buf = g_malloc(4 + len + strlen(desc));
    int ret;

    memcpy(buf, &be, 4);
    memcpy(buf + 4, name, len);
    memcpy(buf + 4 + len, desc, strlen(desc));
    ret = send_reply(c, opt, NBD_REP_SERVER, buf, 4 + len + strlen(desc));
    nbd_export_unref(exp);
    return ret;
}

static HandshakeState opt_list(NbdConn *c, Option *o)
{
    g_auto(GStrv) names = NULL;

    if (o->len != 0)
        return send_error(c, o->code, NBD_REP_ERR_INVALID,
                          "NBD_OPT_LIST must have no payload") < 0
                   ? HS_DEAD : HS_OPTION;
    names = nbd_export_names();
    for (char **n = names; *n; n++) {
        if (send_server_reply(c, o->code, *n) < 0)
            return HS_DEAD;
    }
    return send_ack(c, o->code) < 0 ? HS_DEAD : HS_OPTION;
}

static int send_info(NbdConn *c, uint32_t opt, uint16_t type,
                     const void *data, uint32_t len)
{
    g_autofree char *buf = g_malloc(2 + len);
    uint16_t be = htobe16(type);

    memcpy(buf, &be, 2);
    memcpy(buf + 2, data, len);
    return send_reply(c, opt, NBD_REP_INFO, buf, 2 + len);
}

static int send_export_infos(NbdConn *c, uint32_t opt, NbdExport *exp,
                             bool want_name, bool want_description,
                             bool want_block_size)
{
    const BlockLimits *l = bdrv_limits(nbd_export_node(exp));
    struct {
        uint64_t size;
        uint16_t flags;
    } __attribute__((packed)) info = {
        htobe64(nbd_export_size(exp)), htobe16(export_flags(c, exp)),
    };
    /* io.c realigns any request, so the minimum is 1, unless the client
     * will obey a larger one that the node asks for: then, as QEMU, that
     * (512 for a probed raw image, which must see block 0 whole). */
    bool obeys = want_block_size || opt == NBD_OPT_INFO;
    uint32_t bs[3] = {
        htobe32(obeys ? MAX(l->min_request, 1) : 1),
        htobe32(MAX(4096, l->request_alignment)),
        htobe32(NBD_MAX_PAYLOAD),
    };

    if (send_info(c, opt, NBD_INFO_EXPORT, &info, sizeof(info)) < 0)
        return -1;
    if (want_name &&
        send_info(c, opt, NBD_INFO_NAME, exp->name, strlen(exp->name)) < 0)
        return -1;
    if (want_description && exp->description &&
        send_info(c, opt, NBD_INFO_DESCRIPTION, exp->description,
                  strlen(exp->description)) < 0)
        return -1;
    return send_info(c, opt, NBD_INFO_BLOCK_SIZE, bs, sizeof(bs));
}

static HandshakeState opt_info_go(NbdConn *c, Option *o)
{
    g_autofree char *name = take_string(o);
    bool want_name = false, want_description = false, want_block_size = false;
    uint16_t nreqs;
    NbdExport *exp;

    if (!name || !take_u16(o, &nreqs) || o->len - o->pos != nreqs * 2u)
        return send_error(c, o->code, NBD_REP_ERR_INVALID,
                          "malformed NBD_OPT_%s payload",
                          o->code == NBD_OPT_GO ? "GO" : "INFO") < 0
                   ? HS_DEAD : HS_OPTION;
    for (uint16_t i = 0; i < nreqs; i++) {
        uint16_t type = 0;
        take_u16(o, &type);
        want_name |= type == NBD_INFO_NAME;
        want_description |= type == NBD_INFO_DESCRIPTION;
        want_block_size |= type == NBD_INFO_BLOCK_SIZE;
    }
    exp = nbd_export_lookup(name);
    if (!exp) {
        g_autofree char *quoted = quote_for_message(name);
        return send_error(c, o->code, NBD_REP_ERR_UNKNOWN,
                          "export '%s' not present", quoted) < 0
                   ? HS_DEAD : HS_OPTION;
    }
    if (send_export_infos(c, o->code, exp, want_name, want_description,
                          want_block_size) < 0 ||
        send_ack(c, o->code) < 0) {
        nbd_export_unref(exp);
        return HS_DEAD;
    }
    if (o->code == NBD_OPT_INFO) {
        nbd_export_unref(exp);
        return HS_OPTION;
    }
    return enter_transmission(c, exp);
}

static HandshakeState opt_structured_reply(NbdConn *c, Option *o)
{
    if (o->len != 0)
        return send_error(c, o->code, NBD_REP_ERR_INVALID,
                          "NBD_OPT_STRUCTURED_REPLY must have no payload") < 0
                   ? HS_DEAD : HS_OPTION;
    c->structured_replies = true;
    return send_ack(c, o->code) < 0 ? HS_DEAD : HS_OPTION;
}

static int send_meta_context(NbdConn *c, uint32_t opt, uint32_t id,
                             const char *name);

/* The contexts a LIST or SET_META_CONTEXT request selects. */
typedef struct MetaSelection {
    bool base_allocation;
    bool allocation_depth;
    uint32_t bitmaps;          /* bit i: the export's bitmap i */
} MetaSelection;

#define DIRTY_BITMAP_PREFIX "qemu:dirty-bitmap:"

static uint32_t all_bitmaps(const NbdExport *exp)
{
    guint n = exp->bitmaps ? exp->bitmaps->len : 0;

    return n >= 32 ? UINT32_MAX : (1u << n) - 1;
}

/* The export's bitmaps that qemu:dirty-bitmap:@name selects. */
static uint32_t select_bitmap(const NbdExport *exp, const char *name)
{
    for (guint i = 0; exp->bitmaps && i < exp->bitmaps->len; i++)
        if (strcmp(bdrv_dirty_bitmap_name(g_ptr_array_index(exp->bitmaps, i)),
                   name) == 0)
            return 1u << i;
    return 0;
}

/* One query, as qemu-nbd reads it: LIST accepts "base:", "qemu:" and
 * "qemu:dirty-bitmap:" for all of their namespace; qemu:allocation-depth
 * exists only when the export offers it (-A), a bitmap only when exported
 * (-B); unknown namespaces and leaves select nothing. */
static void select_query(MetaSelection *sel, const char *query, bool list,
                         const NbdExport *exp)
{
    if (strcmp(query, "base:allocation") == 0 ||
        (list && strcmp(query, "base:") == 0))
        sel->base_allocation = true;
    else if (list && strcmp(query, "qemu:") == 0) {
        sel->allocation_depth |= exp->allocation_depth;
        sel->bitmaps |= all_bitmaps(exp);
    } else if (strcmp(query, "qemu:allocation-depth") == 0)
        sel->allocation_depth |= exp->allocation_depth;
    else if (list && strcmp(query, DIRTY_BITMAP_PREFIX) == 0)
        sel->bitmaps |= all_bitmaps(exp);
    else if (g_str_has_prefix(query, DIRTY_BITMAP_PREFIX))
        sel->bitmaps |= select_bitmap(exp,
                                      query + strlen(DIRTY_BITMAP_PREFIX));
}

static MetaSelection select_contexts(GPtrArray *queries, bool list,
                                     const NbdExport *exp)
{
    MetaSelection sel = { 0 };

    if (list && queries->len == 0) /* LIST without a query: everything */
        return (MetaSelection){ true, exp->allocation_depth,
                                all_bitmaps(exp) };
    for (guint i = 0; i < queries->len; i++)
        select_query(&sel, g_ptr_array_index(queries, i), list, exp);
    return sel;
}

static int send_bitmap_contexts(NbdConn *c, uint32_t opt,
                                const NbdExport *exp, uint32_t selected)
{
    for (guint i = 0; exp->bitmaps && i < exp->bitmaps->len; i++) {
        g_autofree char *name = NULL;
        if (!(selected & (1u << i)))
            continue;
        name = g_strconcat(DIRTY_BITMAP_PREFIX,
                           bdrv_dirty_bitmap_name(
                               g_ptr_array_index(exp->bitmaps, i)),
                           NULL);
        if (send_meta_context(c, opt, NBD_CTX_DIRTY_BITMAP + i, name) < 0)
            return -1;
    }
    return 0;
}

static int send_meta_context(NbdConn *c, uint32_t opt, uint32_t id,
                             const char *name)
{
    uint32_t len = strlen(name);
    g_autofree char *buf = g_malloc(4 + len);
    uint32_t be = htobe32(id);

    memcpy(buf, &be, 4);
    memcpy(buf + 4, name, len);
    return send_reply(c, opt, NBD_REP_META_CONTEXT, buf, 4 + len);
}

static HandshakeState opt_meta_context(NbdConn *c, Option *o)
{
    bool list = o->code == NBD_OPT_LIST_META_CONTEXT;
    g_autofree char *name = take_string(o);
    g_autoptr(GPtrArray) queries = g_ptr_array_new_with_free_func(g_free);
    MetaSelection sel;
    uint32_t nqueries;
    NbdExport *exp;

    if (!c->structured_replies)
        return send_error(c, o->code, NBD_REP_ERR_INVALID,
                          "structured replies must be negotiated first") < 0
                   ? HS_DEAD : HS_OPTION;
    if (!name || !take_u32(o, &nqueries))
        goto invalid;
    for (uint32_t i = 0; i < nqueries; i++) {
        char *q = take_string(o);
        if (!q)
            goto invalid;
        g_ptr_array_add(queries, q);
    }
    if (o->pos != o->len)
        goto invalid;
    exp = nbd_export_lookup(name);
    if (!exp) {
        g_autofree char *quoted = quote_for_message(name);
        return send_error(c, o->code, NBD_REP_ERR_UNKNOWN,
                          "export '%s' not present", quoted) < 0
                   ? HS_DEAD : HS_OPTION;
    }
    sel = select_contexts(queries, list, exp);
    if (!list) {
        c->ctx_base_allocation = sel.base_allocation;
        c->ctx_allocation_depth = sel.allocation_depth;
        c->ctx_bitmaps = sel.bitmaps;
        g_free(c->meta_export);
        c->meta_export = g_strdup(name);
    }
    if (sel.base_allocation &&
        send_meta_context(c, o->code, NBD_CTX_BASE_ALLOCATION,
                          "base:allocation") < 0)
        goto dead;
    if (sel.allocation_depth &&
        send_meta_context(c, o->code, NBD_CTX_ALLOCATION_DEPTH,
                          "qemu:allocation-depth") < 0)
        goto dead;
    if (send_bitmap_contexts(c, o->code, exp, sel.bitmaps) < 0)
        goto dead;
    nbd_export_unref(exp);
    return send_ack(c, o->code) < 0 ? HS_DEAD : HS_OPTION;

dead:
    nbd_export_unref(exp);
    return HS_DEAD;

invalid:
    return send_error(c, o->code, NBD_REP_ERR_INVALID,
                      "malformed meta context request") < 0
               ? HS_DEAD : HS_OPTION;
}

static HandshakeState opt_starttls(NbdConn *c, Option *o)
{
    const char *why = NULL;

    if (!tls_enabled())
        return send_error(c, o->code, NBD_REP_ERR_POLICY,
                          "TLS is not configured on this server") < 0
                   ? HS_DEAD : HS_OPTION;
    if (c->tls)
        why = "TLS is already active";
    else if (o->len != 0)
        why = "NBD_OPT_STARTTLS must have no payload";
    if (why)
        return send_error(c, o->code, NBD_REP_ERR_INVALID, "%s", why) < 0
                   ? HS_DEAD : HS_OPTION;
    if (send_ack(c, o->code) < 0)
        return HS_DEAD;
    /* Past the ACK there is no going back to clear text: a failed
     * handshake ends the connection. */
    c->tls = tls_handshake(c->fd);
    if (!c->tls)
        return HS_DEAD;
    /* Nothing negotiated in clear text may survive the upgrade. */
    c->structured_replies = false;
    c->ctx_base_allocation = false;
    c->ctx_allocation_depth = false;
    c->ctx_bitmaps = 0;
    g_clear_pointer(&c->meta_export, g_free);
    return HS_OPTION;
}

/* --- the machine ------------------------------------------------------- */

static HandshakeState state_greeting(NbdConn *c)
{
    struct {
        uint64_t magic;
        uint64_t ihaveopt;
        uint16_t flags;
    } __attribute__((packed)) g = {
        htobe64(NBD_MAGIC), htobe64(NBD_IHAVEOPT),
        htobe16(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES),
    };
    struct iovec iov = { &g, sizeof(g) };

    return conn_writev(c, &iov, 1) < 0 ? HS_DEAD : HS_CLIENT_FLAGS;
}

static HandshakeState state_client_flags(NbdConn *c)
{
    uint32_t flags;

    if (conn_read(c, &flags, 4) < 0)
        return HS_DEAD;
    flags = be32toh(flags);
    /* Unknown client flags, or a client without fixed newstyle: hang up. */
    if (flags & ~(uint32_t)(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES))
        return HS_DEAD;
    if (!(flags & NBD_FLAG_C_FIXED_NEWSTYLE))
        return HS_DEAD;
    c->no_zeroes = flags & NBD_FLAG_C_NO_ZEROES;
    return HS_OPTION;
}

static HandshakeState dispatch_option(NbdConn *c, Option *o)
{
    if (o->code == NBD_OPT_ABORT) {
        send_ack(c, o->code); /* the client may already be gone */
        return HS_DEAD;
    }
    if (nbd_server_shutting_down()) {
        send_error(c, o->code, NBD_REP_ERR_SHUTDOWN,
                   "server is shutting down");
        return HS_DEAD;
    }
    if (tls_enabled() && !c->tls && o->code != NBD_OPT_STARTTLS) {
        if (o->code == NBD_OPT_EXPORT_NAME)
            return HS_DEAD; /* it cannot be refused: the spec says hang up */
        return send_error(c, o->code, NBD_REP_ERR_TLS_REQD,
                          "this server requires TLS (NBD_OPT_STARTTLS)") < 0
                   ? HS_DEAD : HS_OPTION;
    }
    if (!o->data && o->code != NBD_OPT_EXPORT_NAME)
        return send_error(c, o->code, NBD_REP_ERR_TOO_BIG,
                          "option payload of %u bytes is too large",
                          o->len) < 0 ? HS_DEAD : HS_OPTION;
    switch (o->code) {
    case NBD_OPT_EXPORT_NAME:
        return opt_export_name(c, o);
    case NBD_OPT_LIST:
        return opt_list(c, o);
    case NBD_OPT_INFO:
    case NBD_OPT_GO:
        return opt_info_go(c, o);
    case NBD_OPT_STRUCTURED_REPLY:
        return opt_structured_reply(c, o);
    case NBD_OPT_LIST_META_CONTEXT:
    case NBD_OPT_SET_META_CONTEXT:
        return opt_meta_context(c, o);
    case NBD_OPT_STARTTLS:
        return opt_starttls(c, o);
    default:
        return send_error(c, o->code, NBD_REP_ERR_UNSUP,
                          "option %u is not supported", o->code) < 0
                   ? HS_DEAD : HS_OPTION;
    }
}

static HandshakeState state_option(NbdConn *c)
{
    struct {
        uint64_t magic;
        uint32_t code;
        uint32_t len;
    } __attribute__((packed)) hdr;
    Option o = { 0 };
    HandshakeState next;

    if (conn_read(c, &hdr, sizeof(hdr)) < 0 ||
        be64toh(hdr.magic) != NBD_IHAVEOPT)
        return HS_DEAD;
    o.code = be32toh(hdr.code);
    o.len = be32toh(hdr.len);
    if (o.len <= MAX_OPTION_LEN) {
        o.data = g_malloc(o.len + 1);
        if (conn_read(c, o.data, o.len) < 0) {
            g_free(o.data);
            return HS_DEAD;
        }
        o.data[o.len] = '\0';
    } else if (o.len > MAX_DRAIN_LEN || o.code == NBD_OPT_EXPORT_NAME ||
               conn_discard(c, o.len) < 0) {
        return HS_DEAD; /* absurd: refuse without allocating */
    }
    next = dispatch_option(c, &o);
    g_free(o.data);
    return next;
}

bool nbd_handshake(NbdConn *c)
{
    HandshakeState state = HS_GREETING;

    while (state != HS_DEAD && state != HS_TRANSMISSION) {
        switch (state) {
        case HS_GREETING:
            state = state_greeting(c);
            break;
        case HS_CLIENT_FLAGS:
            state = state_client_flags(c);
            break;
        case HS_OPTION:
            state = state_option(c);
            break;
        default:
            state = HS_DEAD;
        }
    }
    return state == HS_TRANSMISSION;
}
