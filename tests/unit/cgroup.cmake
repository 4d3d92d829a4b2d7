# cgroup drivers (runtime/cgroup*.c). Real cgroups: needs root.
if(TARGET adruntime)
  agentd_unit_test(cgroup_test adruntime adbase)
else()
  # Before libadruntime exists, build the drivers straight into the test.
  file(GLOB cgroup_sources ${CMAKE_SOURCE_DIR}/runtime/cgroup*.c)
  agentd_unit_test(cgroup_test adbase)
  target_sources(cgroup_test PRIVATE ${cgroup_sources})
endif()
target_include_directories(cgroup_test PRIVATE ${CMAKE_SOURCE_DIR}/runtime)
set_tests_properties(unit.cgroup_test PROPERTIES TIMEOUT 120)
