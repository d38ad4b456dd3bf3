# The two quick-start commands: `make up` (install and start the gateway), `make test`.
.PHONY: install up test bench lock

install:
	@./scripts/install

up: install
	.venv/bin/mesh up

# The suite includes the benchmark's smoke test, so it needs what `make bench` needs.
test: install
	@./scripts/install-test-upstreams
	@./bench/install
	.venv/bin/python -m pytest $(PYTEST_ARGS)

# The benchmark harness (README, "Performance"): installs the `bench` extra and wrk, then runs it
# (under 3 minutes on 2 cores). BENCH_ARGS passes options, e.g. BENCH_ARGS=--no-pin.
bench: install
	@./bench/install
	.venv/bin/python -m bench $(BENCH_ARGS)

# Regenerate the pinned versions after changing dependencies in pyproject.toml.
lock: install
	.venv/bin/python -m pip freeze --exclude-editable | grep -v '^-e ' > requirements.lock
