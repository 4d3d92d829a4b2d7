/* metrics_int.h — shared inside libadmetrics only. */
#ifndef AGENTD_METRICS_INT_H
#define AGENTD_METRICS_INT_H

#include <stddef.h>
#include <stdint.h>

#include "metrics.h"

struct evbuffer;

/* The buffer a metrics_out writes to, complete (with OpenMetrics' "# EOF"),
 * for the HTTP side to send as it is: unlike metrics_out_finish it does not
 * copy the text into one block. */
struct evbuffer *metrics_out_buffer(metrics_out *o);
/* A sample of the current family given in nanoseconds, written as seconds
 * exactly (integer arithmetic: no float formatting, which costs more than
 * anything else per sample). */
void metrics_sample_ns(metrics_out *o, const char *labels, int64_t ns);
/* v as exposition text ("12", "0.25", "+Inf", "NaN"); returns the length. */
size_t metrics_format_value(double v, char buf[32]);

#endif
