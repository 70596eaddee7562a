/*
 * qmp-graph.c - what the monitor reports of the whole graph:
 * query-blockstats (the request counters of block/io.c, per node, in
 * QEMU's BlockStats shape) and x-debug-query-block-graph (nodes, users and
 * the edges between them with their permissions, QEMU's format).
 */
#include "qmp-int.h"
#include "server/qmp/qmp-types-gen.h"

#include "block/block.h"

#include <string.h>

static gint by_name(gconstpointer a, gconstpointer b)
{
    return strcmp(bdrv_node_name(*(BlockNode **)a),
                  bdrv_node_name(*(BlockNode **)b));
}

/* Every node, referenced, sorted by name. */
static GPtrArray *all_nodes(void)
{
    GPtrArray *nodes = bdrv_ref_all_nodes();

    g_ptr_array_sort(nodes, by_name);
    return nodes;
}

/* --- query-blockstats
 * --------------------------------------------------------- */

/* BlockDeviceStats, in the member order of QEMU 7.2's answers. */
static JsonObject *device_stats(BlockNode *bs)
{
    JsonObject *o = json_object_new();
    BdrvStats st;

    bdrv_get_stats(bs, &st);
#define SET(key, value) json_object_set_int_member(o, key, value)
    SET("unmap_operations", st.ops[BDRV_ACCT_UNMAP]);
    SET("unmap_merged", 0);
    SET("flush_total_time_ns", st.total_time_ns[BDRV_ACCT_FLUSH]);
    SET("wr_highest_offset", st.wr_highest_offset);
    SET("wr_total_time_ns", st.total_time_ns[BDRV_ACCT_WRITE]);
    SET("failed_wr_operations", st.failed[BDRV_ACCT_WRITE]);
    SET("failed_rd_operations", st.failed[BDRV_ACCT_READ]);
    SET("wr_merged", 0);
    SET("wr_bytes", st.bytes[BDRV_ACCT_WRITE]);
    json_object_set_array_member(o, "timed_stats", json_array_new());
    SET("failed_unmap_operations", st.failed[BDRV_ACCT_UNMAP]);
    SET("failed_flush_operations", st.failed[BDRV_ACCT_FLUSH]);
    json_object_set_boolean_member(o, "account_invalid", false);
    SET("rd_total_time_ns", st.total_time_ns[BDRV_ACCT_READ]);
    SET("invalid_unmap_operations", st.invalid[BDRV_ACCT_UNMAP]);
    SET("flush_operations", st.ops[BDRV_ACCT_FLUSH]);
    SET("wr_operations", st.ops[BDRV_ACCT_WRITE]);
    SET("unmap_bytes", st.bytes[BDRV_ACCT_UNMAP]);
    SET("rd_merged", 0);
    SET("rd_bytes", st.bytes[BDRV_ACCT_READ]);
    SET("unmap_total_time_ns", st.total_time_ns[BDRV_ACCT_UNMAP]);
    SET("invalid_flush_operations", st.invalid[BDRV_ACCT_FLUSH]);
    json_object_set_boolean_member(o, "account_failed", false);
    SET("rd_operations", st.ops[BDRV_ACCT_READ]);
    SET("invalid_wr_operations", st.invalid[BDRV_ACCT_WRITE]);
    SET("invalid_rd_operations", st.invalid[BDRV_ACCT_READ]);
#undef SET
    return o;
}

/* BlockStats of @bs; "parent" is its data child ("file"), as QEMU's. */
static JsonObject *block_stats(BlockNode *bs)
{
    JsonObject *o = json_object_new();
    BlockNode *file = bdrv_child(bs, "file");

    if (file)
        json_object_set_object_member(o, "parent", block_stats(file));
    json_object_set_object_member(o, "stats", device_stats(bs));
    json_object_set_string_member(o, "node-name", bdrv_node_name(bs));
    if (!strcmp(bdrv_driver_name(bs), "file")) {
        /* BlockStatsSpecificFile: the discards that reached the file. */
        JsonObject *d = json_object_new();
        BdrvStats st;
        bdrv_get_stats(bs, &st);
        json_object_set_int_member(d, "discard-bytes-ok",
                                   st.bytes[BDRV_ACCT_UNMAP]);
        json_object_set_int_member(d, "discard-nb-ok", st.ops[BDRV_ACCT_UNMAP]);
        json_object_set_string_member(d, "driver", "file");
        json_object_set_int_member(d, "discard-nb-failed",
                                   st.failed[BDRV_ACCT_UNMAP]);
        json_object_set_object_member(o, "driver-specific", d);
    }
    return o;
}

/* Without query-nodes QEMU lists its named devices: a storage daemon,
 * like snapnbd, has none. */
