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
for l in machine stacks service; do
  # vitest's summary names each failed test on a " FAIL " line, its error and diff on the lines after it: the first
  # failure of a lane is shown with them, the others by name (the diff is what tells a CI failure from another).
  sed 's/\x1b\[[0-9;]*m//g' "$logs/$l.log" | awk '
    /^ *FAIL / { n++; if (n == 1) { first = 1; k = 0 } else { first = 0; if (n <= 15) print; next } }
    first && k < 24 && !/^ *$/ && !/^ *[0-9]+\|/ && !/^ *❯ / { print; k++ }
  ' | cut -c1-240 | sed "s/^/failed [$l] /"
done
echo "tests: machine project exit $m, stacks project exit $k, service project exit $s"
[ "$m" -eq 0 ] && [ "$k" -eq 0 ] && [ "$s" -eq 0 ]
