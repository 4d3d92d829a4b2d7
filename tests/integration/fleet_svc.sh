#!/bin/sh
# A stand-in for systemctl on the fleet test's "hosts": systemd is not PID 1
# on this machine, so this runs agentd as the installed unit's ExecStart
# says, with a pid file. Only what agentd-fleet asks for:
# daemon-reload, enable, is-active [--quiet], restart (UNIT is agentd).
set -eu
cmd=$1
shift
[ "${1:-}" = "--quiet" ] && shift
[ "$cmd" = daemon-reload ] || [ "${1:-}" = "agentd" ] ||
	{ echo "fleet_svc: unit '${1:-}' unknown" >&2; exit 5; }
dir=/var/lib/agentd-svc
pidf=$dir/pid
running() { [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; }
case $cmd in
daemon-reload) ;;
enable) mkdir -p "$dir" && : >"$dir/enabled" ;;
is-active) running ;;
restart)
	if running; then
		kill "$(cat "$pidf")"
		while running; do sleep 0.1; done
	fi
	mkdir -p "$dir"
	start=$(sed -n 's/^ExecStart=//p' /usr/local/lib/systemd/system/agentd.service)
	# shellcheck disable=SC2086
	setsid $start </dev/null >>"$dir/log" 2>&1 &
	echo $! >"$pidf"
	;;
*) echo "fleet_svc: $cmd unsupported" >&2; exit 1 ;;
esac