static JsonNode *cmd_query_blockstats(const QmpQueryBlockstatsArgs *a,
                                      GError **errp)
{
    g_autoptr(GPtrArray) nodes = NULL;
    JsonArray *list = json_array_new();
    JsonNode *ret = json_node_new(JSON_NODE_ARRAY);

    if (a->query_nodes) {
        nodes = all_nodes();
        for (guint i = 0; i < nodes->len; i++)
            json_array_add_object_element(
                list, block_stats(g_ptr_array_index(nodes, i)));
    }
    json_node_take_array(ret, list);
    return ret;
}

/* --- x-debug-query-block-graph -------------------------------------------- */

typedef struct Graph {
    GHashTable *node_ids; /* BlockNode * -> id */
    GHashTable *user_ids; /* holder -> id */
    JsonArray *nodes, *edges;
    int next_id;
} Graph;

/* QEMU lists permissions from the highest bit down.  QEMU 7.2 has no
 * graph-mod any more (7.0 dropped it): it is not listed. */
static JsonArray *perm_list(uint32_t perm)
{
    static const char *const names[] = {"consistent-read", "write",
                                        "write-unchanged", "resize"};
    JsonArray *a = json_array_new();

    for (int i = G_N_ELEMENTS(names) - 1; i >= 0; i--)
        if (perm & (1u << i))
            json_array_add_string_element(a, names[i]);
    return a;
}

static void add_graph_node(Graph *g, const char *name, const char *type, int id)
{
    JsonObject *o = json_object_new();

    json_object_set_string_member(o, "name", name);
    json_object_set_string_member(o, "type", type);
    json_object_set_int_member(o, "id", id);
    json_array_add_object_element(g->nodes, o);
}

/* A user's id: one graph node per holder; a job's holder ("backup job
 * 'j0'") is QEMU's block-job of that id, anything else an unnamed block
 * backend. */
static int user_id(Graph *g, const char *holder)
{
    gpointer id = g_hash_table_lookup(g->user_ids, holder);
    const char *job = strstr(holder, " job '");

    if (id)
        return GPOINTER_TO_INT(id);
    if (job) {
        g_autofree char *name = g_strndup(job + 6, strlen(job + 6) - 1);
        add_graph_node(g, name, "block-job", g->next_id);
    } else {
        add_graph_node(g, "", "block-backend", g->next_id);
    }
    g_hash_table_insert(g->user_ids, g_strdup(holder),
                        GINT_TO_POINTER(g->next_id));
    return g->next_id++;
}

static void add_edge(const BdrvEdgeInfo *e, void *opaque)
{
    Graph *g = opaque;
    JsonObject *o = json_object_new();
    int parent =
        e->parent ? GPOINTER_TO_INT(g_hash_table_lookup(g->node_ids, e->parent))
                  : user_id(g, e->holder ? e->holder : "");

    json_object_set_string_member(o, "name", e->name);
    json_object_set_int_member(o, "parent", parent);
    json_object_set_array_member(o, "shared-perm", perm_list(e->shared));
    json_object_set_array_member(o, "perm", perm_list(e->perm));
    json_object_set_int_member(
        o, "child",
        GPOINTER_TO_INT(g_hash_table_lookup(g->node_ids, e->child)));
    json_array_add_object_element(g->edges, o);
}

static JsonNode *cmd_block_graph(GError **errp)
{
    g_autoptr(GPtrArray) nodes = all_nodes();
    Graph g = {
        .node_ids = g_hash_table_new(NULL, NULL),
        .user_ids =
            g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL),
        .nodes = json_array_new(),
        .edges = json_array_new(),
        .next_id = 1,
    };
    JsonObject *o = json_object_new();
    JsonNode *ret = json_node_new(JSON_NODE_OBJECT);

    for (guint i = 0; i < nodes->len; i++) {
        BlockNode *bs = g_ptr_array_index(nodes, i);
        g_hash_table_insert(g.node_ids, bs, GINT_TO_POINTER(g.next_id));
        add_graph_node(&g, bdrv_node_name(bs), "block-driver", g.next_id++);
    }
    for (guint i = 0; i < nodes->len; i++)
        bdrv_foreach_edge_into(g_ptr_array_index(nodes, i), add_edge, &g);
    json_object_set_array_member(o, "edges", g.edges);
    json_object_set_array_member(o, "nodes", g.nodes);
    g_hash_table_destroy(g.node_ids);
    g_hash_table_destroy(g.user_ids);
    json_node_take_object(ret, o);
    return ret;
}

void qmp_register_graph_commands(void)
{
    qmp_register_typed_query_blockstats(cmd_query_blockstats);
    qmp_register_typed_x_debug_query_block_graph(cmd_block_graph);
}
