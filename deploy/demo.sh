#!/usr/bin/env bash
# The main job on a fresh machine: install dependencies, build, start agentd
# on its embedded default configuration under a temporary root, show it
# answering over its unix socket, then load the demo image (the build makes
# it from busybox-static, offline) with agentctl load, run a pod with a web server container and a port mapping, show the pod, the
# container, its logs, an exec and its stats, fetch the page through the
# mapped port, and clean everything up. Run as root.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${AGENTD_DEMO_BUILD:-$top/build}

if [ "${AGENTD_SKIP_DEPS:-0}" != 1 ]; then
	bash "$top/deploy/install-deps.sh"
fi
cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" --target agentd agentd-shim agentd-infra agentctl demo-image

demo=$(mktemp -d /tmp/agentd-demo.XXXXXX)
sock="$demo/agentd.sock"
agentd_pid=
cleanup() {
	if [ -n "${pod:-}" ]; then
		ctl stopp "$pod" >/dev/null 2>&1 || true
		ctl rmp "$pod" >/dev/null 2>&1 || true
	fi
	for pid in $agentd_pid; do
		if kill -0 "$pid" 2>/dev/null; then
			kill -TERM "$pid"
			wait "$pid" || true
		fi
	done
	ip link del "${bridge:-agentd-demo0}" 2>/dev/null || true
	# agentd makes its netns dir a mount point (as `ip netns` does).
	umount "$demo/state/netns" 2>/dev/null || true
	# agentd's cgroup parent, if the demo's containers were its only ones.
	for d in /sys/fs/cgroup/*/agentd; do rmdir "$d" 2>/dev/null || true; done
	rm -rf "$demo"
}
trap cleanup EXIT

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

# The pod network: deploy/cni's bridge + portmap conflist, but on a bridge,
# subnet and IPAM directory of the demo's own, so that nothing outlives it.
bridge=agentd-demo0
mkdir -p "$demo/cni"
sed -e "s/\"agentd0\"/\"$bridge\"/" -e 's#10.88.0.0/16#10.89.0.0/24#' \
	-e "s#\"type\": \"host-local\",#\"type\": \"host-local\", \"dataDir\": \"$demo/ipam\",#" \
	"$top/deploy/cni/10-agentd.conflist" >"$demo/cni/10-agentd-demo.conflist"
printf '[cni]\nconf_dir = %s\n' "$demo/cni" >"$demo/agentd.conf"

step "starting agentd (embedded defaults + the demo's CNI dir, root $demo/root)"
"$build/agent/agentd" --config "$demo/agentd.conf" --root "$demo/root" --state "$demo/state" \
	--listen "$sock" 2>"$demo/agentd.log" &
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

image=agentd/demo:latest
step "agentctl load -i demo-image.tar ($image, built by the build from busybox-static)"
ctl load -i "$build/deploy/demo-image/demo-image.tar"
step "agentctl images"
ctl images
step "agentctl inspecti (first lines)"
ctl inspecti "$image" | head -n 20

hostport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
step "agentctl runp pod.json (a pod with port mapping $hostport -> 8080)"
cat >"$demo/pod.json" <<JSON
{
  "metadata": {"name": "demo", "namespace": "default", "uid": "demo-$$", "attempt": 0},
  "hostname": "demo",
  "log_directory": "$demo/logs",
  "port_mappings": [{"protocol": "TCP", "container_port": 8080, "host_port": $hostport}]
}
JSON
cat >"$demo/web.json" <<JSON
{
  "metadata": {"name": "web"},
  "image": {"image": "$image"},
  "log_path": "web.log"
}
JSON
pod=$(ctl runp "$demo/pod.json")
echo "$pod"
step "agentctl create + start (httpd from the demo image)"
ctr=$(ctl create "$pod" "$demo/web.json" "$demo/pod.json")
ctl start "$ctr"
echo "$ctr"
step "agentctl pods"
ctl pods
step "agentctl ps"
ctl ps
gw=$(ctl inspectp "$pod" | python3 -c 'import json,sys; ip=json.load(sys.stdin)["status"]["network"]["ip"]; print(ip.rsplit(".",1)[0]+".1")')
step "curl http://$gw:$hostport/ (the bridge address, through the port mapping)"
for _ in $(seq 50); do
	curl -fsS "http://$gw:$hostport/" && break
	sleep 0.1
done
step "agentctl logs web"
ctl logs "$ctr"
step "agentctl exec web -- hostname; ps"
ctl exec "$ctr" hostname
ctl exec "$ctr" ps
step "agentctl stats"
ctl stats || true
step "cleaning up: stop, rm, stopp, rmp"
ctl stop "$ctr" && ctl rm "$ctr"
ctl stopp "$pod" && ctl rmp "$pod"
pod=
ctl pods

step "stopping agentd (SIGTERM: GOAWAY, drain, exit)"
kill -TERM "$agentd_pid"
wait "$agentd_pid"
agentd_pid=
echo "agentd exited cleanly; its log:"
sed 's/^/    /' "$demo/agentd.log"
