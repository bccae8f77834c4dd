#!/usr/bin/env bash
# Runs the three vitest projects (vitest.config.ts) side by side, each one file at a time: vitest 4 shares one worker
# pool across the projects of a run, so one process would still run every file in a row. src/ is compiled once
# beforehand (the global setup skips it when KILN_TEST_COMPILED=1), so the runs never write dist/ at once.
# Extra arguments (files, -t) go to every run; a project with no matching file passes.
set -uo pipefail
cd "$(dirname "$0")/.."
npx tsc -p tsconfig.build.json || exit 1
export KILN_TEST_COMPILED=1
# Each lane's output is kept too, so the end of the run can name what failed: CI reports show only the last lines.
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
lane() {
  npx vitest run --project "$1" --passWithNoTests "${@:2}" 2>&1 | tee "$logs/$1.log" | sed -u "s/^/[$1] /"
  return "${PIPESTATUS[0]}"
}
lane machine "$@" &
machine=$!
lane stacks "$@" &
stacks=$!
lane service "$@" &
service=$!
wait "$machine"; m=$?
wait "$stacks"; k=$?
wait "$service"; s=$?
# CI reports show only the last twenty-odd lines, so the end is compact and self-contained: first the names of a
# lane's other failures (a few), then each failing lane's first failure with its error and diff, then the exits.
summary() { # lane, mode (names|first)
  # vitest prints tests that failed with the same error as a run of FAIL lines, then that error once.
  sed 's/\x1b\[[0-9;]*m//g' "$logs/$1.log" | awk -v mode="$2" '
    /^ *FAIL / { n++
                 if (n == 1) { first = 1; k = 0; if (mode == "first") print; next }
                 if (first && k == 0) { same++; next }
                 first = 0; if (mode == "names" && n - same <= 4) print; next }
    /^ *Test Files / { if (mode == "names" && n - same > 4) print "... " n " failed in all"; first = 0 }
    first && k < 8 && !/^ *$/ && !/^ *[0-9]* *\|/ && !/^ *❯ / && !/^ *[-+] *$/ && !/⎯/ {
      if (mode == "first") { if (k == 0 && same) print "(and " same " more tests with this same error)"; print }
      k++ }
  ' | cut -c1-400 | sed "s/^ *//; s/^/failed [$1] /"
}
for l in machine stacks service; do summary "$l" names; done
for l in machine stacks service; do summary "$l" first; done
echo "tests: machine project exit $m, stacks project exit $k, service project exit $s"
[ "$m" -eq 0 ] && [ "$k" -eq 0 ] && [ "$s" -eq 0 ]
