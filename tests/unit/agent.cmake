# agentd's own modules: config (agent/config.c), the services and the CRI
# registration (agent/services, agent/cri).
agentd_unit_test(agent_config_test agentconfig)
if(TARGET agentcri)
  agentd_unit_test(agent_services_test agentcri agentservices adproto)
endif()
# agent/cri/spec.c: the CRI -> runtime config translation, pure (no root).
if(TARGET agentcri)
  agentd_unit_test(spec_test agentcri adproto adruntime)
  target_include_directories(spec_test PRIVATE ${CMAKE_SOURCE_DIR}/agent/cri)
endif()
