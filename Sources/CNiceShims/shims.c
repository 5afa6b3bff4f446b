#define _GNU_SOURCE
#include <pthread.h>
#include <sys/eventfd.h>
#include "CNiceShims.h"

void parley_g_object_set_bool(gpointer object, const char *property, gboolean value) {
    g_object_set(object, property, value, NULL);
}

gboolean parley_g_object_get_bool(gpointer object, const char *property) {
    gboolean value = FALSE;
    g_object_get(object, property, &value, NULL);
    return value;
}

void parley_g_object_set_uint(gpointer object, const char *property, guint value) {
    g_object_set(object, property, value, NULL);
}

guint parley_g_object_get_uint(gpointer object, const char *property) {
    guint value = 0;
    g_object_get(object, property, &value, NULL);
    return value;
}

void parley_g_object_set_string(gpointer object, const char *property, const char *value) {
    g_object_set(object, property, value, NULL);
}

char *parley_g_object_get_string(gpointer object, const char *property) {
    char *value = NULL;
    g_object_get(object, property, &value, NULL);
    return value;
}

gulong parley_g_signal_connect(gpointer instance, const char *signal, GCallback handler, gpointer data,
                               GClosureNotify destroy) {
    return g_signal_connect_data(instance, signal, handler, data, destroy, (GConnectFlags)0);
}

guint parley_g_context_add_idle(GMainContext *context, GSourceFunc function, gpointer data,
                                GDestroyNotify destroy) {
    GSource *source = g_idle_source_new();
    g_source_set_priority(source, G_PRIORITY_DEFAULT);
    g_source_set_callback(source, function, data, destroy);
    guint id = g_source_attach(source, context);
    g_source_unref(source);
    return id;
}

gboolean parley_g_source_remove_value(void) {
    return G_SOURCE_REMOVE;
}

const char *parley_nice_candidate_foundation(const NiceCandidate *candidate) {
    return candidate->foundation;
}

void parley_nice_candidate_set_foundation(NiceCandidate *candidate, const char *foundation) {
    g_strlcpy(candidate->foundation, foundation, NICE_CANDIDATE_MAX_FOUNDATION);
}

void parley_set_thread_name(const char *name) {
    pthread_setname_np(pthread_self(), name);
}

int parley_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }
