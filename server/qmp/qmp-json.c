/*
 * qmp-json.c - QEMU's dialect of JSON: lexer, streamer, parser, writer.
 *
 * The behaviour (not the code) follows QEMU's qobject/json-*.c, checked
 * against qemu-storage-daemon 7.2 byte for byte on malformed input:
 *  - the lexer turns bytes into tokens; a byte that fits no token ends the
 *    token being read as an error ("stray '<token so far>'"), and then
 *    everything up to the next brace, bracket or control character other
 *    than a tab is skipped, so that one bad byte costs one error;
 *  - the streamer counts braces and brackets: a value is complete when both
 *    are back to zero (or one goes negative), so `{"a":1}{"b":2}` is two
 *    values and a value may span lines;
 *  - the parser builds json-glib nodes from a complete token list; the
 *    first error wins.
 */
#include "qmp-json.h"
#include "qmp-keyval.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* QEMU's limits on one value. */
#define MAX_TOKEN_SIZE  (64u << 20)
#define MAX_TOKEN_COUNT (2u << 20)
#define MAX_NESTING     1024

typedef enum {
    TK_LCURLY, TK_RCURLY, TK_LSQUARE, TK_RSQUARE, TK_COLON, TK_COMMA,
    TK_STRING, TK_INTEGER, TK_FLOAT, TK_KEYWORD,
} TokenType;

typedef struct Token {
    TokenType type;
    char text[];
} Token;

typedef enum {
    LX_START,
    LX_STRING,      /* inside a string; the quote is token->str[0] */
    LX_STRING_ESC,  /* after a backslash */
    LX_ZERO,        /* "0" or "-0" */
    LX_INT,         /* nonzero integer digits */
    LX_NEG,         /* "-" */
    LX_FRAC0,       /* "1." */
    LX_FRAC,        /* "1.5" */
    LX_EXP0,        /* "1e" */
    LX_EXP_SIGN,    /* "1e-" */
    LX_EXP,         /* "1e5" */
    LX_KEYWORD,     /* [a-z]+ */
    LX_RECOVER,     /* skipping after an error */
} LexState;

struct QmpJsonStreamer {
    QmpJsonEmitFunc emit;
    void *opaque;
    LexState state;
    GString *tok;        /* the token being lexed */
    GPtrArray *tokens;   /* of Token *, the value being streamed */
    size_t tokens_size;
    int braces, brackets;
};

/* --- Unicode ----------------------------------------------------------- */

static bool valid_codepoint(int32_t cp)
{
    if (cp < 0 || cp > 0x10FFFF)
        return false;
    if (cp >= 0xD800 && cp <= 0xDFFF)      /* surrogate */
        return false;
    if ((cp & 0xFFFE) == 0xFFFE)           /* noncharacter */
        return false;
    return !(cp >= 0xFDD0 && cp <= 0xFDEF); /* noncharacter */
}

/* Decodes one modified UTF-8 character (U+0000 is "\xC0\x80") at *pp,
 * advancing *pp past what it used; -1 for an invalid sequence. */
static int32_t utf8_decode(const char **pp)
{
    static const int32_t min_cp[] = { 0x80, 0x800, 0x10000, 0x200000,
                                      0x4000000 };
    const unsigned char *p = (const unsigned char *)*pp;
    unsigned lead = *p++, len = 0;
    int32_t cp;

    if (lead < 0x80) {
        *pp = (const char *)p;
        return lead;
    }
    if (lead >= 0xFE || !(lead & 0x40)) { /* impossible or continuation */
        *pp = (const char *)p;
        return -1;
    }
    for (unsigned mask = 0x80; lead & mask; mask >>= 1)
        len++;
    cp = lead & (0x7F >> len);
    for (unsigned i = 1; i < len; i++, p++) {
        if ((*p & 0xC0) != 0x80) {
            *pp = (const char *)p;
            return -1;
        }
        cp = (cp << 6) | (*p & 0x3F);
    }
    *pp = (const char *)p;
    if (!valid_codepoint(cp))
        return -1;
    if (cp < min_cp[len - 2] && !(cp == 0 && len == 2))
        return -1; /* overlong, other than "\xC0\x80" */
    return cp;
}

static void utf8_append(GString *s, int32_t cp)
{
    if (cp == 0) {
        g_string_append_len(s, "\xC0\x80", 2);
    } else {
        g_string_append_unichar(s, cp);
    }
}

