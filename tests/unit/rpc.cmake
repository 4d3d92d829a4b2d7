# libadrpc tests (lib/rpc).
agentd_unit_test(rpc_test adrpc adproto PkgConfig::NGHTTP2)
# The I/O-free core is tested through its private headers.
agentd_unit_test(rpc_core_test adrpc adproto PkgConfig::NGHTTP2)
target_include_directories(rpc_core_test PRIVATE ${CMAKE_SOURCE_DIR}/lib/rpc)

# A small client used by tests/integration/test_rpc_c_client.py against a
# Python grpcio server (found as ${AGENTD_BUILD_DIR}/tests/unit/rpc_client_probe).
add_executable(rpc_client_probe ${CMAKE_CURRENT_SOURCE_DIR}/rpc_client_probe.c)
target_link_libraries(rpc_client_probe PRIVATE adrpc adproto)

# libadrpc's server alone, serving agent.v1.DebugService, for grpcio clients in
# the same integration test and for ad-hoc h2load/hostile-input runs.
add_executable(rpc_server_probe ${CMAKE_CURRENT_SOURCE_DIR}/rpc_server_probe.c)
target_link_libraries(rpc_server_probe PRIVATE adrpc adproto)
