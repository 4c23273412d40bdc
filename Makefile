# rollout — every task a person runs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO ?= cargo
WASM_TARGET := wasm32-unknown-unknown
CORE_WASM := target/$(WASM_TARGET)/wasm/rollout_policy.wasm
POLICY := target/wasm/rollout_policy.wasm
EXAMPLE := target/wasm/size_aware_policy.wasm
ROLLOUT := target/debug/rollout

.PHONY: help setup wasm-target policy reproducible build test test-rust vectors lint fmt run bench examples js clean fixtures alerts

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: ## install what a fresh machine lacks (wasm target, Python xxhash, npm packages)
	rustup target add $(WASM_TARGET)
	python3 -m pip install --quiet --disable-pip-version-check -r tests/vectors/requirements.txt
	@if [ -f js/package-lock.json ]; then cd js && npm ci --no-audit --no-fund; fi

wasm-target:
	@rustup target list --installed 2>/dev/null | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

policy: wasm-target ## build the reference policy component: target/wasm/rollout_policy.wasm
	$(CARGO) build -q -p rollout-policy --target $(WASM_TARGET) --profile wasm
	$(CARGO) run -q -p xtask -- componentize $(CORE_WASM) $(POLICY)

examples: wasm-target ## build the example policy (examples/size-aware-policy): target/wasm/size_aware_policy.wasm
	$(CARGO) build -q -p size-aware-policy --target $(WASM_TARGET) --profile wasm
	$(CARGO) run -q -p xtask -- componentize target/$(WASM_TARGET)/wasm/size_aware_policy.wasm $(EXAMPLE)

reproducible: policy ## rebuild the component from scratch and check it is byte-identical
	cp $(POLICY) target/wasm/.previous.wasm
	$(CARGO) clean -q -p rollout-policy --target $(WASM_TARGET) --profile wasm
	$(MAKE) --no-print-directory policy
	cmp target/wasm/.previous.wasm $(POLICY) && echo "reproducible: $(POLICY) is byte-identical across two builds ($$(sha256sum < $(POLICY) | cut -c1-16))"

HOSTILE_CORE := target/$(WASM_TARGET)/wasm/rollout_hostile.wasm
HOSTILE := triggers nonmonotonic ignores-stop routes-ineligible loop-info stop-at-37 unicode-zero \
	partial-categorize panicky-health moody shadow-diff trap-1pct

fixtures: wasm-target ## build the hostile test policies (tests/hostile) into target/wasm/hostile-*.wasm
	@set -e; for f in $(HOSTILE); do \
		if [ $$f = triggers ]; then features=; else features="--features $$f"; fi; \
		$(CARGO) build -q -p rollout-hostile --target $(WASM_TARGET) --profile wasm $$features; \
		$(CARGO) run -q -p xtask -- componentize $(HOSTILE_CORE) target/wasm/hostile-$$f.wasm; \
	done

build: policy ## build the policy and the rollout binary
	$(CARGO) build -p rollout

vectors: ## check tests/vectors against the independent Python generator; fail if they drift
	@python3 -c 'import xxhash' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check -r tests/vectors/requirements.txt
	python3 tests/vectors/generate.py --check

ALERT_RULES := docs/alerts/rollout.rules.yml
ALERT_TESTS := docs/alerts/rollout.rules.test.yml

alerts: ## check the Prometheus alert rules (docs/alerts) with promtool and run their unit tests
	@if command -v promtool >/dev/null 2>&1; then \
		promtool check rules $(ALERT_RULES) && promtool test rules $(ALERT_TESTS); \
	elif [ -n "$${CI:-}" ] && [ "$${CI}" != false ]; then \
		echo "alerts: promtool is missing (CI=$${CI}); install it with: apt-get install -y prometheus" >&2; exit 1; \
	else \
		echo "######## SKIPPED make alerts: promtool is missing; install it with: sudo apt-get install -y prometheus (Debian/Ubuntu) ########" >&2; \
	fi