/* --- parser ------------------------------------------------------------- */

typedef struct Parser {
    GPtrArray *tokens;
    guint pos;
    char *err;  /* the first error */
} Parser;

static void parse_error(Parser *p, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static void parse_error(Parser *p, const char *fmt, ...)
{
    g_autofree char *msg = NULL;
    va_list ap;

    if (p->err)
        return;
    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    p->err = g_strdup_printf("JSON parse error, %s", msg);
}

static Token *peek(Parser *p)
{
    return p->pos < p->tokens->len ? g_ptr_array_index(p->tokens, p->pos)
                                   : NULL;
}

static Token *next(Parser *p)
{
    Token *t = peek(p);

    if (t)
        p->pos++;
    return t;
}

static int hex4(const char *s)
{
    int v = 0;

    for (int i = 0; i < 4; i++) {
        if (!g_ascii_isxdigit(s[i]))
            return -1;
        v = v << 4 | g_ascii_xdigit_value(s[i]);
    }
    return v;
}

/* A \u escape at p (pointing at the 'u'); the code point, or -1.  A lead
 * surrogate followed by a trail surrogate escape makes one character. */
static int32_t parse_u_escape(const char **pp)
{
    const char *p = *pp + 1;
    int32_t cp = hex4(p);

    p += strnlen(p, 4);
    if (cp >= 0xD800 && cp <= 0xDBFF && p[0] == '\\' && p[1] == 'u') {
        int trail = hex4(p + 2);
        if (trail >= 0xDC00 && trail <= 0xDFFF) {
            cp = 0x10000 + ((cp & 0x3FF) << 10) + (trail & 0x3FF);
            p += 6;
        } else {
            cp = -1;
        }
    }
    *pp = p;
    return cp;
}

static bool parse_escape(Parser *p, const char **pp, GString *out)
{
    static const char plain[] = "\"\\/'bfnrt";
    static const char value[] = "\"\\/'\b\f\n\r\t";
    const char *beg = *pp, *c = beg + 1;
    const char *hit = *c ? strchr(plain, *c) : NULL;
    int32_t cp;

    if (hit) {
        g_string_append_c(out, value[hit - plain]);
        *pp = c + 1;
        return true;
    }
    if (*c != 'u') {
        parse_error(p, "invalid escape sequence in string");
        return false;
    }
    cp = parse_u_escape(&c);
    if (!valid_codepoint(cp)) {
        parse_error(p, "%.*s is not a valid Unicode character",
                    (int)(c - beg), beg);
        return false;
    }
    utf8_append(out, cp);
    *pp = c;
    return true;
}

static JsonNode *parse_string_token(Parser *p, const Token *t)
{
    g_autoptr(GString) out = g_string_new(NULL);
    char quote = t->text[0];
    const char *s = t->text + 1;
    JsonNode *node;

    while (*s != quote) {
        if (*s == '\\') {
            if (!parse_escape(p, &s, out))
                return NULL;
            continue;
        }
        int32_t cp = utf8_decode(&s);
        if (cp < 0) {
            parse_error(p, "invalid UTF-8 sequence in string");
            return NULL;
        }
        utf8_append(out, cp);
    }
    node = json_node_new(JSON_NODE_VALUE);
    json_node_set_string(node, out->str);
    return node;
}

static JsonNode *parse_number(const Token *t)
{
    JsonNode *node = json_node_new(JSON_NODE_VALUE);

    if (t->type == TK_INTEGER) {
        gint64 v;
        errno = 0;
        v = g_ascii_strtoll(t->text, NULL, 10);
        if (errno == 0) {
            json_node_set_int(node, v);
            return node;
        }
    }
    /* floats, and integers beyond 64 bits as QEMU keeps them */
    json_node_set_double(node, g_ascii_strtod(t->text, NULL));
    return node;
}

static JsonNode *parse_keyword(Parser *p, const Token *t)
{
    JsonNode *node;

    if (strcmp(t->text, "null") == 0)
        return json_node_new(JSON_NODE_NULL);
    if (strcmp(t->text, "true") && strcmp(t->text, "false")) {
        parse_error(p, "invalid keyword '%s'", t->text);
        return NULL;
    }
    node = json_node_new(JSON_NODE_VALUE);
    json_node_set_boolean(node, t->text[0] == 't');
    return node;
}

static JsonNode *parse_value(Parser *p);

static bool parse_pair(Parser *p, JsonObject *obj)
{
    g_autoptr(JsonNode) key = NULL;
    JsonNode *value;
    Token *t;

    if (!peek(p)) {
        parse_error(p, "premature EOI");
        return false;
    }
    key = parse_value(p);
    if (!key || JSON_NODE_TYPE(key) != JSON_NODE_VALUE ||
        json_node_get_value_type(key) != G_TYPE_STRING) {
        parse_error(p, "key is not a string in object");
        return false;
    }
    t = next(p);
    if (!t || t->type != TK_COLON) {
        parse_error(p, t ? "missing : in object pair" : "premature EOI");
        return false;
    }
    value = parse_value(p);
    if (!value) {
        parse_error(p, "Missing value in dict");
        return false;
    }
    if (json_object_has_member(obj, json_node_get_string(key))) {
        json_node_unref(value);
        parse_error(p, "duplicate key");
        return false;
    }
    json_object_set_member(obj, json_node_get_string(key), value);
    return true;
}

static JsonNode *parse_object(Parser *p)
{
    g_autoptr(JsonObject) obj = json_object_new();
    JsonNode *node;
    Token *t;

    next(p); /* { */
    t = peek(p);
    if (t && t->type == TK_RCURLY) {
        next(p);
    } else {
        do {
            if (!parse_pair(p, obj))
                return NULL;
            t = next(p);
            if (t && t->type != TK_COMMA && t->type != TK_RCURLY) {
                parse_error(p, "expected separator in dict");
                return NULL;
            }
        } while (t && t->type == TK_COMMA);
        if (!t) {
            parse_error(p, "premature EOI");
            return NULL;
        }
    }
    node = json_node_new(JSON_NODE_OBJECT);
    json_node_set_object(node, obj);
    return node;
}

static JsonNode *parse_array(Parser *p)
{
    g_autoptr(JsonArray) arr = json_array_new();
    JsonNode *node;
    Token *t;

    next(p); /* [ */
    t = peek(p);
    if (t && t->type == TK_RSQUARE) {
        next(p);
    } else {
        do {
            JsonNode *elem = parse_value(p);
            if (!elem) {
                parse_error(p, "expecting value");
                return NULL;
            }
            json_array_add_element(arr, elem);
            t = next(p);
            if (t && t->type != TK_COMMA && t->type != TK_RSQUARE) {
                parse_error(p, "expected separator in list");
                return NULL;
            }
        } while (t && t->type == TK_COMMA);
        if (!t) {
            parse_error(p, "premature EOI");
            return NULL;
        }
    }
    node = json_node_new(JSON_NODE_ARRAY);
    json_node_set_array(node, arr);
    return node;
}

static JsonNode *parse_value(Parser *p)
{
    Token *t = peek(p);

    if (!t) {
        parse_error(p, "premature EOI");
        return NULL;
    }
    switch (t->type) {
    case TK_LCURLY:
        return parse_object(p);
    case TK_LSQUARE:
        return parse_array(p);
    case TK_STRING:
        return parse_string_token(p, next(p));
    case TK_INTEGER:
    case TK_FLOAT:
        return parse_number(next(p));
    case TK_KEYWORD:
        return parse_keyword(p, next(p));
    default:
        parse_error(p, "expecting value");
        return NULL;
    }
}

/* --- streamer ------------------------------------------------------------- */

static void stream_reset(QmpJsonStreamer *s)
{
    g_ptr_array_set_size(s->tokens, 0);
    s->tokens_size = 0;
    s->braces = s->brackets = 0;
}

static void stream_error(QmpJsonStreamer *s, const char *msg)
{
    stream_reset(s);
    s->emit(NULL, msg, s->opaque);
}

static void stream_complete(QmpJsonStreamer *s)
{
    Parser p = { .tokens = s->tokens };
    JsonNode *value = parse_value(&p);

    if (!value && !p.err)
        p.err = g_strdup("JSON parse error, premature EOI");
    /* the parser keeps nothing, so the tokens can go before emitting */
    stream_reset(s);
    s->emit(value, p.err, s->opaque);
    g_free(p.err);
}

static void stream_token(QmpJsonStreamer *s, TokenType type)
{
    Token *t = g_malloc(sizeof(Token) + s->tok->len + 1);

    t->type = type;
    memcpy(t->text, s->tok->str, s->tok->len + 1);
    g_string_truncate(s->tok, 0);
    g_ptr_array_add(s->tokens, t);
    s->tokens_size += strlen(t->text);
    s->braces += type == TK_LCURLY ? 1 : type == TK_RCURLY ? -1 : 0;
    s->brackets += type == TK_LSQUARE ? 1 : type == TK_RSQUARE ? -1 : 0;

    if (s->braces < 0 || s->brackets < 0 ||
        (s->braces == 0 && s->brackets == 0))
        stream_complete(s);
    else if (s->tokens_size > MAX_TOKEN_SIZE)
        stream_error(s, "JSON token size limit exceeded");
    else if (s->tokens->len > MAX_TOKEN_COUNT)
        stream_error(s, "JSON token count limit exceeded");
    else if (s->braces + s->brackets > MAX_NESTING)
        stream_error(s, "JSON nesting depth limit exceeded");
}

/* --- lexer ---------------------------------------------------------------- */

static void lex_error(QmpJsonStreamer *s)
{
    g_autofree char *msg =
        g_strdup_printf("JSON parse error, stray '%s'", s->tok->str);

    g_string_truncate(s->tok, 0);
    s->state = LX_RECOVER;
    stream_error(s, msg);
}

/* Ends a number or keyword that the current byte does not continue; the
 * byte is then read again from LX_START. */
static bool lex_end(QmpJsonStreamer *s, TokenType type)
{
    s->state = LX_START;
    stream_token(s, type);
    return false;
}

static bool lex_start(QmpJsonStreamer *s, unsigned char c)
{
    static const char structural[] = "{}[]:,";
    static const TokenType types[] = { TK_LCURLY, TK_RCURLY, TK_LSQUARE,
                                       TK_RSQUARE, TK_COLON, TK_COMMA };
    const char *hit = c ? strchr(structural, c) : NULL;

    if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
        return true;
    g_string_append_c(s->tok, c);
    if (hit)
        stream_token(s, types[hit - structural]);
    else if (c == '"' || c == '\'')
        s->state = LX_STRING;
    else if (c == '0')
        s->state = LX_ZERO;
    else if (c >= '1' && c <= '9')
        s->state = LX_INT;
    else if (c == '-')
        s->state = LX_NEG;
    else if (c >= 'a' && c <= 'z')
        s->state = LX_KEYWORD;
    else
        lex_error(s);
    return true;
}

static bool lex_string(QmpJsonStreamer *s, unsigned char c)
{
    g_string_append_c(s->tok, c);
    if (c < 0x20 || c >= 0xFE) {
        lex_error(s);
    } else if (s->state == LX_STRING_ESC) {
        s->state = LX_STRING;
    } else if (c == '\\') {
        s->state = LX_STRING_ESC;
    } else if (c == (unsigned char)s->tok->str[0]) {
        s->state = LX_START;
        stream_token(s, TK_STRING);
    }
    return true;
}

/* Moves to @state on a byte of the number, or fails it. */
static bool lex_digit_or_error(QmpJsonStreamer *s, unsigned char c,
                               bool ok, LexState state)
{
    g_string_append_c(s->tok, c);
    if (ok)
        s->state = state;
    else
        lex_error(s);
    return true;
}

static bool lex_number(QmpJsonStreamer *s, unsigned char c)
{
    bool digit = g_ascii_isdigit(c), e = c == 'e' || c == 'E';

    switch (s->state) {
    case LX_NEG:
        return lex_digit_or_error(s, c, digit,
                                  c == '0' ? LX_ZERO : LX_INT);
    case LX_ZERO:
        if (digit)
            return lex_digit_or_error(s, c, false, LX_START);
        if (c == '.')
            return lex_digit_or_error(s, c, true, LX_FRAC0);
        return lex_end(s, TK_INTEGER);
    case LX_INT:
        if (digit || c == '.' || e)
            return lex_digit_or_error(s, c, true,
                                      digit ? LX_INT
                                            : c == '.' ? LX_FRAC0 : LX_EXP0);
        return lex_end(s, TK_INTEGER);
    case LX_FRAC0:
        return lex_digit_or_error(s, c, digit, LX_FRAC);
    case LX_FRAC:
        if (digit || e)
            return lex_digit_or_error(s, c, true, digit ? LX_FRAC : LX_EXP0);
        return lex_end(s, TK_FLOAT);
    case LX_EXP0:
        return lex_digit_or_error(s, c, digit || c == '+' || c == '-',
                                  digit ? LX_EXP : LX_EXP_SIGN);
    case LX_EXP_SIGN:
        return lex_digit_or_error(s, c, digit, LX_EXP);
    default: /* LX_EXP */
        if (digit)
            return lex_digit_or_error(s, c, true, LX_EXP);
        return lex_end(s, TK_FLOAT);
    }
}

/* One lexer step; false when the byte must be read again. */
static bool lex_step(QmpJsonStreamer *s, unsigned char c)
{
    switch (s->state) {
    case LX_START:
        return lex_start(s, c);
    case LX_STRING:
    case LX_STRING_ESC:
        return lex_string(s, c);
    case LX_KEYWORD:
        if (c >= 'a' && c <= 'z') {
            g_string_append_c(s->tok, c);
            return true;
        }
        return lex_end(s, TK_KEYWORD);
    case LX_RECOVER:
        /* resynchronise at a structural character (QEMU's IN_RECOVERY) */
        if ((c < 0x20 && c != '\t') || c >= 0xFE || strchr("{}[]:,", c)) {
            s->state = LX_START;
            return false;
        }
        return true;
    default:
        return lex_number(s, c);
    }
}

void qmp_json_streamer_feed(QmpJsonStreamer *s, const char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        while (!lex_step(s, (unsigned char)buf[i])) {
            /* the byte ended a token: read it again */
        }
        if (s->tok->len > MAX_TOKEN_SIZE) {
            g_string_truncate(s->tok, 0);
            s->state = LX_RECOVER;
            stream_error(s, "JSON token size limit exceeded");
        }
    }
}

