# libadmetrics (agent/services/metrics): exposition, registry, HTTP endpoint.
agentd_unit_test(metrics_test admetrics)
