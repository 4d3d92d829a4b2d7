# The systemd notify protocol (lib/base/notify.c).
agentd_unit_test(notify_test adbase)