QmpJsonStreamer *qmp_json_streamer_new(QmpJsonEmitFunc emit, void *opaque)
{
    QmpJsonStreamer *s = g_new0(QmpJsonStreamer, 1);

    s->emit = emit;
    s->opaque = opaque;
    s->state = LX_START;
    s->tok = g_string_new(NULL);
    s->tokens = g_ptr_array_new_with_free_func(g_free);
    return s;
}

void qmp_json_streamer_free(QmpJsonStreamer *s)
{
    if (!s)
        return;
    g_string_free(s->tok, TRUE);
    g_ptr_array_free(s->tokens, TRUE);
    g_free(s);
}

typedef struct ParseOne {
    JsonNode *value;
    char *err;
    int count;
} ParseOne;

static void parse_one_emit(JsonNode *value, const char *error, void *opaque)
{
    ParseOne *one = opaque;

    if (one->count++ == 0) {
        one->value = value;
        one->err = g_strdup(error);
    } else if (value) {
        json_node_unref(value);
    }
}

JsonNode *qmp_json_parse(const char *text, GError **errp)
{
    ParseOne one = { 0 };
    QmpJsonStreamer *s = qmp_json_streamer_new(parse_one_emit, &one);

    qmp_json_streamer_feed(s, text, strlen(text));
    qmp_json_streamer_feed(s, "\n", 1); /* ends a trailing number */
    if (one.count == 1 && one.value && s->tokens->len == 0 &&
        s->state == LX_START) {
        qmp_json_streamer_free(s);
        return one.value;
    }
    g_set_error(errp, JSON_PARSER_ERROR, JSON_PARSER_ERROR_INVALID_DATA, "%s",
                one.err ? one.err : one.count ? "JSON parse error, "
                "expecting a single value" : "JSON parse error, premature EOI");
    if (one.value)
        json_node_unref(one.value);
    g_free(one.err);
    qmp_json_streamer_free(s);
    return NULL;
}

