# libadruntime: real containers from a busybox-static rootfs. Needs root.
agentd_unit_test(runtime_test adruntime adbase PkgConfig::LIBCAP Threads::Threads)
target_include_directories(runtime_test PRIVATE ${CMAKE_SOURCE_DIR}/runtime)
add_dependencies(runtime_test agentd-shim)
set_tests_properties(unit.runtime_test PROPERTIES TIMEOUT 300)

# A static helper the tests copy into their busybox rootfs (raw syscalls the
# default seccomp profile must refuse). Static: no sanitizers.
add_executable(runtime_probe ${CMAKE_CURRENT_SOURCE_DIR}/runtime_probe.c)
set_property(TARGET runtime_probe PROPERTY COMPILE_OPTIONS "")
set_property(TARGET runtime_probe PROPERTY LINK_OPTIONS "")
target_compile_options(runtime_probe PRIVATE -Wall -Wextra -Werror -D_GNU_SOURCE)
target_link_options(runtime_probe PRIVATE -static)
add_dependencies(runtime_test runtime_probe)
if(AD_MUSL_GCC)
  # The shim is the musl build: its resident size is held to the target.
  target_compile_definitions(runtime_test PRIVATE RT_SHIM_MAX_RSS_KIB=300)
endif()
