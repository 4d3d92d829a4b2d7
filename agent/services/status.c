#include "services.h"

rpc_code status_from_ad_code(ad_code code)
{
	switch (code) {
	case AD_E_INTERNAL:
		return RPC_INTERNAL;
	case AD_E_INVALID:
		return RPC_INVALID_ARGUMENT;
	case AD_E_NOT_FOUND:
		return RPC_NOT_FOUND;
	case AD_E_EXISTS:
		return RPC_ALREADY_EXISTS;
	case AD_E_PRECONDITION:
		return RPC_FAILED_PRECONDITION;
	case AD_E_UNAVAILABLE:
		return RPC_UNAVAILABLE;
	case AD_E_UNAUTHENTICATED:
		return RPC_UNAUTHENTICATED;
	case AD_E_PERMISSION:
		return RPC_PERMISSION_DENIED;
	case AD_E_RESOURCE:
		return RPC_RESOURCE_EXHAUSTED;
	case AD_E_DEADLINE:
		return RPC_DEADLINE_EXCEEDED;
	case AD_E_CANCELLED:
		return RPC_CANCELLED;
	case AD_E_UNIMPLEMENTED:
		return RPC_UNIMPLEMENTED;
	case AD_E_DATA_LOSS:
		return RPC_DATA_LOSS;
	case _AD_E_MAX:
		break;
	}
	return RPC_INTERNAL;
}

rpc_code status_call_error(rpc_call *call, const ad_error *e)
{
	if (!e)
		return rpc_call_error(call, RPC_INTERNAL, "internal error (no error details)");
	return rpc_call_error(call, status_from_ad_code(e->code), "%s",
			      e->message ? e->message : ad_code_name(e->code));
}
