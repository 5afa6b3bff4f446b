// The floor for Scripts/bench-ice: plain libnice through its C API, no Swift, no Parley code.
// N nodes in a full mesh on 127.0.0.1, all agents on one GMainContext iterated by this thread,
// with the settings Parley uses (RFC 5245, trickle, consent freshness, keepalive conncheck,
// aggressive nomination, UDP only, UPnP off). Prints the time from "all candidates gathered,
// start exchanging credentials and candidates" to "every end of every pair connected".
//
//   nice-floor NODES RUNS [per-node]
//
// `per-node` uses one agent per node with one stream per peer instead of one agent per pair end:
// libnice keeps the ICE role per agent, so a mesh cannot give each pair its own role that way.
#include <nice/agent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_NODES 16

typedef struct {
    NiceAgent *agent;
    guint stream;
    gboolean gathered, connected, failed;
} End;

static End ends[MAX_NODES][MAX_NODES];
static int nodes, ends_total, gathered, connected, failed;

static void on_state(NiceAgent *agent, guint stream, guint component, guint state, gpointer data) {
    End *end = data;
    if (end->stream != stream) return;
    if ((state == NICE_COMPONENT_STATE_CONNECTED || state == NICE_COMPONENT_STATE_READY) && !end->connected) {
        end->connected = TRUE;
        connected++;
    }
    if (state == NICE_COMPONENT_STATE_FAILED && !end->failed) {
        end->failed = TRUE;
        failed++;
    }
}

static void on_gathered(NiceAgent *agent, guint stream, gpointer data) {
    End *end = data;
    if (end->stream != stream || end->gathered) return;
    end->gathered = TRUE;
    gathered++;
}

static void on_receive(NiceAgent *agent, guint stream, guint component, guint length, gchar *buffer, gpointer data) {}

static NiceAgent *new_agent(GMainContext *context, gboolean controlling) {
    NiceAgent *agent = nice_agent_new_full(context, NICE_COMPATIBILITY_RFC5245,
                                           NICE_AGENT_OPTION_ICE_TRICKLE | NICE_AGENT_OPTION_CONSENT_FRESHNESS);
    g_object_set(agent, "upnp", FALSE, "ice-tcp", FALSE, "keepalive-conncheck", TRUE, "controlling-mode",
                 controlling, NULL);
    NiceAddress loopback;
    nice_address_init(&loopback);
    nice_address_set_from_string(&loopback, "127.0.0.1");
    nice_agent_add_local_address(agent, &loopback);
    return agent;
}

/// One run; returns milliseconds from exchange to all connected, or -1 if not everything connected.
static double run(GMainContext *context, gboolean per_node) {
    NiceAgent *node_agent[MAX_NODES] = {0};
    gathered = connected = failed = 0;
    ends_total = nodes * (nodes - 1);
    for (int i = 0; i < nodes; i++) {
        for (int j = 0; j < nodes; j++) {
            if (i == j) continue;
            End *end = &ends[i][j];
            memset(end, 0, sizeof *end);
            if (per_node) {
                // One role per node: whatever is chosen, some pair has equal roles once nodes > 2.
                if (!node_agent[i]) node_agent[i] = new_agent(context, i < nodes / 2);
                end->agent = g_object_ref(node_agent[i]);
            } else {
                end->agent = new_agent(context, i < j);
            }
            end->stream = nice_agent_add_stream(end->agent, 1);
            g_signal_connect(end->agent, "component-state-changed", G_CALLBACK(on_state), end);
            g_signal_connect(end->agent, "candidate-gathering-done", G_CALLBACK(on_gathered), end);
            nice_agent_attach_recv(end->agent, end->stream, 1, context, on_receive, NULL);
            nice_agent_gather_candidates(end->agent, end->stream);
        }
    }
    while (gathered < ends_total) g_main_context_iteration(context, TRUE);

    gint64 start = g_get_monotonic_time();
    for (int i = 0; i < nodes; i++) {
        for (int j = 0; j < nodes; j++) {
            if (i == j) continue;
            End *end = &ends[i][j], *peer = &ends[j][i];
            gchar *ufrag, *password;
            nice_agent_get_local_credentials(peer->agent, peer->stream, &ufrag, &password);
            nice_agent_set_remote_credentials(end->agent, end->stream, ufrag, password);
            g_free(ufrag);
            g_free(password);
            GSList *candidates = nice_agent_get_local_candidates(peer->agent, peer->stream, 1);
            nice_agent_set_remote_candidates(end->agent, end->stream, 1, candidates);
            g_slist_free_full(candidates, (GDestroyNotify)nice_candidate_free);
            nice_agent_peer_candidate_gathering_done(end->agent, end->stream);
        }
    }
    gint64 deadline = start + 10 * G_USEC_PER_SEC, finished = 0;
    while (connected < ends_total && g_get_monotonic_time() < deadline) {
        g_main_context_iteration(context, TRUE);
        if (connected == ends_total) finished = g_get_monotonic_time();
    }
    int reached = connected;
    for (int i = 0; i < nodes; i++) {
        for (int j = 0; j < nodes; j++) {
            if (i == j) continue;
            g_signal_handlers_disconnect_by_data(ends[i][j].agent, &ends[i][j]);
            g_object_unref(ends[i][j].agent);
        }
        if (node_agent[i]) g_object_unref(node_agent[i]);
    }
    while (g_main_context_iteration(context, FALSE)) {}
    if (reached < ends_total) {
        fprintf(stderr, "  %d of %d ends connected within 10 s (%d failed)\n", reached, ends_total, failed);
        return -1;
    }
    return (finished - start) / 1000.0;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: nice-floor NODES RUNS [per-node]\n");
        return 2;
    }
    nodes = atoi(argv[1]);
    int runs = atoi(argv[2]);
    gboolean per_node = argc > 3 && strcmp(argv[3], "per-node") == 0;
    if (nodes < 2 || nodes > MAX_NODES || runs < 1) return 2;
    GMainContext *context = g_main_context_new();
    g_main_context_push_thread_default(context);
    double times[runs];
    int good = 0, incomplete = 0;
    for (int r = 0; r < runs; r++) {
        double ms = run(context, per_node);
        if (ms < 0) incomplete++;
        else times[good++] = ms;
    }
    if (good > 0) qsort(times, good, sizeof times[0], compare);
    printf("libnice C floor (%s): %d nodes, %d pairs: median %.1f ms, min %.1f, max %.1f over %d runs; %d runs incomplete\n",
           per_node ? "one agent per node" : "one agent per pair end", nodes, nodes * (nodes - 1) / 2,
           good ? times[good / 2] : -1.0, good ? times[0] : -1.0, good ? times[good - 1] : -1.0, good, incomplete);
    return 0;
}
