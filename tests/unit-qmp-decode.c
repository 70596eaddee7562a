/*
 * unit-qmp-decode.c - the typed argument decoders that qapi-gen.py writes
 * (server/qmp-types-gen.c): well-typed arguments land in the right members
 * (has_ flags, enums, union branches, alternates, lists), the flat
 * encoders write the option syntax bdrv_open and the objects take, and
 * arguments that skipped the schema check (every member replaced by a
 * value of each JSON type) give an error, never a crash or a leak.
 */
#include "server/qmp/qmp-schema.h"
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

static gint by_text(gconstpointer a, gconstpointer b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The flat keys of @flat, "k=v" sorted and joined by spaces. */
static char *flat_text(GHashTable *flat)
{
    g_autoptr(GPtrArray) items = g_ptr_array_new_with_free_func(g_free);
    GHashTableIter it;
    gpointer k, v;

    g_hash_table_iter_init(&it, flat);
    while (g_hash_table_iter_next(&it, &k, &v))
        g_ptr_array_add(items, g_strdup_printf("%s=%s", (char *)k,
                                               (char *)v));
    g_ptr_array_sort(items, by_text);
    g_ptr_array_add(items, NULL);
    return g_strjoinv(" ", (char **)items->pdata);
}

/* blockdev-add's options: nested definitions, a reference, null, a union
 * branch of the base's tag, and their flat keys for bdrv_open. */
static void test_blockdev_options(void)
{
    JsonObject *o = parse(
        "{\"driver\": \"qcow2\", \"node-name\": \"top\", "
        "\"read-only\": false, \"cache\": {\"direct\": true}, "
        "\"detect-zeroes\": \"unmap\", \"backing\": null, "
        "\"data-file\": \"df\", \"cache-size\": 65536, "
        "\"file\": {\"driver\": \"file\", \"filename\": \"/x\", "
        "\"aio\": \"threads\"}}");
    g_auto(QmpBlockdevOptions) a = { 0 };
    g_autoptr(GError) err = NULL;
    g_autoptr(GHashTable) keys =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_autoptr(GPtrArray) refs = g_ptr_array_new_with_free_func(g_free);
    QmpFlat flat = { keys, refs };
    g_autofree char *text = NULL;

    g_assert_true(qmp_decode_blockdev_options(o, &a, &err));
    g_assert_cmpint(a.driver, ==, QMP_BLOCKDEV_DRIVER_QCOW2);
    g_assert_true(a.has_cache && a.cache->has_direct && a.cache->direct);
    g_assert_cmpint(a.u.qcow2->backing->kind, ==,
                    QMP_BLOCKDEV_REF_OR_NULL_KIND_NULL);
    g_assert_cmpint(a.u.qcow2->data_file->kind, ==,
                    QMP_BLOCKDEV_REF_KIND_REFERENCE);
    g_assert_cmpstr(a.u.qcow2->file->u.definition->u.file->filename, ==,
                    "/x");
    qmp_encode_flat_blockdev_options(&a, "", &flat);
    text = flat_text(keys);
    g_assert_cmpstr(text, ==,
                    "backing= cache-size=65536 cache.direct=on "
                    "data-file=df detect-zeroes=unmap driver=qcow2 "
                    "file.aio=threads file.driver=file file.filename=/x "
                    "node-name=top read-only=off");
    g_assert_cmpuint(refs->len, ==, 1);
    g_assert_cmpstr(refs->pdata[0], ==, "data-file");
}

/* block-export-add: the base, the nbd branch, a list of alternates. */
static void test_export_options(void)
{
    JsonObject *o = parse(
        "{\"type\": \"nbd\", \"id\": \"e\", \"node-name\": \"n\", "
        "\"writable\": true, \"name\": \"x\", \"allocation-depth\": true, "
        "\"bitmaps\": [\"b0\", {\"node\": \"m\", \"name\": \"b1\"}]}");
    g_auto(QmpBlockExportOptions) a = { 0 };
    g_autoptr(GError) err = NULL;
    const QmpBlockDirtyBitmapOrStr *b;

    g_assert_true(qmp_decode_block_export_options(o, &a, &err));
    g_assert_cmpint(a.type, ==, QMP_BLOCK_EXPORT_TYPE_NBD);
    g_assert_cmpstr(a.id, ==, "e");
    g_assert_true(a.has_writable && a.writable && !a.has_writethrough);
    g_assert_true(a.u.nbd->has_name && !a.u.nbd->has_description);
    g_assert_true(a.u.nbd->allocation_depth);
    g_assert_cmpuint(a.u.nbd->bitmaps->len, ==, 2);
    b = g_ptr_array_index(a.u.nbd->bitmaps, 1);
    g_assert_cmpstr(b->u.external->name, ==, "b1");
}

/* object-add: a union by qom-type; properties as --object writes them. */
static void test_object_options(void)
{
    JsonObject *o = parse(
        "{\"qom-type\": \"authz-list\", \"id\": \"a\", "
        "\"policy\": \"deny\", \"rules\": [{\"match\": \"CN=*\", "
        "\"policy\": \"allow\", \"format\": \"glob\"}]}");
    JsonObject *t = parse(
        "{\"qom-type\": \"throttle-group\", \"id\": \"t\", "
        "\"limits\": {\"iops-total\": 50}, \"x-bps-read\": 7}");
    g_auto(QmpObjectOptions) a = { 0 };
    g_auto(QmpObjectOptions) b = { 0 };
    g_autoptr(GError) err = NULL;
    g_autoptr(GHashTable) keys =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    QmpFlat flat = { keys, NULL };
    g_autofree char *text = NULL, *text2 = NULL;

    g_assert_true(qmp_decode_object_options(o, &a, &err));
    g_assert_cmpint(a.qom_type, ==, QMP_OBJECT_TYPE_AUTHZ_LIST);
    g_assert_null(a.u.throttle_group);
    qmp_encode_flat_object_options(&a, "", &flat);
    text = flat_text(keys);
    g_assert_cmpstr(text, ==,
                    "id=a policy=deny qom-type=authz-list "
                    "rules.0.format=glob rules.0.match=CN=* "
                    "rules.0.policy=allow");
    g_hash_table_remove_all(keys);
    g_assert_true(qmp_decode_object_options(t, &b, &err));
    qmp_encode_flat_object_options(&b, "", &flat);
    text2 = flat_text(keys);
    g_assert_cmpstr(text2, ==, "id=t limits.iops-total=50 "
                               "qom-type=throttle-group x-bps-read=7");
}

/* nbd-server-start's SocketAddressLegacy, a transaction's actions. */
static void test_server_transaction(void)
{
    JsonObject *s = parse(
        "{\"addr\": {\"type\": \"unix\", \"data\": {\"path\": \"/s\"}}, "
        "\"max-connections\": 3}");
    JsonObject *t = parse(
        "{\"actions\": [{\"type\": \"block-dirty-bitmap-add\", "
        "\"data\": {\"node\": \"n\", \"name\": \"b\"}}, "
        "{\"type\": \"abort\", \"data\": {}}], "
        "\"properties\": {\"completion-mode\": \"grouped\"}}");
    g_auto(QmpNbdServerStartArgs) a = { 0 };
    g_auto(QmpTransactionArgs) x = { 0 };
    g_autoptr(GError) err = NULL;
    const QmpTransactionAction *act;

    g_assert_true(qmp_decode_nbd_server_start_args(s, &a, &err));
    g_assert_cmpint(a.addr->type, ==, QMP_SOCKET_ADDRESS_TYPE_UNIX);
    g_assert_cmpstr(a.addr->u.q_unix->data->path, ==, "/s");
    g_assert_true(a.has_max_connections && !a.has_tls_creds);
    g_assert_cmpuint(a.max_connections, ==, 3);
    g_assert_true(qmp_decode_transaction_args(t, &x, &err));
    g_assert_cmpuint(x.actions->len, ==, 2);
    act = g_ptr_array_index(x.actions, 0);
    g_assert_cmpint(act->type, ==,
                    QMP_TRANSACTION_ACTION_KIND_BLOCK_DIRTY_BITMAP_ADD);
    g_assert_cmpstr(act->u.block_dirty_bitmap_add->data->name, ==, "b");
    g_assert_cmpint(x.properties->completion_mode, ==,
                    QMP_ACTION_COMPLETION_MODE_GROUPED);
}

/* Every member of @o (and of the objects in it, also in lists), one at a
 * time, gets a value of each JSON type; decoding @root must answer and
 * clear. */
typedef bool (*Decode)(JsonObject *root);

static void mutate(JsonObject *root, JsonObject *o, Decode decode);

static void mutate_within(JsonObject *root, JsonNode *n, Decode decode)
{
    if (JSON_NODE_HOLDS_OBJECT(n)) {
        mutate(root, json_node_get_object(n), decode);
    } else if (JSON_NODE_HOLDS_ARRAY(n)) {
        JsonArray *a = json_node_get_array(n);
        for (guint i = 0; i < json_array_get_length(a); i++)
            mutate_within(root, json_array_get_element(a, i), decode);
    }
}

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
        mutate_within(root, orig, decode);
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
/* The same, and what decodes also encodes (see QmpFlat). */
#define DECODE_ENCODE(T, t)                                                  \
    static bool decode_##t(JsonObject *root)                                 \
    {                                                                        \
        g_auto(T) a = { 0 };                                                 \
        g_autoptr(GError) err = NULL;                                        \
        g_autoptr(GHashTable) keys =                                         \
            g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);  \
        g_autoptr(GPtrArray) refs = g_ptr_array_new_with_free_func(g_free);  \
        QmpFlat flat = { keys, refs };                                       \
        bool ok = qmp_decode_##t(root, &a, &err);                            \
        g_assert_true(ok == (err == NULL));                                  \
        if (ok) {                                                            \
            qmp_encode_flat_##t(&a, "", &flat);                              \
            for (guint i = 0; i < refs->len; i++)                            \
                g_assert_nonnull(g_hash_table_lookup(keys, refs->pdata[i])); \
        }                                                                    \
        return ok;                                                           \
    }
