# agentd's image services (agent/cri_image.c, agent/agent_image.c).
if(TARGET agentsvc)
  agentd_unit_test(agent_image_test agentsvc)
endif()
