#!/usr/bin/env bash
# Builds another revision of this repository beside the working tree, for
# comparisons: the benchmarks' BENCH_AGENTD_BASELINE (old and new agentd side
# by side in one run) and the upgrade test's AGENTD_UPGRADE_FROM (state made
# by an older agentd). Sourced by bash scripts, or run:
#
#   tests/build_revision.sh REV NAME [CMAKE_ARGS...] -- TARGETS...
#   revision_build REV NAME [CMAKE_ARGS...] -- TARGETS...   (sourced)
#
# extracts REV (a commit, tag or branch) with `git archive` into
# /tmp/agentd-rev-<commit>/src once (nothing is registered in the
# repository: no worktree), builds TARGETS in /tmp/agentd-rev-<commit>/build-NAME
# (Release, no sanitizers, warnings not fatal: an older tree may warn under a
# newer compiler at -O3), sets revision_src and revision_build_dir (sourced)
# or prints the build dir (run).

revision_build() {
	revision_src= revision_build_dir=
	local rev=$1 name=$2
	shift 2
	local cmake_args=() targets=()
	while (($#)) && [ "$1" != -- ]; do
		cmake_args+=("$1")
		shift
	done
	(($#)) && shift
	targets=("$@")
	local top commit dir
	top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
	commit=$(git -C "$top" rev-parse --verify --quiet "$rev^{commit}") ||
		{ echo "$rev: not a commit of $top" >&2; return 1; }
	dir=/tmp/agentd-rev-${commit:0:12}
	revision_src=$dir/src
	if [ ! -f "$dir/src.complete" ]; then
		rm -rf "$revision_src"
		mkdir -p "$revision_src"
		git -C "$top" archive "$commit" | tar -x -C "$revision_src"
		touch "$dir/src.complete"
	fi
	revision_build_dir=$dir/build-$name
	mkdir -p "$revision_build_dir"
	printf '#!/bin/sh\nexec "$@" -Wno-error\n' >"$revision_build_dir/cc-no-werror"
	chmod +x "$revision_build_dir/cc-no-werror"
	echo "building ${commit:0:12} ($rev) in $revision_build_dir" >&2
	cmake -S "$revision_src" -B "$revision_build_dir" -DCMAKE_BUILD_TYPE=Release \
		-DAGENTD_SANITIZE=OFF -DCMAKE_C_FLAGS= \
		-DCMAKE_C_COMPILER_LAUNCHER="$revision_build_dir/cc-no-werror" "${cmake_args[@]}" \
		>/dev/null || return 1
	nice cmake --build "$revision_build_dir" -j2 --target "${targets[@]}" >/dev/null
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	set -euo pipefail
	revision_build "$@"
	echo "$revision_build_dir"
fi
