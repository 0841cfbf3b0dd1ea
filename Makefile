# Two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test system-deps clean

demo: $(VENV)/.demo-installed
	$(BIN)/irbot demo

test: $(VENV)/.test-installed system-deps
	$(BIN)/python -m pytest

system-deps:
	@sh deploy/system-deps.sh redis-server sshd kubectl mkfs.ext4

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "irbot needs Python 3.11 or newer as $(PYTHON) (make PYTHON=python3.11 ...)"; exit 1; }
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { sh deploy/system-deps.sh venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.demo-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[demo]'
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.demo-installed

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
