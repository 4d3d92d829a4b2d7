# libadstore: unit tests (no registry) and the probe CLI the integration tests
# (tests/integration/test_store_pull.py) drive against a real docker-registry.
agentd_unit_test(store_test adstore PkgConfig::OPENSSL PkgConfig::JANSSON)
add_executable(store_probe ${CMAKE_CURRENT_SOURCE_DIR}/store_probe.c)
target_link_libraries(store_probe PRIVATE adstore)
