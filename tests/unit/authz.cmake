# The authorization policy (agent/services/authz).
agentd_unit_test(authz_test adauthz)
