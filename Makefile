# One command to install and evaluate, one to install and test. Everything lives in .venv.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: install evaluate test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

evaluate: install
	$(BIN)/ecseq evaluate --scenario refresh --out runs/evaluate

test: install
	$(BIN)/pytest -q -p no:cacheprovider

bench: install
	$(BIN)/python -m bench.bench_scoring
	$(BIN)/python -m bench.bench_build
	$(BIN)/python -m bench.bench_rebuild
	$(BIN)/python -m bench.bench_rebuild --source kafka
	$(BIN)/python -m bench.bench_artifacts
	$(BIN)/python -m bench.bench_worker

clean:
	rm -rf $(VENV) runs bench/results
