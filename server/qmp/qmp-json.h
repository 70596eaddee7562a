/*
 * qmp-json.h - JSON as QEMU's monitor reads and writes it (private to the
 * QMP server).
 *
 * QEMU does not read QMP line by line: a streamer cuts the byte stream into
 * top-level values by counting braces and brackets, a lexer accepts a few
 * extensions (single-quoted strings, modified UTF-8 "\xC0\x80" for U+0000)
 * and every malformed input gets one of a fixed set of "JSON parse error,
 * ..." messages, after which the lexer resynchronises on the next brace,
 * bracket, colon, comma or control character.  Clients (and their tests) see those
 * messages, so this module reproduces them; json-glib holds the values.
 */
#ifndef SNAPNBD_QMP_JSON_H
#define SNAPNBD_QMP_JSON_H

#include <json-glib/json-glib.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct QmpJsonStreamer QmpJsonStreamer;

/* Called once per top-level value: @value (the callee owns it) or, for
 * malformed input, NULL and @error ("JSON parse error, ..."). */
typedef void (*QmpJsonEmitFunc)(JsonNode *value, const char *error,
                                void *opaque);

QmpJsonStreamer *qmp_json_streamer_new(QmpJsonEmitFunc emit, void *opaque);
/* Feeds bytes; emits as many values as they complete. */
void qmp_json_streamer_feed(QmpJsonStreamer *s, const char *buf, size_t len);
void qmp_json_streamer_free(QmpJsonStreamer *s);

/* Parses one complete value (e.g. a --blockdev given as JSON); NULL with
 * the parse error in *errp when the text is not exactly one value. */
JsonNode *qmp_json_parse(const char *text, GError **errp);

/* The keys of @obj (borrowed) in the order QEMU's QDict, a hash table of
 * 512 buckets (qobject/qdict.c, each bucket a list with the newest key
 * first), iterates them: QEMU writes objects so, and checks a request's
 * members so.  Two keys of one bucket: with @parsed (an object QEMU's JSON
 * parser filled in input order) the later one first; else in the order
 * they were added, as code here builds objects in the order QEMU writes
 * them (VersionTriple's "micro" before "minor"). */
GPtrArray *qmp_json_qdict_keys(JsonObject *obj, bool parsed);

/* The value as QEMU's monitor writes it: ", " and ": " separators,
 * non-ASCII as \uXXXX, doubles with 17 significant digits, object members
 * in QDict order ({"status": ..., "id": ...} in JOB_STATUS_CHANGE). */
char *qmp_json_to_string(JsonNode *node);
void qmp_json_append(GString *out, JsonNode *node);

#endif
