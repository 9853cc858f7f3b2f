# The two commands the README opens with: `make serve` and `make test`. Each does its own set-up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PERF_VENV := .tools/perf_analyzer
PERF := $(PERF_VENV)/bin/perf_analyzer
PORT ?= 8000

.PHONY: serve test lint install models bench clean browser

$(STAMP): pyproject.toml
	@echo "==> creating $(VENV) and installing repoman with its test tools (first run takes a few minutes)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --progress-bar off -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

## serve the bundled model_repository/ on 127.0.0.1:$(PORT)
serve: $(STAMP)
	$(BIN)/repoman serve --model-repository model_repository --http-port $(PORT)

## Triton's perf_analyzer, for its tests and `make bench` (tools/install-perf-analyzer says how)
$(PERF): tools/install-perf-analyzer
	@echo "==> installing Triton's perf_analyzer into $(PERF_VENV)"
	@$(PYTHON) tools/install-perf-analyzer "$(PERF_VENV)" || \
	  echo "==> perf_analyzer could not be installed (see above): its tests will skip"

## headless Chromium for the status page's browser tests: Debian's package, installed when we
## may (root or password-less sudo); otherwise those tests skip and say why
APT_CHROMIUM := apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "==> installing Debian's chromium for the status page's browser tests"; \
	  if [ "$$(id -u)" = 0 ]; then sh -c '$(APT_CHROMIUM)'; \
	  elif command -v sudo >/dev/null 2>&1; then sudo -n sh -c '$(APT_CHROMIUM)'; \
	  else false; fi || echo "==> chromium could not be installed: the browser tests will skip"; }

## lint, layering check, the whole test suite, then the end-to-end tests again with every
## server running two front-end processes (--http-workers 2): a client must see no difference
test: $(STAMP) $(PERF) browser lint
	$(BIN)/pytest
	REPOMAN_TEST_HTTP_WORKERS=2 $(BIN)/pytest tests/e2e -q

lint: $(STAMP)
	$(BIN)/ruff check repoman plugins tests bench tools
	$(BIN)/lint-imports
	$(BIN)/mypy repoman

## regenerate the bundled models (needs the [models] extra)
models: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[models]"
	$(BIN)/python tools/make_bundled_models.py

## the dynamic-batching benchmark (needs perf_analyzer: run `make test` once first); prints a table
bench: $(STAMP) $(PERF)
	$(BIN)/python bench/batching.py

clean:
	rm -rf $(VENV) .tools .pytest_cache .ruff_cache .mypy_cache
