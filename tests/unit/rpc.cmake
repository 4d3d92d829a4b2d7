# libadrpc tests (agent/grpc).
agentd_unit_test(rpc_test adrpc adproto)
