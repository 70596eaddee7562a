/*
 * fuzz-qmp.c - the QMP control socket's input: QEMU's JSON streamer and
 * lexer (server/qmp-json.c), the writer of replies, and the dispatch of
 * every command with whatever arguments the input holds.
 *
 * Each value the streamer cuts from the input is written back as JSON;
 * an object {"execute": NAME, "arguments": {...}} runs NAME as a client's
 * command would.  What touches the host is kept in a private directory:
 * the process works there and a command whose arguments hold a '/' (a
 * path outside it) is not run; "quit" (SIGTERM) and "nbd-server-start"
 * (listening sockets) are not run either.  After each input the jobs are
 * cancelled and every node and export the commands made is released, so
 * inputs do not pile state on each other.
 */
#include "server/qmp/qmp-int.h"
#include "server/qmp/qmp-json.h"
#include "tests/fuzz/fuzz.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static bool has_slash(JsonNode *n)
{
    if (JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING)
        return strchr(json_node_get_string(n), '/') != NULL;
    if (JSON_NODE_HOLDS_ARRAY(n)) {
        JsonArray *a = json_node_get_array(n);
        for (guint i = 0; i < json_array_get_length(a); i++)
            if (has_slash(json_array_get_element(a, i)))
                return true;
    }
    if (JSON_NODE_HOLDS_OBJECT(n)) {
        JsonObject *o = json_node_get_object(n);
        g_autoptr(GList) names = json_object_get_members(o);
        for (GList *l = names; l; l = l->next)
            if (strchr(l->data, '/') ||
                has_slash(json_object_get_member(o, l->data)))
                return true;
    }
    return false;
}

static void execute(JsonObject *req)
{
    JsonNode *name = json_object_get_member(req, "execute");
    JsonNode *args = json_object_get_member(req, "arguments");
    g_autoptr(JsonObject) none = json_object_new();
    g_autoptr(GError) err = NULL;
    const char *cmd;
    JsonNode *ret;

    if (!name || !JSON_NODE_HOLDS_VALUE(name) ||
        json_node_get_value_type(name) != G_TYPE_STRING)
        return;
    if (args && !JSON_NODE_HOLDS_OBJECT(args))
        return;
    cmd = json_node_get_string(name);
    if (!strcmp(cmd, "quit") || !strcmp(cmd, "nbd-server-start") ||
        (args && has_slash(args)))
        return;
    ret = qmp_execute(cmd, args ? json_node_get_object(args) : none, &err);
    if (ret) {
        g_free(qmp_json_to_string(ret));
        json_node_unref(ret);
    }
}

static void emit(JsonNode *value, const char *error, void *opaque)
{
    (void)error;
    (void)opaque;
    if (!value)
        return;
    g_free(qmp_json_to_string(value));
    if (JSON_NODE_HOLDS_OBJECT(value))
        execute(json_node_get_object(value));
    json_node_unref(value);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    QmpJsonStreamer *s = qmp_json_streamer_new(emit, NULL);

    qmp_json_streamer_feed(s, (const char *)data, size);
    qmp_json_streamer_free(s);
    qmp_jobs_cleanup();
    qmp_nbd_cleanup();
    qmp_block_cleanup();
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char *dir = g_strdup("/tmp/snapnbd-fuzz-qmp.XXXXXX");

    (void)argc;
    (void)argv;
    if (!g_mkdtemp(dir) || chdir(dir) < 0)
        abort();
    fuzz_remove_at_exit(dir);
    qmp_register_all();
    return 0;
}
