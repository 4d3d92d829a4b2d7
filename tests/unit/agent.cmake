# agentd's own modules: config (agent/config.c), the services and the CRI
# registration (agent/services, agent/cri).
agentd_unit_test(agent_config_test agentconfig)
if(TARGET agentcri)
  agentd_unit_test(agent_services_test agentcri agentservices)
endif()
