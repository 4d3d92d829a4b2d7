#!/usr/bin/env bash
# critest (the Kubernetes CRI validation suite, v1.29.0) against agentd, offline, through the
# project's shared conformance harness (shared/conformance/critest.sh). agentd runs privately:
# its own root, state, socket, CNI network (bridge, subnet, IPAM dir) under a temp dir, all
# removed afterwards. Exit status: 0 every spec that ran passed; 1 a spec failed or the run
# broke; 77 skipped (the harness or a tool it needs is missing; the message names it).
#
#   critest_agentd.sh [--agentd PATH] [--parallel N] [-- CRITEST_SH_ARGS...]
#
#   --agentd PATH      the agentd to test; default $AGENTD_BUILD_DIR/agent/agentd, else an
#                      agentd on PATH (an installed one finds its installed shim and infra)
#   --parallel N       run the specs on N ginkgo processes (default: serial)
#
# Env: AGENTD_SHARED_DIR (the shared/ folder holding conformance/ and cri-tools/; default
# <repo>/../shared, else ../shared beside the repository's main checkout), AGENTD_CRITEST_WORK
# (the harness's work dir: busybox, images, registry data, results; default
# $AGENTD_BUILD_DIR/conformance, else /tmp/agentd-conformance), AGENTD_CRITEST_PORT_WAIT (seconds
# to wait for another run to free the harness's ports 443, 5000 and 12000-12003; default 600).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/../.." && pwd)
SKIP=77

agentd=''
parallel=''
harness_args=()
while [ $# -gt 0 ]; do
	case $1 in
	--agentd) agentd=${2:?--agentd needs a path}; shift 2 ;;
	--parallel) parallel=${2:?--parallel needs a number}; shift 2 ;;
	-h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	--) shift; harness_args=("$@"); break ;;
	*) echo "critest_agentd.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
	esac
done

skip() { echo "SKIPPED: $*"; exit "$SKIP"; }

[ "$(id -u)" = 0 ] || skip "critest needs root (host mounts, host IPC, host ports)"

# ---- the shared harness: shared/ beside this checkout, or beside the main checkout of a worktree
shared=${AGENTD_SHARED_DIR:-}
if [ -z "$shared" ]; then
	for cand in "$src/../shared" \
		"$(git -C "$src" rev-parse --path-format=absolute --git-common-dir 2>/dev/null)/../../shared"; do
		[ -d "$cand/conformance" ] && { shared=$(cd "$cand" && pwd); break; }
	done
fi
[ -n "$shared" ] || skip "no shared/conformance/critest.sh beside the repository ($src/../shared);" \
	"set AGENTD_SHARED_DIR to the folder that holds conformance/ and cri-tools/"
harness=$shared/conformance/critest.sh
[ -x "$harness" ] || skip "no executable $harness"
[ -x "$shared/cri-tools/install" ] || command -v critest >/dev/null \
	|| skip "no critest: neither $shared/cri-tools/install nor critest on PATH"
for t in docker-registry unshare curl gcc ip iptables; do
	command -v "$t" >/dev/null || skip "missing command $t (deploy/install-deps.sh installs it)"
done
for p in bridge host-local portmap; do
	[ -x "/usr/lib/cni/$p" ] || skip "missing CNI plugin /usr/lib/cni/$p (containernetworking-plugins)"
done

if [ -z "$agentd" ]; then
	if [ -n "${AGENTD_BUILD_DIR:-}" ]; then agentd=$AGENTD_BUILD_DIR/agent/agentd
	else agentd=$(command -v agentd) || { echo "no agentd: give --agentd PATH" >&2; exit 2; }
	fi
fi
[ -x "$agentd" ] || { echo "critest_agentd.sh: $agentd is not executable" >&2; exit 2; }
agentd=$(cd "$(dirname "$agentd")" && pwd)/$(basename "$agentd")

work=${AGENTD_CRITEST_WORK:-${AGENTD_BUILD_DIR:+$AGENTD_BUILD_DIR/conformance}}
work=${work:-/tmp/agentd-conformance}
mkdir -p "$work" || exit 2

