/*
 * qmp-iothread.c - query-iothreads, as QEMU answers it: the iothread
 * objects (server/iothread.c) with their host thread ids.
 */
#include "qmp-int.h"

#include "server/iothread.h"
#include "server/qmp/qmp-types-gen.h"

static void add_info(const IoThreadInfo *info, void *opaque)
{
    JsonObject *o = json_object_new();

    json_object_set_string_member(o, "id", info->id);
    json_object_set_int_member(o, "thread-id", info->thread_id);
    json_object_set_int_member(o, "poll-max-ns", info->poll_max_ns);
    json_object_set_int_member(o, "poll-grow", info->poll_grow);
    json_object_set_int_member(o, "poll-shrink", info->poll_shrink);
    json_object_set_int_member(o, "aio-max-batch", info->aio_max_batch);
    json_array_add_object_element(opaque, o);
}

static JsonNode *cmd_query_iothreads(GError **errp)
{
    JsonArray *list = json_array_new();
    JsonNode *n = json_node_new(JSON_NODE_ARRAY);

    (void)errp;
    iothread_foreach(add_info, list);
    json_node_take_array(n, list);
    return n;
}

void qmp_register_iothread_commands(void)
{
    qmp_register_typed_query_iothreads(cmd_query_iothreads);
}
