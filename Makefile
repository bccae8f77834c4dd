# Kiln: `make run` sets up and starts the embedded default; `make test` runs every test.
.PHONY: deps test-deps build run test typecheck bench-sdk bench-glue bench-jenkins clean

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

test: test-deps
	scripts/ensure-dockerd.sh
	scripts/ensure-postgres.sh
	npx tsc -p tsconfig.json --noEmit
	npx vitest run

bench-sdk: build
	scripts/ensure-dockerd.sh
	npx tsx bench/sdk.ts

bench-glue: build
	npx tsx bench/glue.ts

bench-jenkins: build
	npx tsx bench/jenkins.ts

clean:
	rm -rf dist
