# agentd's own modules (agent/*.c).
agentd_unit_test(agent_config_test agentconfig)
if(TARGET agentsvc)
  agentd_unit_test(agent_services_test agentsvc)
endif()
