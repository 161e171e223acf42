# MAOS — the two commands a newcomer needs are `make demo` and `make test`.
# Everything else here is a step of those, or a tool for developers.

CARGO ?= cargo
# cargo-nextest runs the test binaries in parallel processes; plain `cargo test` works too.
TEST_RUNNER := $(shell $(CARGO) nextest --version >/dev/null 2>&1 && echo "nextest run" || echo test)
# How each runner runs only the #[ignore]d tests.
IGNORED_ONLY := $(if $(filter test,$(TEST_RUNNER)),-- --ignored,--run-ignored only)

.PHONY: test deps fmt-check lint unit chart images crds manifests bench demo help

# Where `make deps` puts tools and the suite records the operator's API usage.
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s "$$(printf '\t')"

test: deps fmt-check lint unit chart images ## Everything CI runs: system packages, fmt, clippy, all tests.

deps: ## Install the system packages the tests need, if missing.
	@scripts/install-deps.sh

fmt-check:
	$(CARGO) fmt --all --check

lint: ## clippy on every crate and target, warnings are errors.
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

unit:
	@# The end-to-end tests run maos-operator, maos-agent and maos-testbed as processes, as a
	@# cluster would; `cargo test` builds only the binaries of a package with its own tests.
	$(CARGO) build --locked --bins --workspace
	@# Every stack runs the operator under the chart's RBAC and records what it used there;
	@# after the suite, chart_rbac fails on a refusal or on a granted right nobody used.
	rm -rf $(TARGET_DIR)/rbac-usage
	$(CARGO) $(TEST_RUNNER) --workspace --locked
	$(CARGO) $(TEST_RUNNER) --locked -p maos-e2e --test chart_rbac $(IGNORED_ONLY)

chart: ## The chart, manifests and Argo CD checks: lint, render, validate, promtool, Lua.
	scripts/check-chart.sh
	scripts/check-prometheus.sh
	scripts/check-argocd.sh

images: ## Build the operator and agent images (OCI archives in target/images/) and check them.
	scripts/build-images.sh
	scripts/check-images.sh

crds: ## Regenerate crds/ (and the chart's copy) from the Rust types.
	$(CARGO) run --quiet --locked -p maos-operator -- crds --dir crds
	cp crds/*.yaml charts/maos/crds/
	scripts/gen-manifests.sh

manifests: ## Regenerate manifests/base from the chart.
	scripts/gen-manifests.sh

bench: ## Run the benchmarks (release builds) and record them in BENCHMARKS.md.
	scripts/bench.sh

# Debug builds: much quicker to build than release, and fast enough for the demo.
DEMO_BINS := -p maos-operator --bin maos-operator -p maos-agent-runner --bin maos-agent -p maos-e2e --bin maos-testbed

demo: deps ## Testbed + operator + agents + an example Task, with live progress (DEMO_ARGS=--keep-running).
	$(CARGO) build --locked $(DEMO_BINS)
	$(or $(CARGO_TARGET_DIR),target)/debug/maos-testbed demo $(DEMO_ARGS)
