#!/usr/bin/env bash
# The main job on a fresh machine: install dependencies, build, start agentd
# on its embedded default configuration under a temporary root, and show it
# answering over its unix socket with agentctl. Run as root.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${AGENTD_DEMO_BUILD:-$top/build}

if [ "${AGENTD_SKIP_DEPS:-0}" != 1 ]; then
	bash "$top/deploy/install-deps.sh"
fi
cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" --target agentd agentctl

demo=$(mktemp -d /tmp/agentd-demo.XXXXXX)
sock="$demo/agentd.sock"
agentd_pid=
cleanup() {
	if [ -n "$agentd_pid" ] && kill -0 "$agentd_pid" 2>/dev/null; then
		kill -TERM "$agentd_pid"
		wait "$agentd_pid" || true
	fi
	rm -rf "$demo"
}
trap cleanup EXIT

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "starting agentd (embedded default config, root $demo/root)"
"$build/agent/agentd" --root "$demo/root" --state "$demo/state" --listen "$sock" \
	2>"$demo/agentd.log" &
agentd_pid=$!
ctl() { "$build/ctl/agentctl" --endpoint "unix://$sock" "$@"; }
for _ in $(seq 100); do
	ctl version >/dev/null 2>&1 && break
	kill -0 "$agentd_pid" 2>/dev/null || { cat "$demo/agentd.log"; exit 1; }
	sleep 0.1
done

step "agentctl version"
ctl version
step "agentctl info"
ctl info

step "stopping agentd (SIGTERM: GOAWAY, drain, exit)"
kill -TERM "$agentd_pid"
wait "$agentd_pid"
agentd_pid=
echo "agentd exited cleanly; its log:"
sed 's/^/    /' "$demo/agentd.log"
