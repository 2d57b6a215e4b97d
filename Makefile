# The two commands of the README: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?= --duration 20

.PHONY: demo test lint servers bench standard-set eval clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/jointmon demo $(ARGS)

servers:
	@bash scripts/install-servers.sh

lint: $(BIN)/.installed
	$(BIN)/ruff check .

test: $(BIN)/.installed servers lint
	$(BIN)/pytest

standard-set: $(BIN)/.installed
	$(BIN)/python bench/standard_set.py --out bench/data/standard

eval: $(BIN)/.installed
	@test -d bench/data/standard || $(MAKE) standard-set
	$(BIN)/jointmon eval bench/data/standard

# Peer comparisons and speed figures, printed as tables (bench/README.md); a few minutes on 2 cores.
bench: $(BIN)/.installed
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[bench]'
	$(BIN)/python bench/orientation_peers.py
	$(BIN)/python bench/sound_peers.py
	$(BIN)/python bench/gateway_throughput.py
	$(BIN)/python bench/ble_throughput.py --seconds 20

clean:
	rm -rf $(VENV) results test-artifacts .pytest_cache
