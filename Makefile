# Palyra. `make help` lists the targets; `make run` and `make test` are all a fresh
# Debian machine needs: they install what is missing and build what is stale.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

GO ?= go
MODULE := github.com/palyra/palyra
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS := -X $(MODULE)/internal/buildinfo.version=$(VERSION)

# Pinned tools, built from source into .tools/ (the directory name carries the version,
# so bumping a version rebuilds the tool).
BUF_VERSION := v1.75.0
SQLC_VERSION := v1.31.1
BUF := $(CURDIR)/.tools/buf-$(BUF_VERSION)/buf
SQLC := $(CURDIR)/.tools/sqlc-$(SQLC_VERSION)/sqlc
NODE_MODULES := node_modules/.package-lock.json
# The sqlc output is current when this sum over the sqlc version, its inputs and its
# outputs still matches: make check then need not build sqlc (two minutes of a cold CI
# machine). Any edit to sqlc/ or gen/dbsqlc/ changes the sum, and make check then
# regenerates and compares as usual.
SQLC_SUM := gen/dbsqlc/sqlc.sum
sqlc_sum = { echo "sqlc $(SQLC_VERSION)"; cat sqlc/sqlc.yaml sqlc/migrations/*.sql sqlc/queries/*.sql gen/dbsqlc/*.go; } | sha256sum | cut -d' ' -f1

DATA_DIR ?= ./var
# Extra flags for palyrad under `make run`, e.g. ARGS='--log-level debug'.
ARGS ?=
# Extra flags for `go test`, e.g. GOTESTFLAGS='-run TestTLS -v'.
GOTESTFLAGS ?=
# buf breaking compares proto/ with this git revision when it exists: the last commit
# that changed the API incompatibly on purpose (issue 11's renames: StatusService,
# FeatureFlagService, AuditService, NodeInventoryService, *_time fields). Every later
# commit must stay compatible with it; a deliberate break moves the pin in the commit
# after it. A fixed baseline, not HEAD~1, so that merging that change into another
# branch passes too.
BREAKING_AGAINST ?= a0a1a6edebf8efd91ea05a3068d83578feb7a032

.PHONY: help
help: ## Show the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  \033[1m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: console ## Build the console, and bin/palyrad (which embeds it) and bin/palyra
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/palyrad ./server
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/palyra ./cli

.PHONY: run
run: postgres-binaries build ## Run palyrad on 127.0.0.1:7443 with its private PostgreSQL under ./var
	bin/palyrad --data-dir $(DATA_DIR) $(ARGS)

# The browser console (desktop/), built by Vite into the directory palyrad embeds. Not
# committed: make build rebuilds it when its sources change; go build alone embeds
# none, and palyrad's / then says how to build it.
CONSOLE_INDEX := server/internal/console/dist/index.html
CONSOLE_SOURCES = $(shell git ls-files desktop/src desktop/public desktop/index.html desktop/vite.config.ts 2>/dev/null) $(wildcard gen/ts/palyra/*/v1/*.ts)

.PHONY: console
console: $(CONSOLE_INDEX)

$(CONSOLE_INDEX): $(NODE_MODULES) $(CONSOLE_SOURCES)
	npm run --workspace desktop build
	@touch $@

# Chromium for the console's browser tests: installed with apt when missing and running
# as root, else an instruction.
.PHONY: chromium
chromium:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing Chromium (Debian package chromium)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "Chromium is missing for the browser tests: run 'sudo apt-get install chromium'" >&2; exit 1; \
	fi

.PHONY: test
# The tests run the binaries build has just made (PALYRAD, PALYRA) instead of building
# their own; go test alone, without them, builds them.
test: postgres-binaries chromium build $(NODE_MODULES) ## Run the Go, TypeScript and browser tests (a throwaway PostgreSQL unless DATABASE_URL is set)
	@export PALYRAD=$(CURDIR)/bin/palyrad PALYRA=$(CURDIR)/bin/palyra; \
	if [ -n "$${DATABASE_URL:-}" ]; then \
		$(MAKE) test-go test-ts; \
	else \
		$(GO) run ./server/cmd/withpg -- $(MAKE) test-go test-ts; \
	fi

.PHONY: test-go
test-go:
	$(GO) test -race $(GOTESTFLAGS) ./...

.PHONY: test-ts
test-ts: $(NODE_MODULES)
	npm run --workspace desktop typecheck
	npm test --workspace desktop

.PHONY: bench
bench: postgres-binaries ## Benchmarks of BENCHMARKS.md, a quick profile (FULL=1: the whole suite); a durable throwaway PostgreSQL unless DATABASE_URL is set
	@if [ -z "$${DATABASE_URL:-}" ]; then \
		PALYRA_BENCH_DURABLE_PG=1 $(GO) run ./server/cmd/withpg -- $(MAKE) bench; \
	elif [ -n "$(FULL)" ]; then \
		cd bench && \
		$(GO) test -run '^$$' -bench 'Baseline|Dispatch|PostgresPair|Pairing|Peers' -benchtime "$${BENCHTIME:-10s}" \
			-count "$${BENCHCOUNT:-3}" -timeout 90m . && \
		$(GO) test -run '^$$' -bench 'Revocation' -benchtime 200x -count "$${BENCHCOUNT:-3}" -timeout 30m . && \
		$(GO) test -run '^$$' -bench '^BenchmarkCompat$$' -benchtime 5000x -count "$${BENCHCOUNT:-3}" -timeout 60m . && \
		$(GO) test -run '^$$' -bench 'CompatNode' -benchtime 2000x -count "$${BENCHCOUNT:-3}" -timeout 60m . && \
		PALYRA_BENCH_NODES="$${BENCH_NODES:-1000,5000,10000,19000}" $(GO) test -run '^$$' -bench 'IdleNodes' \
			-benchtime 1x -count 1 -timeout 60m . && \
		PALYRA_BENCH_STORM_NODES="$${BENCH_STORM_NODES:-10000}" $(GO) test -run '^$$' -bench 'ReconnectStorm' \
			-benchtime 1x -count 1 -timeout 60m .; \
	else \
		cd bench && \
		$(GO) test -run '^$$' -bench 'Baseline/.*/c=(1|16)$$|Dispatch/.*/c=(1|16)|Dispatch/ExecuteCapability/c=64/nodes=1$$|Dispatch/CreateDispatch/c=64$$|Peers/(durable-relay|jetstream)/c=(1|64)$$|Peers/river-insert/c=64$$' \
			-benchtime "$${BENCHTIME:-2s}" -count 1 -timeout 30m . && \
		$(GO) test -run '^$$' -bench 'Pairing/method=qr' -benchtime "$${BENCHTIME:-2s}" -count 1 -timeout 10m . && \
		$(GO) test -run '^$$' -bench 'Revocation' -benchtime 50x -count 1 -timeout 10m . && \
		$(GO) test -run '^$$' -bench '^BenchmarkCompat$$' -benchtime 2000x -count 1 -timeout 20m . && \
		$(GO) test -run '^$$' -bench 'CompatNode' -benchtime 1000x -count 1 -timeout 20m . && \
		PALYRA_BENCH_NODES="$${BENCH_NODES:-500}" PALYRA_BENCH_STORM_NODES="$${BENCH_STORM_NODES:-500}" \
			$(GO) test -run '^$$' -bench 'IdleNodes|ReconnectStorm' -benchtime 1x -count 1 -timeout 10m .; \
	fi

.PHONY: faults
faults: postgres-binaries ## Fault suite of RELIABILITY.md: replicas, nodes and PostgreSQL killed and stalled under load, then checked (FAULTS_SEED=N repeats a run)
	cd bench && PALYRA_FAULTS=1 $(GO) test -run '^TestFaults$$' -count 1 -v -timeout 60m .

.PHONY: check-tools
check-tools: $(BUF) $(NODE_MODULES)

.PHONY: check
check: check-tools ## Check formatting, vet, buf lint/format/breaking and generated-code drift
	@echo '== gofmt'; bad=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^gen/')); \
		if [ -n "$$bad" ]; then echo "gofmt would change:"; echo "$$bad"; exit 1; fi
	@echo '== go vet'; $(GO) vet ./...
	@echo '== buf lint'; $(BUF) lint
	@echo '== buf format'; $(BUF) format --diff --exit-code proto
	@echo '== generated code'; before=$$(mktemp -d); cp -a gen "$$before/"; \
		if [ "$$($(sqlc_sum))" = "$$(cat $(SQLC_SUM) 2>/dev/null)" ]; then \
			echo "sqlc output is current for its inputs ($(SQLC_SUM))"; $(MAKE) generate-buf; \
		else $(MAKE) generate; fi; \
		if ! diff -r -q "$$before/gen" gen; then \
			rm -rf "$$before"; echo "gen/ differs from its sources: run 'make generate' and commit the result"; exit 1; fi; \
		rm -rf "$$before"
	@echo '== buf breaking'; \
		if git cat-file -e '$(BREAKING_AGAINST):proto' 2>/dev/null; then \
			$(BUF) breaking --against '.git#ref=$(BREAKING_AGAINST)'; \
		else echo "no proto/ at $(BREAKING_AGAINST) (first commit or shallow clone): nothing to compare"; fi

.PHONY: generate
generate: generate-buf $(SQLC) ## Regenerate gen/ (Go, TypeScript, sqlc) from proto/ and sqlc/
	$(SQLC) generate -f sqlc/sqlc.yaml
	$(sqlc_sum) > $(SQLC_SUM)

.PHONY: generate-buf
generate-buf: $(BUF) $(NODE_MODULES)
	$(BUF) generate

.PHONY: tools
tools: $(BUF) $(SQLC) $(NODE_MODULES) ## Install the pinned code generators and npm packages

$(BUF):
	GOBIN=$(dir $@) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)

# sqlc needs cgo (its PostgreSQL parser is C).
$(SQLC):
	CGO_ENABLED=1 GOBIN=$(dir $@) $(GO) install github.com/sqlc-dev/sqlc/cmd/sqlc@$(SQLC_VERSION)

$(NODE_MODULES): package.json package-lock.json desktop/package.json
	npm ci --no-audit --no-fund
	@touch $@

# The PostgreSQL server binaries for the embedded database and the test database:
# installed with apt when missing and running as root, else an instruction.
.PHONY: postgres-binaries
postgres-binaries:
	@if command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing PostgreSQL (Debian package postgresql)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	else \
		echo "PostgreSQL server binaries are missing: run 'sudo apt-get install postgresql'" >&2; exit 1; \
	fi
	@if [ "$$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then \
		useradd --system --user-group --home-dir /var/lib/postgresql --shell /usr/sbin/nologin postgres; fi

.PHONY: clean
clean: ## Remove build output and installed tools (not ./var)
	rm -rf bin .tools node_modules