/* --- writer --------------------------------------------------------------- */

static void append_string(GString *out, const char *str)
{
    g_string_append_c(out, '"');
    while (*str) {
        int32_t cp = utf8_decode(&str);
        const char *esc = NULL;

        switch (cp) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        }
        if (esc) {
            g_string_append(out, esc);
            continue;
        }
        if (cp < 0)
            cp = 0xFFFD; /* the replacement character, as QEMU */
        if (cp > 0xFFFF) {
            cp -= 0x10000;
            g_string_append_printf(out, "\\u%04X\\u%04X", 0xD800 + (cp >> 10),
                                   0xDC00 + (cp & 0x3FF));
        } else if (cp < 0x20 || cp >= 0x7F) {
            g_string_append_printf(out, "\\u%04X", cp);
        } else {
            g_string_append_c(out, cp);
        }
    }
    g_string_append_c(out, '"');
}

static void append_value(GString *out, JsonNode *node)
{
    char buf[G_ASCII_DTOSTR_BUF_SIZE];

    switch (json_node_get_value_type(node)) {
    case G_TYPE_BOOLEAN:
        g_string_append(out, json_node_get_boolean(node) ? "true" : "false");
        break;
    case G_TYPE_DOUBLE:
        g_string_append(out, g_ascii_formatd(buf, sizeof(buf), "%.17g",
                                             json_node_get_double(node)));
        break;
    case G_TYPE_STRING:
        append_string(out, json_node_get_string(node));
        break;
    default:
        g_string_append_printf(out, "%" G_GINT64_FORMAT,
                               json_node_get_int(node));
    }
}