# ---- a good neighbour: wait while another critest run holds the harness's fixed ports
ports_busy() {
	local p busy=''
	for p in 443 5000 12000 12001 12002 12003; do
		ss -Hltn "sport = :$p" | grep -q . && busy="$busy $p"
	done
	[ -n "$busy" ] && echo "${busy# }"
}
wait_left=${AGENTD_CRITEST_PORT_WAIT:-600}
while busy=$(ports_busy); do
	if [ "$wait_left" -le 0 ]; then
		echo "critest_agentd.sh: TCP ports $busy still in use (another critest run?)" >&2
		exit 1
	fi
	[ $((wait_left % 60)) = 0 ] && echo "waiting for TCP ports $busy (${wait_left}s left)"
	sleep 5
	wait_left=$((wait_left - 5))
done

# ---- agentd's private dirs and CNI network
tmp=$(mktemp -d /tmp/agentd-critest.XXXXXX) || exit 2
bridge=adcri$$
bridge=${bridge:0:15}
netname=agentd-critest-$$
subnet=''
for n in $(seq 120 199); do
	if [ -z "$(ip -o route show "10.$n.0.0/16")" ] && ! ip -o addr | grep -q " 10\.$n\."; then
		subnet=10.$n.0.0/16
		break
	fi
done
[ -n "$subnet" ] || { echo "critest_agentd.sh: no free 10.N.0.0/16 subnet for the pods" >&2; exit 2; }
mkdir -p "$tmp/cni" "$tmp/root" "$tmp/state"
cat >"$tmp/cni/10-critest.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$netname",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$tmp/ipam",
        "ranges": [[{ "subnet": "$subnet" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOF
cat >"$tmp/agentd.conf" <<EOF
[agentd]
root = $tmp/root
state = $tmp/state
[grpc]
listen = $tmp/state/agentd.sock
[cni]
conf_dir = $tmp/cni
netns_dir = $tmp/netns
[metrics]
# a free port, not the default 9101 another agentd on this host may hold
listen = 127.0.0.1:0
EOF

# nat rules and chains tagged with our network's name, which a CNI DEL that failed leaves
cni_nat_cleanup() {
	local rules r chain target chains=()
	rules=$(iptables -t nat -S 2>/dev/null | grep -F "name: \\\"$netname\\\"") || return 0
	while IFS= read -r r; do
		read -r _ chain _ <<<"$r"
		target=$(grep -oE -- '-j CNI-[A-Za-z0-9-]+' <<<"$r" | cut -c4-)
		case $chain in
		POSTROUTING | PREROUTING | OUTPUT | CNI-HOSTPORT-*) eval "iptables -t nat ${r/#-A/-D}" ;;
		*) chains+=("$chain") ;;
		esac
		case $target in CNI-HOSTPORT-* | '') ;; *) chains+=("$target") ;; esac
	done <<<"$rules"
	for chain in $(printf '%s\n' "${chains[@]}" | sort -u); do
		iptables -t nat -F "$chain" && iptables -t nat -X "$chain"
	done
	echo "cleanup: removed nat rules of CNI network $netname"
}

cleanup() {
	# pods critest could not remove were removed through agentd by the harness; what is left
	# here is the network and agentd's own dirs
	ip link show "$bridge" >/dev/null 2>&1 && ip link del "$bridge"
	cni_nat_cleanup
	grep -q " $tmp/netns " /proc/self/mountinfo && umount "$tmp/netns"
	rm -rf "$tmp"
	# agentd's default cgroup parent, once empty (another agentd on the host may still use it)
	rmdir /sys/fs/cgroup/*/agentd /sys/fs/cgroup/agentd 2>/dev/null
	return 0
}
trap cleanup EXIT
trap 'exit 1' INT TERM

out=$work/results/$(date +%Y%m%d-%H%M%S)-$$
args=(--work "$work" --out "$out" --endpoint "unix://$tmp/state/agentd.sock")
[ -n "$parallel" ] && args+=(--parallel "$parallel")
env ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}" \
	"$harness" "${args[@]}" "${harness_args[@]}" -- "$agentd" --config "$tmp/agentd.conf"
rc=$?

# agentd built with the sanitizers: any report in its log fails the run
if grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$out/runtime.log" 2>/dev/null; then
	echo "sanitizer report in agentd's log $out/runtime.log:"
	grep -E -A20 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$out/runtime.log" | head -60
	rc=1
fi
exit "$rc"
