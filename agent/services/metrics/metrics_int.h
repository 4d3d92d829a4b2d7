/* metrics_int.h — shared inside libadmetrics only. */
#ifndef AGENTD_METRICS_INT_H
#define AGENTD_METRICS_INT_H

#include <stddef.h>

#include "metrics.h"

struct evbuffer;

/* The buffer a metrics_out writes to (the HTTP side sends it). */
struct evbuffer *metrics_out_buffer(metrics_out *o);
/* v as exposition text ("12", "0.25", "+Inf", "NaN"); returns the length. */
size_t metrics_format_value(double v, char buf[32]);

#endif
