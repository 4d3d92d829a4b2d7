# The image store: unit tests (no registry) and the probe CLI the integration tests
# (tests/integration/test_store_pull.py) drive against a real docker-registry.
# The probe goes through libadstore as agentd does, so its pulls, loads, saves and
# imports run the agentd-fetch of this build tree.
agentd_unit_test(store_test adfetch PkgConfig::OPENSSL PkgConfig::JANSSON)
target_include_directories(store_test PRIVATE ${CMAKE_SOURCE_DIR}/store)
add_executable(store_probe ${CMAKE_CURRENT_SOURCE_DIR}/store_probe.c)
target_link_libraries(store_probe PRIVATE adstore)
target_compile_definitions(store_probe PRIVATE STORE_PROBE_FETCH="$<TARGET_FILE:agentd-fetch>")
add_dependencies(store_probe agentd-fetch)
