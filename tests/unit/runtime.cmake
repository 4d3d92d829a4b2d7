# libadruntime: real containers from a busybox-static rootfs. Needs root.
agentd_unit_test(runtime_test adruntime adcommon PkgConfig::LIBCAP)
target_include_directories(runtime_test PRIVATE ${CMAKE_SOURCE_DIR}/runtime)
add_dependencies(runtime_test agentd-shim)
set_tests_properties(unit.runtime_test PROPERTIES TIMEOUT 300)
