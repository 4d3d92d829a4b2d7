/* status.h — the one place where an ad_error becomes a gRPC status. */
#ifndef AGENTD_STATUS_H
#define AGENTD_STATUS_H

#include "base.h"
#include "rpc.h"

/* The gRPC code that answers an error of class `code`. */
rpc_code status_from_ad_code(ad_code code);

/* Sets the call's status from `e` (code mapped as above, message as is) and
 * returns the code, so handlers can `return status_call_error(call, e);`. */
rpc_code status_call_error(rpc_call *call, const ad_error *e);

#endif
