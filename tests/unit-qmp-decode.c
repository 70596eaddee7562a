/*
 * unit-qmp-decode.c - the typed argument decoders that qapi-gen.py writes
 * (server/qmp-types-gen.c): well-typed arguments land in the right members
 * (has_ flags, enums, union branches, alternates, lists), and arguments
 * that skipped the schema check (every member replaced by a value of each
 * JSON type) give an error, never a crash or a leak.
 */
#include "server/qmp/qmp-types-gen.h"

#include <string.h>

static GPtrArray *parsed; /* of JsonNode: the objects tests use */

static JsonObject *parse(const char *text)
{
    g_autoptr(GError) err = NULL;
    JsonNode *n = json_from_string(text, &err);

    g_assert_no_error(err);
    g_assert_true(JSON_NODE_HOLDS_OBJECT(n));
    g_ptr_array_add(parsed, n);
    return json_node_get_object(n);
}

static void test_struct(void)
{
    JsonObject *o = parse("{\"device\": \"d\", \"top-node\": \"t\", "
                          "\"speed\": 7, \"on-error\": \"stop\", "
                          "\"auto-dismiss\": false}");
    g_auto(QmpBlockCommitArgs) a = { 0 };
    g_autoptr(GError) err = NULL;

    g_assert_true(qmp_decode_block_commit_args(o, &a, &err));
    g_assert_no_error(err);
    g_assert_cmpstr(a.device, ==, "d");
    g_assert_true(a.has_top_node && !a.has_top && !a.has_base);
    g_assert_cmpstr(a.top_node, ==, "t");
    g_assert_null(a.job_id);
    g_assert_true(a.has_speed);
    g_assert_cmpint(a.speed, ==, 7);
    g_assert_true(a.has_on_error);
    g_assert_cmpint(a.on_error, ==, QMP_BLOCKDEV_ON_ERROR_STOP);
    g_assert_cmpstr(qmp_blockdev_on_error_str[a.on_error], ==, "stop");
    g_assert_true(a.has_auto_dismiss && !a.auto_dismiss);
    g_assert_false(a.has_auto_finalize);
}

static void expect_error(const char *text, const char *message)
{
    g_auto(QmpBlockCommitArgs) a = { 0 };
    g_autoptr(GError) err = NULL;

    g_assert_false(qmp_decode_block_commit_args(parse(text), &a, &err));
    g_assert_nonnull(err);
    g_assert_cmpstr(err->message, ==, message);
    g_assert_null(a.device); /* cleared on failure */
}

static void test_errors(void)
{
    expect_error("{}", "Parameter 'device' is missing");
    expect_error("{\"device\": 5}",
                 "Invalid parameter type for 'device', expected: string");
    expect_error("{\"device\": \"d\", \"speed\": \"fast\"}",
                 "Invalid parameter type for 'speed', expected: integer");
    expect_error("{\"device\": \"d\", \"on-error\": \"explode\"}",
                 "Parameter 'on-error' does not accept value 'explode'");
}

static void test_list_alternate(void)
{
    JsonObject *o = parse("{\"node\": \"n\", \"target\": \"t\", \"bitmaps\": "
                          "[\"a\", {\"node\": \"m\", \"name\": \"b\"}]}");
    g_auto(QmpBlockDirtyBitmapMerge) a = { 0 };
    g_autoptr(GError) err = NULL;
    QmpBlockDirtyBitmapOrStr *first, *second;

    g_assert_true(qmp_decode_block_dirty_bitmap_merge(o, &a, &err));
    g_assert_cmpuint(a.bitmaps->len, ==, 2);
    first = g_ptr_array_index(a.bitmaps, 0);
    second = g_ptr_array_index(a.bitmaps, 1);
    g_assert_cmpint(first->kind, ==, QMP_BLOCK_DIRTY_BITMAP_OR_STR_KIND_LOCAL);
    g_assert_cmpstr(first->u.local, ==, "a");
    g_assert_cmpint(second->kind, ==,
                    QMP_BLOCK_DIRTY_BITMAP_OR_STR_KIND_EXTERNAL);
    g_assert_cmpstr(second->u.external->node, ==, "m");
    g_assert_cmpstr(second->u.external->name, ==, "b");
}