DECODE_ANY(QmpBlockdevCreateArgs, blockdev_create_args)
DECODE_ENCODE(QmpBlockdevOptions, blockdev_options)
DECODE_ENCODE(QmpObjectOptions, object_options)
DECODE_ENCODE(QmpBlockExportOptions, block_export_options)
DECODE_ENCODE(QmpNbdServerStartArgs, nbd_server_start_args)
DECODE_ENCODE(QmpTransactionArgs, transaction_args)
DECODE_ENCODE(QmpBlockdevReopenArgs, blockdev_reopen_args)
DECODE_ENCODE(QmpNbdServerAddOptions, nbd_server_add_options)
DECODE_ENCODE(QmpNbdServerRemoveArgs, nbd_server_remove_args)
DECODE_ENCODE(QmpBlockExportDelArgs, block_export_del_args)
DECODE_ENCODE(QmpQmpCapabilitiesArgs, qmp_capabilities_args)
DECODE_ENCODE(QmpObjectDelArgs, object_del_args)
DECODE_ENCODE(QmpQomListArgs, qom_list_args)
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

/* The arguments of the commands converted last (issue 13), each valid
 * first, then mutated member by member. */
static const struct {
    Decode decode;
    const char *text;
} samples[] = {
    { decode_blockdev_options,
      "{\"driver\": \"qcow2\", \"node-name\": \"top\", \"read-only\": true, "
      "\"cache\": {\"direct\": true, \"no-flush\": false}, "
      "\"backing\": {\"driver\": \"raw\", \"file\": \"f\", \"size\": 5}, "
      "\"encrypt\": {\"format\": \"luks\", \"key-secret\": \"s\"}, "
      "\"file\": {\"driver\": \"file\", \"filename\": \"/x\", "
      "\"locking\": \"off\"}}" },
    { decode_blockdev_options,
      "{\"driver\": \"nbd\", \"server\": {\"type\": \"inet\", "
      "\"host\": \"h\", \"port\": \"1\"}, \"export\": \"e\", "
      "\"reconnect-delay\": 2}" },
    { decode_blockdev_options,
      "{\"driver\": \"throttle\", \"file\": \"f\", "
      "\"throttle-group\": \"g\", \"limits\": {\"iops-total\": 1}}" },
    { decode_blockdev_options,
      "{\"driver\": \"blkdebug\", \"image\": \"f\", \"align\": 512, "
      "\"inject-error\": [{\"event\": \"read_aio\", \"errno\": 5}]}" },
    { decode_blockdev_reopen_args,
      "{\"options\": [{\"driver\": \"raw\", \"node-name\": \"a\", "
      "\"file\": \"f\"}, {\"driver\": \"null-co\", \"size\": 1}]}" },
    { decode_object_options,
      "{\"qom-type\": \"authz-list\", \"id\": \"a\", \"policy\": \"deny\", "
      "\"rules\": [{\"match\": \"m\", \"policy\": \"allow\", "
      "\"format\": \"exact\"}]}" },
    { decode_object_options,
      "{\"qom-type\": \"secret\", \"id\": \"s\", \"data\": \"x\", "
      "\"format\": \"base64\"}" },
    { decode_object_options,
      "{\"qom-type\": \"tls-creds-x509\", \"id\": \"t\", \"dir\": \"/d\", "
      "\"endpoint\": \"server\", \"verify-peer\": true}" },
    { decode_object_options,
      "{\"qom-type\": \"throttle-group\", \"id\": \"g\", "
      "\"limits\": {\"bps-total\": 1}, \"x-iops-total\": 2}" },
    { decode_object_options,
      "{\"qom-type\": \"iothread\", \"id\": \"i\", \"poll-max-ns\": 1}" },
    { decode_block_export_options,
      "{\"type\": \"nbd\", \"id\": \"e\", \"node-name\": \"n\", "
      "\"writable\": true, \"description\": \"d\", \"iothread\": \"i\", "
      "\"bitmaps\": [\"b\", {\"node\": \"m\", \"name\": \"c\"}]}" },
    { decode_nbd_server_start_args,
      "{\"addr\": {\"type\": \"inet\", \"data\": {\"host\": \"h\", "
      "\"port\": \"1\"}}, \"tls-creds\": \"c\", \"tls-authz\": \"a\", "
      "\"max-connections\": 2}" },
    { decode_transaction_args,
      "{\"actions\": [{\"type\": \"drive-backup\", \"data\": "
      "{\"device\": \"d\", \"target\": \"t\", \"sync\": \"full\"}}, "
      "{\"type\": \"block-dirty-bitmap-merge\", \"data\": {\"node\": "
      "\"n\", \"target\": \"t\", \"bitmaps\": [\"a\"]}}], "
      "\"properties\": {\"completion-mode\": \"individual\"}}" },
    { decode_nbd_server_add_options,
      "{\"device\": \"d\", \"name\": \"n\", \"description\": \"x\", "
      "\"writable\": false, \"bitmap\": \"b\"}" },
    { decode_nbd_server_remove_args, "{\"name\": \"n\", \"mode\": \"hard\"}" },
    { decode_block_export_del_args, "{\"id\": \"e\", \"mode\": \"safe\"}" },
    { decode_qmp_capabilities_args, "{\"enable\": [\"oob\"]}" },
    { decode_object_del_args, "{\"id\": \"o\"}" },
    { decode_qom_list_args, "{\"path\": \"/objects\"}" },
};