test: policy fixtures reproducible examples vectors alerts ## everything CI runs: Rust tests (native and wasm), vectors drift, example cases, JS suite
	@# Every target is built (benches too, so they keep compiling) but benches are not run:
	@# `make bench` runs them in the release profile. Doc examples run separately
	@# (`--all-targets` leaves them out).
	@# xtask (a bin, no tests) is left out of all three: `--doc` builds no bin, and with
	@# xtask in the other two its dependencies unify features (semver `std`) that `--doc`
	@# then lacks, so wasmtime and ~80 crates were compiled a second time for the doc tests.
	$(CARGO) test --workspace --exclude xtask --all-targets --no-run
	$(CARGO) test --workspace --exclude xtask --lib --bins --tests --examples
	$(CARGO) test --workspace --exclude xtask --doc
	@# the binary `cargo test` just built (a `cargo run -p` would resolve features anew and rebuild)
	$(ROLLOUT) policy test --policy $(POLICY) tests/vectors
	$(ROLLOUT) policy test --policy $(EXAMPLE) tests/vectors examples/size-aware-policy/cases
	@if [ -f js/package.json ]; then $(MAKE) --no-print-directory js; fi

js: policy ## build and test the JavaScript package (jco)
	@[ -d js/node_modules ] || (cd js && npm ci --no-audit --no-fund)
	cd js && npm run build && npm test

lint: ## rustfmt and clippy
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p rollout-policy --target $(WASM_TARGET) -- -D warnings
	$(CARGO) clippy -p rollout-hostile --target $(WASM_TARGET) -- -D warnings

fmt: ## format the code
	$(CARGO) fmt --all

# `make run`: the demo on this machine (see docs/operations.md). Override with
# `make run RUN_DATABASE=… RUN_LISTEN=…`; set ROLLOUT_SERVICE_TOKEN to choose the token.
RUN_DATABASE ?= sqlite://rollout.db
RUN_LISTEN ?= 127.0.0.1:8080
RUN_FEATURE := hybrid_progressive_capture

run: build ## build, migrate ./rollout.db, seed a demo, print the URL, a token and curl examples, serve on 127.0.0.1:8080
	@set -euo pipefail; \
	db='$(RUN_DATABASE)'; url='http://$(RUN_LISTEN)'; api="$$url/v1/features/$(RUN_FEATURE)"; \
	$(ROLLOUT) --database-url "$$db" migrate; \
	seed=$$($(ROLLOUT) --database-url "$$db" demo seed); echo "$$seed"; \
	repo=$$(echo "$$seed" | grep -o '[0-9a-f]\{8\}-[0-9a-f]\{4\}-[0-9a-f]\{4\}-[0-9a-f]\{4\}-[0-9a-f]\{12\}' | tail -n 1 || true); \
	token="$${ROLLOUT_SERVICE_TOKEN:-}"; \
	if [ -z "$$token" ]; then token=$$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'); fi; \
	echo; \
	echo "rollout: $$url/  (status page; JSON API under /v1, Prometheus at /metrics)"; \
	echo "token:   $$token"; \
	echo; \
	echo "# where does a scheduled job of a demo repository run? (reads need no token)"; \
	echo "curl -s -X POST $$api/route -H 'content-type: application/json' -d '{\"repository_id\":\"$$repo\",\"job\":{\"trigger_source\":\"scheduled\"}}'"; \
	echo "# ramp to 50 % (writes need the token)"; \
	echo "curl -s -X PUT $$api/percentage -H 'authorization: Bearer $$token' -H 'content-type: application/json' -d '{\"percentage\":50,\"reason\":\"next step\"}'"; \
	echo "# the statistics"; \
	echo "curl -s $$api/stats"; \
	echo; \
	exec env ROLLOUT_SERVICE_TOKEN="$$token" $(ROLLOUT) --database-url "$$db" serve --listen '$(RUN_LISTEN)'

bench: policy ## every benchmark (host/benches/*) in one run, logged to target/bench.log; ends with the summary
	@mkdir -p target
	@set -o pipefail; $(CARGO) bench -p rollout -p rollout-openfeature --bench '*' 2>&1 | tee target/bench.log
	@echo "== summary =="
	@sed -n 's/^SUMMARY //p' target/bench.log

clean: ## remove build output
	$(CARGO) clean
