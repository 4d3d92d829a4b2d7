# libadcni (agent/cni): config loading, plugin protocol, netns, real plugins (as root).
agentd_unit_test(cni_test adcni PkgConfig::JANSSON Threads::Threads)
set_tests_properties(unit.cni_test PROPERTIES TIMEOUT 180)