static void test_mutations_converted(void)
{
    for (size_t i = 0; i < G_N_ELEMENTS(samples); i++) {
        JsonObject *o = parse(samples[i].text);
        if (!samples[i].decode(o))
            g_error("sample %zu does not decode", i);
        mutate(o, o, samples[i].decode);
        g_assert_true(samples[i].decode(o)); /* restored */
    }
}

/* Option syntax: string values become the schema's JSON types (then the
 * typed decoder takes them), or QEMU's keyval message. */
static void expect_keyval(const char *type, const char *text,
                          const char *message)
{
    JsonObject *o = parse(text);
    g_autoptr(GError) err = NULL;
    bool ok = qmp_schema_check_keyval(type, o, &err);

    g_assert_true(ok == (err == NULL));
    if (message)
        g_assert_cmpstr(err ? err->message : "(accepted)", ==, message);
    else
        g_assert_no_error(err);
}

static void test_keyval(void)
{
    JsonObject *o = parse("{\"type\": \"nbd\", \"id\": \"e\", "
                          "\"node-name\": \"n\", \"writable\": \"on\", "
                          "\"allocation-depth\": \"n\"}");
    g_auto(QmpBlockExportOptions) a = { 0 };
    g_autoptr(GError) err = NULL;

    g_assert_true(qmp_schema_check_keyval("BlockExportOptions", o, &err));
    g_assert_true(qmp_decode_block_export_options(o, &a, &err));
    g_assert_true(a.has_writable && a.writable);
    g_assert_true(a.u.nbd->has_allocation_depth &&
                  !a.u.nbd->allocation_depth);
    expect_keyval("NbdServerOptions",
                  "{\"addr\": {\"type\": \"unix\", \"path\": \"/s\"}, "
                  "\"max-connections\": \"0x10\"}", NULL);
    expect_keyval("NbdServerOptions",
                  "{\"addr\": {\"type\": \"unix\", \"path\": \"/s\"}, "
                  "\"max-connections\": \"1k\"}",
                  "Parameter 'max-connections' expects integer");
    expect_keyval("NbdServerOptions",
                  "{\"addr\": {\"type\": \"unix\", \"path\": \"/s\"}, "
                  "\"max-connections\": \"-1\"}",
                  "Parameter 'max-connections' expects uint32_t");
    expect_keyval("NbdServerOptions",
                  "{\"addr\": {\"type\": \"unix\", \"path\": \"/s\", "
                  "\"abstract\": \"maybe\"}}",
                  "Parameter 'addr.abstract' expects 'on' or 'off'");
    expect_keyval("NbdServerOptions", "{\"addr\": {\"type\": \"inet\"}}",
                  "Parameter 'addr.host' is missing");
    /* not strings (a JSON caller), or a tag of the wrong type: checked,
     * never crashes */
    expect_keyval("NbdServerOptions", "{\"addr\": {\"type\": 1}}",
                  "Invalid parameter type for 'addr.type', expected: string");
    expect_keyval("NbdServerOptions", "{\"addr\": \"x\"}",
                  "Invalid parameter type for 'addr', expected: object");
    expect_keyval("BlockExportOptions", "{}", "Parameter 'type' is missing");
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
    g_test_add_func("/qmp-decode/blockdev-options", test_blockdev_options);
    g_test_add_func("/qmp-decode/export-options", test_export_options);
    g_test_add_func("/qmp-decode/object-options", test_object_options);
    g_test_add_func("/qmp-decode/server-transaction",
                    test_server_transaction);
    g_test_add_func("/qmp-decode/mutations", test_mutations);
    g_test_add_func("/qmp-decode/mutations-converted",
                    test_mutations_converted);
    g_test_add_func("/qmp-decode/keyval", test_keyval);
    ret = g_test_run();
    g_ptr_array_free(parsed, TRUE);
    return ret;
}