static void test_union(void)
{
    JsonObject *o = parse(
        "{\"job-id\": \"j\", \"options\": {\"driver\": \"qcow2\", "
        "\"file\": {\"driver\": \"file\", \"filename\": \"x\"}, "
        "\"size\": 1048576, \"encrypt\": {\"format\": \"luks\", "
        "\"key-secret\": \"s\", \"cipher-alg\": \"aes-256\"}}}");
    g_auto(QmpBlockdevCreateArgs) a = { 0 };
    g_autoptr(GError) err = NULL;
    const QmpBlockdevCreateOptionsQcow2 *q;

    g_assert_true(qmp_decode_blockdev_create_args(o, &a, &err));
    g_assert_cmpint(a.options->driver, ==, QMP_BLOCKDEV_DRIVER_QCOW2);
    g_assert_null(a.options->u.file); /* only the tag's branch */
    q = a.options->u.qcow2;
    g_assert_nonnull(q);
    g_assert_cmpuint(q->size, ==, 1048576);
    g_assert_cmpint(q->file->kind, ==, QMP_BLOCKDEV_REF_KIND_DEFINITION);
    g_assert_cmpint(q->file->u.definition->driver, ==,
                    QMP_BLOCKDEV_DRIVER_FILE);
    g_assert_cmpstr(q->file->u.definition->u.file->filename, ==, "x");
    g_assert_cmpint(q->encrypt->format, ==, QMP_Q_CRYPTO_BLOCK_FORMAT_LUKS);
    g_assert_null(q->encrypt->u.qcow);
    g_assert_cmpstr(q->encrypt->u.luks->key_secret, ==, "s");
    g_assert_true(q->encrypt->u.luks->has_cipher_alg);
    g_assert_cmpstr(
        qmp_q_crypto_cipher_algorithm_str[q->encrypt->u.luks->cipher_alg], ==,
        "aes-256");
}

/* Every member of @o (and of the objects in it), one at a time, gets a
 * value of each JSON type; decoding @root must answer and clear. */
typedef bool (*Decode)(JsonObject *root);

static void mutate(JsonObject *root, JsonObject *o, Decode decode)
{
    static const char *const values[] = {
        "1", "-1", "\"x\"", "true", "null", "[]", "[1, \"x\", {}]", "{}",
        "{\"node\": 1}", "1.5",
    };
    g_autoptr(GList) members = json_object_get_members(o);
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);

    for (GList *l = members; l; l = l->next)
        g_ptr_array_add(names, g_strdup(l->data));
    for (guint n = 0; n < names->len; n++) {
        const char *name = g_ptr_array_index(names, n);
        JsonNode *orig = json_node_copy(json_object_get_member(o, name));
        for (size_t i = 0; i < G_N_ELEMENTS(values); i++) {
            json_object_set_member(o, name,
                                   json_from_string(values[i], NULL));
            decode(root);
        }
        json_object_set_member(o, name, orig);
        if (JSON_NODE_HOLDS_OBJECT(orig))
            mutate(root, json_node_get_object(orig), decode);
    }
}

/* A decoder of type T: fails with an error or succeeds; cleared either
 * way. */
#define DECODE_ANY(T, t)                                                     \
    static bool decode_##t(JsonObject *root)                                 \
    {                                                                        \
        g_auto(T) a = { 0 };                                                 \
        g_autoptr(GError) err = NULL;                                        \
        bool ok = qmp_decode_##t(root, &a, &err);                            \
        g_assert_true(ok == (err == NULL));                                  \
        return ok;                                                           \
    }
DECODE_ANY(QmpBlockdevCreateArgs, blockdev_create_args)
DECODE_ANY(QmpBlockDirtyBitmapMerge, block_dirty_bitmap_merge)
DECODE_ANY(QmpBlockCommitArgs, block_commit_args)

static void test_mutations(void)
{
    JsonObject *o = parse(
        "{\"job-id\": \"j\", \"options\": {\"driver\": \"qcow2\", "
        "\"file\": {\"driver\": \"file\", \"filename\": \"x\"}, "
        "\"size\": 1048576, \"encrypt\": {\"format\": \"luks\", "
        "\"key-secret\": \"s\", \"cipher-alg\": \"aes-256\"}}}");
    JsonObject *m = parse("{\"node\": \"n\", \"target\": \"t\", \"bitmaps\": "
                          "[\"a\", {\"node\": \"m\", \"name\": \"b\"}]}");
    JsonObject *c = parse("{\"device\": \"d\", \"speed\": 1, "
                          "\"on-error\": \"stop\", \"auto-dismiss\": true}");

    g_assert_true(decode_blockdev_create_args(o));
    mutate(o, o, decode_blockdev_create_args);
    g_assert_true(decode_blockdev_create_args(o)); /* restored */
    mutate(m, m, decode_block_dirty_bitmap_merge);
    mutate(c, c, decode_block_commit_args);
}

int main(int argc, char **argv)
{
    int ret;

    parsed = g_ptr_array_new_with_free_func((GDestroyNotify)json_node_unref);
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/qmp-decode/struct", test_struct);
    g_test_add_func("/qmp-decode/errors", test_errors);
    g_test_add_func("/qmp-decode/list-alternate", test_list_alternate);
    g_test_add_func("/qmp-decode/union", test_union);
    g_test_add_func("/qmp-decode/mutations", test_mutations);
    ret = g_test_run();
    g_ptr_array_free(parsed, TRUE);
    return ret;
}
