agentd_unit_test(store_test adstore PkgConfig::OPENSSL)
