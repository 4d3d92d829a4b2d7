# agentd's image services (agent/cri/images.c, agent/services/agent_image.c).
if(TARGET agentservices)
  agentd_unit_test(agent_image_test agentservices)
endif()
