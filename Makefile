# Kiln: `make run` sets up and starts the embedded default; `make test` runs every test.
.PHONY: deps test-deps build run test typecheck lint format bench-sdk bench-glue bench-jenkins bench-follow bench-web bench-api chaos compat clean

deps:
	scripts/ensure-deps.sh

test-deps:
	KILN_WITH_TEST_DEPS=1 scripts/ensure-deps.sh

build: deps
	npx tsc -p tsconfig.build.json

run: build
	scripts/ensure-dockerd.sh
	bin/kiln serve

typecheck:
	npx tsc -p tsconfig.json --noEmit

# ESLint with typescript-eslint's recommended rules (eslint.config.js) and Prettier's check (.prettierrc.json); part
# of `make test`. `make format` rewrites the files Prettier would change.
LINT_FILES = "src/**/*.ts" "test/**/*.ts" "bench/**/*.ts" "*.ts" eslint.config.js
lint:
	npx eslint --max-warnings 0 src test bench
	npx prettier --check $(LINT_FILES)

format:
	npx prettier --write $(LINT_FILES)

test: test-deps
	scripts/ensure-dockerd.sh
	scripts/ensure-postgres.sh
	npx tsc -p tsconfig.json --noEmit
	$(MAKE) --no-print-directory lint
	scripts/run-tests.sh

# Crash injection and fuzzing, long form (the short forms run inside `make test`): a long HTTP fuzz run, then the
# chaos harness (CHAOS_KILLS=100 SIGKILLs over kiln serve, Jenkins behind OpenSSH, two webs on PostgreSQL, with a
# few real builds). CHAOS_SEED / FUZZ_SEED replay a run. The last line is the chaos summary; see bench/RESULTS-chaos.md.
chaos: build test-deps
	scripts/ensure-dockerd.sh
	scripts/ensure-postgres.sh
	FUZZ_CASES=$${FUZZ_CASES:-30000} npx vitest run test/fuzz/http.test.ts; fuzz=$$?; \
	npx tsx test/chaos/main.ts; chaos=$$?; \
	test $$fuzz -eq 0 -a $$chaos -eq 0

# The compatibility corpus, long form (its short form runs inside `make test`): every dockerfiles/<name>/ with a
# LABEL io.kiln.expect-console, built and booted (raw, BIOS) by bin/kiln sdk build, one at a time, one line each,
# last `compat: P/N boot to their marker`. COMPAT_ONLY=a,b runs some; COMPAT_KEEP=1 keeps failed entries' logs.
compat: build
	scripts/ensure-dockerd.sh
	npx tsx test/compat/main.ts

bench-sdk: build
	scripts/ensure-dockerd.sh
	npx tsx bench/sdk.ts

bench-glue: build
	npx tsx bench/glue.ts

bench-jenkins: build
	npx tsx bench/jenkins.ts

# 200 SSE viewers of one live log (line delay p50/p99) and queue fairness; writes bench/RESULTS-web.md "Live log and queue".
bench-follow: build
	npx tsx bench/web-follow.ts

# Pages under load (dashboard, build page, 100 sessions) against a bare Express route: bench/RESULTS-web.md.
bench-web: build
	npx tsx bench/web.ts

# The REST API through `kiln client` against kiln serve: its overhead on a build (client start -> SDK start, SDK end
# -> client exit) and the server's CPU with 100 clients waiting (long poll, log follow); bench/RESULTS-api.md.
bench-api: build
	npx tsx bench/api.ts

clean:
	rm -rf dist
