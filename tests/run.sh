#!/usr/bin/env bash
# The whole test suite: builds agentd with ASan + UBSan into build-test/ and
# runs every test (cmocka unit tests and pytest integration tests) with ctest.
# Needs root (real containers, mounts, cgroups) and the packages of
# deploy/install-deps.sh.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${AGENTD_TEST_BUILD:-$top/build-test}
cmake -S "$top" -B "$build" -DAGENTD_SANITIZE=ON >/dev/null
cmake --build "$build" -j"$(nproc)"
cd "$build"
exec ctest --output-on-failure --timeout 900 "$@"
