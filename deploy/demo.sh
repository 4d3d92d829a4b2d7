#!/usr/bin/env bash
# The main job on a fresh machine: install dependencies, build, start agentd
# on its embedded default configuration under a temporary root, show it
# answering over its unix socket, then build the demo image from
# busybox-static (offline), serve it from a registry on loopback and pull it
# with agentctl. Run as root.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${AGENTD_DEMO_BUILD:-$top/build}

if [ "${AGENTD_SKIP_DEPS:-0}" != 1 ]; then
	bash "$top/deploy/install-deps.sh"
fi
cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" --target agentd agentd-shim agentctl

demo=$(mktemp -d /tmp/agentd-demo.XXXXXX)
sock="$demo/agentd.sock"
agentd_pid=
registry_pid=
cleanup() {
	for pid in $agentd_pid $registry_pid; do
		if kill -0 "$pid" 2>/dev/null; then
			kill -TERM "$pid"
			wait "$pid" || true
		fi
	done
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

step "building the demo image from busybox-static"
bash "$top/deploy/demo-image/build.sh" "$demo/image" | tail -n 1

step "serving it from a docker-registry on loopback"
# A free port on 127.0.0.1: bind to 0 and let the kernel pick.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$demo/registry"
cat >"$demo/registry/config.yml" <<CFG
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $demo/registry/data
http:
  addr: 127.0.0.1:$port
CFG
/usr/bin/docker-registry serve "$demo/registry/config.yml" >"$demo/registry/log" 2>&1 &
registry_pid=$!
for _ in $(seq 100); do
	curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break
	sleep 0.1
done
image="127.0.0.1:$port/agentd/demo:latest"
skopeo copy --quiet --dest-tls-verify=false "oci:$demo/image/oci:latest" "docker://$image"
echo "pushed $image"

step "agentctl pull $image"
ctl pull "$image"
step "agentctl images"
ctl images
step "agentctl inspecti (first lines)"
ctl inspecti "$image" | head -n 20

step "stopping agentd (SIGTERM: GOAWAY, drain, exit)"
kill -TERM "$agentd_pid"
wait "$agentd_pid"
agentd_pid=
echo "agentd exited cleanly; its log:"
sed 's/^/    /' "$demo/agentd.log"