/* A key with what orders it as a QDict does. */
typedef struct {
    const char *key;
    unsigned bucket;
    guint added; /* insertion rank */
} QdictSlot;

static gint qdict_order_parsed(gconstpointer a, gconstpointer b)
{
    const QdictSlot *x = a, *y = b;

    if (x->bucket != y->bucket)
        return x->bucket < y->bucket ? -1 : 1;
    return x->added > y->added ? -1 : x->added < y->added; /* newest first */
}

static gint qdict_order_built(gconstpointer a, gconstpointer b)
{
    const QdictSlot *x = a, *y = b;

    if (x->bucket != y->bucket)
        return x->bucket < y->bucket ? -1 : 1;
    return x->added < y->added ? -1 : x->added > y->added;
}

GPtrArray *qmp_json_qdict_keys(JsonObject *obj, bool parsed)
{
    g_autoptr(GList) members = json_object_get_members(obj);
    g_autoptr(GArray) slots = g_array_new(FALSE, FALSE, sizeof(QdictSlot));
    GPtrArray *keys = g_ptr_array_new();
    guint rank = 0;

    for (GList *l = members; l; l = l->next) {
        QdictSlot slot = { l->data, qmp_qdict_bucket(l->data), rank++ };
        g_array_append_val(slots, slot);
    }
    g_array_sort(slots, parsed ? qdict_order_parsed : qdict_order_built);
    for (guint i = 0; i < slots->len; i++)
        g_ptr_array_add(keys, (gpointer)g_array_index(slots, QdictSlot, i).key);
    return keys;
}

