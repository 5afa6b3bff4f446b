// Small C entry points for what Swift cannot call in GLib/libnice: variadic g_object_set/get,
// and GLib macros (G_TYPE_*, g_signal_connect, G_SOURCE_*).
#ifndef PARLEY_CNICE_SHIMS_H
#define PARLEY_CNICE_SHIMS_H

#include <glib.h>
#include <glib-object.h>
#include <nice/agent.h>

void parley_g_object_set_bool(gpointer object, const char *property, gboolean value);
gboolean parley_g_object_get_bool(gpointer object, const char *property);
void parley_g_object_set_uint(gpointer object, const char *property, guint value);
guint parley_g_object_get_uint(gpointer object, const char *property);
void parley_g_object_set_string(gpointer object, const char *property, const char *value);
/// Returns a newly allocated copy (free with g_free) or NULL.
char *parley_g_object_get_string(gpointer object, const char *property);

/// g_signal_connect_data with an explicit destroy-notify for the callback context.
gulong parley_g_signal_connect(gpointer instance, const char *signal, GCallback handler, gpointer data,
                               GClosureNotify destroy);

/// Attaches a one-shot idle source to `context` that calls `function(data)` on the thread iterating
/// `context`, then `destroy(data)`. Used to run jobs on the GLib loop's own thread.
guint parley_g_context_add_idle(GMainContext *context, GSourceFunc function, gpointer data,
                                GDestroyNotify destroy);

/// Value of G_SOURCE_REMOVE, which Swift does not import.
gboolean parley_g_source_remove_value(void);

/// Names the calling thread (shown by top/gdb); pthread_setname_np needs _GNU_SOURCE.
void parley_set_thread_name(const char *name);

/// The candidate's NUL-terminated foundation (a char array Swift imports as a tuple).
const char *parley_nice_candidate_foundation(const NiceCandidate *candidate);
/// Copies `foundation` (truncated to NICE_CANDIDATE_MAX_FOUNDATION - 1 bytes) into the candidate.
void parley_nice_candidate_set_foundation(NiceCandidate *candidate, const char *foundation);

/// A non-blocking, close-on-exec eventfd (Swift's Glibc module does not export sys/eventfd.h);
/// -1 with errno set on failure.
int parley_eventfd(void);

#endif
