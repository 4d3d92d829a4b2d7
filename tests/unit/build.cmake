# agent/services/build: the Dockerfile parser, Docker's word expansion and
# path cleaning (pure; no daemon).
agentd_unit_test(build_test agentbuild)
target_include_directories(build_test PRIVATE ${CMAKE_SOURCE_DIR}/agent/services/build)
