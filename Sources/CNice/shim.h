#include <glib.h>
#include <glib-object.h>
#include <nice/agent.h>
