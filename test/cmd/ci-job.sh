#!/bin/bash
# A CI job, as the README's "Use Kiln from CI" snippets run it: build the Dockerfile with its context on Kiln, wait
# for it while printing its log, download the artifacts (checked against SHA256SUMS and the signature), then check
# them again with `kiln verify`. The job's status is the first failing command's (set -e): kiln client's exit status
# says why (1 the build failed, 4 the policy refused the Dockerfile, ...).
#
# argv: KILN NAME DOCKERFILE CONTEXT OUT [kiln verify options]; KILN_URL and KILN_TOKEN in the environment, and
# whatever CI variables the job's CI sets (CI_JOB_ID, GITHUB_RUN_ID, BUILD_TAG).
set -euo pipefail
kiln=$1 name=$2 dockerfile=$3 context=$4 out=$5
shift 5

"$kiln" client build --name "$name" --dockerfile "$dockerfile" --context "$context" --format raw \
  --wait --download "$out"
"$kiln" verify "$out" --key-url "$KILN_URL/.well-known/kiln-signing-key" --require-signature "$@"
