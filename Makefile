VENV ?= .venv
PYTHON := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)

.PHONY: install run test bench lint clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[test,bench,dev]'
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/quiver demo

test: install
	$(PYTHON) -m pytest -q

bench: install
	$(PYTHON) -m bench.superfile_bench
	$(PYTHON) -m bench.table_bench

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) data .pytest_cache .hypothesis
