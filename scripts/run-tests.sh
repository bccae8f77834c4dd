#!/usr/bin/env bash
# Runs the three vitest projects (vitest.config.ts) side by side, each one file at a time: vitest 4 shares one worker
# pool across the projects of a run, so one process would still run every file in a row. src/ is compiled once
# beforehand (the global setup skips it when KILN_TEST_COMPILED=1), so the runs never write dist/ at once.
# Extra arguments (files, -t) go to every run; a project with no matching file passes.
set -uo pipefail
cd "$(dirname "$0")/.."
npx tsc -p tsconfig.build.json || exit 1
export KILN_TEST_COMPILED=1
npx vitest run --project machine --passWithNoTests "$@" 2>&1 | sed -u 's/^/[machine] /' &
machine=$!
npx vitest run --project stacks --passWithNoTests "$@" 2>&1 | sed -u 's/^/[stacks] /' &
stacks=$!
npx vitest run --project service --passWithNoTests "$@" 2>&1 | sed -u 's/^/[service] /' &
service=$!
wait "$machine"; m=$?
wait "$stacks"; k=$?
wait "$service"; s=$?
echo "tests: machine project exit $m, stacks project exit $k, service project exit $s"
[ "$m" -eq 0 ] && [ "$k" -eq 0 ] && [ "$s" -eq 0 ]
