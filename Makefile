# Two commands for a newcomer: `make demo` and `make test`. Both create .venv and install first.
#
# The environment is installed from requirements.lock, which pins every package (and its hashes) at the version the
# project was tested with, so a fresh install never picks up a release nobody tested. uv, itself pinned, installs it;
# `make lock` refreshes the lock deliberately (then test, and note the upgrade). Set UV_NO_CACHE=1 to install as on a
# machine with an empty cache (CI does). Packages are byte-compiled at install (about 40 s on 2 cores): uv does not by
# default, and where PYTHONDONTWRITEBYTECODE is set (containers often set it) every `tse` command would otherwise
# compile torch's sources again, 15 s instead of 3 before it starts.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
UV_VERSION := 0.13.9
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TOOLS := $(VENV)/.tools
UV := $(TOOLS)/bin/uv
LOCK := requirements.lock
EXTRAS := --extra test --extra onnx

.PHONY: demo test lint format man bench lock clean

$(STAMP): $(LOCK) pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(UV) pip install --quiet --python $(BIN)/python --require-hashes --compile-bytecode -r $(LOCK)
	$(UV) pip install --quiet --python $(BIN)/python --no-deps --no-build-isolation --compile-bytecode -e .
	$(BIN)/tse --version
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tse demo -o demo_out

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The tests run on every core (pytest-xdist): 9 minutes on 2 cores against 17 in one process. TEST_ARGS=-n0 runs
# them in one process; TEST_ARGS='-n0 tests/test_onnx.py' one file.
TEST_ARGS ?= -n auto

test: lint
	$(BIN)/python -m pytest -q $(TEST_ARGS)

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

man: $(STAMP)
	$(BIN)/python -m tse_cli.manpages man

# Re-resolve every pin from the registry (deliberately: run `make test` after it and note what changed).
lock:
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(UV) pip compile pyproject.toml $(EXTRAS) --universal --python-version 3.11 --generate-hashes \
		--upgrade --quiet -o $(LOCK)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
