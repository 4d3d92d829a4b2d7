#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan, coverage in every
# library they call) and runs each from its seed corpus.
#
#   tests/fuzz/run.sh [SECONDS] [TARGET...]
#
# SECONDS per target (default 15: what CI runs). For a long run, e.g. an
# hour each with every core:  FUZZ_JOBS=$(nproc) tests/fuzz/run.sh 3600
# FUZZ_RUNS=N ends a target after N executions (per job) if that comes
# first (the long run's aim: FUZZ_RUNS=10000000; see README.md).
# New inputs go to a scratch corpus ($AGENTD_FUZZ_WORK, default a temp dir)
# that is kept when a target fails; copy the interesting ones into
# tests/fuzz/corpus/<target>/ to keep them as seeds. Prints each target's
# executions; exits non-zero on the first crash, leak or timeout.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
seconds=${1:-15}
shift || true
build=${AGENTD_FUZZ_BUILD:-$top/build-fuzz}
CC=clang cmake -S "$top" -B "$build" -DAGENTD_SANITIZE=ON -DAGENTD_FUZZ=ON >/dev/null
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
	mapfile -t targets < <(cd "$top/tests/fuzz" && ls *_fuzz.c | sed 's/\.c$//')
fi
cmake --build "$build" -j"$(nproc)" --target "${targets[@]}"
work=${AGENTD_FUZZ_WORK:-$(mktemp -d /tmp/agentd-fuzz.XXXXXX)}
failed=0
for t in "${targets[@]}"; do
	mkdir -p "$work/$t"
	seeds="$top/tests/fuzz/corpus/$t"
	[ -d "$seeds" ] || { echo "fuzz: $t has no seed corpus ($seeds)" >&2; exit 1; }
	log="$work/$t.log"
	started=$SECONDS
	if ! (cd "$work" && "$build/tests/fuzz/$t" -max_total_time="$seconds" -timeout=10 \
		-rss_limit_mb=2048 -print_final_stats=1 -runs="${FUZZ_RUNS:--1}" -jobs="${FUZZ_JOBS:-1}" \
		-workers="${FUZZ_JOBS:-1}" "$work/$t" "$seeds") >"$log" 2>&1; then
		echo "fuzz: $t FAILED; log and reproducer in $work" >&2
		tail -40 "$log" >&2
		failed=1
		break
	fi
	# The parent's log holds a copy of every job's log (fuzz-N.log, which
	# the next target overwrites): count there only.
	runs=$(grep -h 'stat::number_of_executed_units' "$log" 2>/dev/null |
		awk '{s += $2} END {print s + 0}')
	echo "fuzz: $t: $runs executions in $((SECONDS - started))s, no failure"
done
if [ $failed -eq 0 ] && [ -z "${AGENTD_FUZZ_WORK:-}" ]; then
	rm -rf "$work"
fi
exit $failed
