# One command to install and evaluate, one to install and test. Everything lives in .venv.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: install system-tools apt-tools evaluate test fuzz bench demo clean

# install: the venv, then Java 17+ and Maven where missing (Debian packages), then Apache Kafka's
# jars through Maven (kafka_io/kafka/pom.xml) into ~/.cache/ecseq/kafka (ECSEQ_KAFKA_CACHE).
install: $(VENV)/.installed
	@$(MAKE) --no-print-directory apt-tools TOOLS="java:openjdk-17-jre-headless mvn:maven"
	$(BIN)/python -m kafka_io

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Debian tools the deploy tests use: docker-compose (validates docker-compose.yml, no engine
# needed) and prometheus (promtool + a real server).
system-tools:
	@$(MAKE) --no-print-directory apt-tools TOOLS="docker-compose:docker-compose promtool:prometheus"

# TOOLS="command:package ...": apt-get installs the package of each missing command. The
# prometheus package's service is kept from starting (policy-rc.d), so nothing holds :9090.
apt-tools:
	@missing=""; \
	for pair in $(TOOLS); do \
		command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
		echo "missing; install as root: apt-get install --no-install-recommends$$missing" >&2; exit 1; \
	fi; \
	policy=/usr/sbin/policy-rc.d; made_policy=""; \
	if [ ! -e $$policy ]; then printf '#!/bin/sh\nexit 101\n' > $$policy; chmod 755 $$policy; made_policy=1; fi; \
	echo "apt-get install$$missing"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends$$missing >/dev/null; \
	status=$$?; \
	if [ -n "$$made_policy" ]; then rm -f $$policy; fi; \
	if [ -d /run/systemd/system ]; then systemctl disable --now prometheus >/dev/null 2>&1 || true; fi; \
	exit $$status

evaluate: install
	$(BIN)/ecseq evaluate --scenario refresh --out runs/evaluate

test: install system-tools
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -q -p no:cacheprovider

# the property-based tests with 100x the inputs, drawn at random (CI runs a fixed, bounded set)
fuzz: install
	ECSEQ_FUZZ=long $(BIN)/pytest -q -p no:cacheprovider -m fuzz --hypothesis-show-statistics

demo: install
	$(BIN)/ecseq demo

bench: install
	$(BIN)/python -m bench.bench_scoring
	$(BIN)/python -m bench.bench_build
	$(BIN)/python -m bench.bench_rebuild
	$(BIN)/python -m bench.bench_rebuild --source kafka
	$(BIN)/python -m bench.bench_artifacts
	$(BIN)/python -m bench.bench_worker

clean:
	rm -rf $(VENV) runs bench/results
