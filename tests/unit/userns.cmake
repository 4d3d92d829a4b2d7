# agent/pods/userns.c: subordinate id ranges, mapping checks, block choice (pure).
if(TARGET agentpods)
  agentd_unit_test(userns_test agentpods addb adbase)
  target_include_directories(userns_test PRIVATE ${CMAKE_SOURCE_DIR}/agent/pods)
endif()