/* Members in QEMU's order (objects built here: see qmp_json_qdict_keys). */
static void append_object(GString *out, JsonObject *obj)
{
    g_autoptr(GPtrArray) keys = qmp_json_qdict_keys(obj, false);

    g_string_append_c(out, '{');
    for (guint i = 0; i < keys->len; i++) {
        const char *key = g_ptr_array_index(keys, i);

        if (i)
            g_string_append(out, ", ");
        append_string(out, key);
        g_string_append(out, ": ");
        qmp_json_append(out, json_object_get_member(obj, key));
    }
    g_string_append_c(out, '}');
}

void qmp_json_append(GString *out, JsonNode *node)
{
    switch (JSON_NODE_TYPE(node)) {
    case JSON_NODE_OBJECT:
        append_object(out, json_node_get_object(node));
        break;
    case JSON_NODE_ARRAY: {
        JsonArray *arr = json_node_get_array(node);
        g_string_append_c(out, '[');
        for (guint i = 0; i < json_array_get_length(arr); i++) {
            if (i)
                g_string_append(out, ", ");
            qmp_json_append(out, json_array_get_element(arr, i));
        }
        g_string_append_c(out, ']');
        break;
    }
    case JSON_NODE_NULL:
        g_string_append(out, "null");
        break;
    default:
        append_value(out, node);
    }
}

char *qmp_json_to_string(JsonNode *node)
{
    GString *out = g_string_new(NULL);

    qmp_json_append(out, node);
    return g_string_free(out, FALSE);
}
