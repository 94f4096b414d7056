# Set-up is part of every target: a fresh machine needs only python3, npm and (for tests) apt.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_LOG := $(VENV)/pip.log
PORT ?= 8080
APT_GET := $(shell [ "$$(id -u)" = 0 ] && echo apt-get || echo sudo apt-get)

.PHONY: run test setup test-setup web chromium prometheus alertmanager bench clean

run: setup web
	$(VENV)/bin/nerve up --port $(PORT)

test: test-setup web chromium prometheus alertmanager
	$(PY) -m pytest -q

setup: $(VENV)/.installed
test-setup: $(VENV)/.test-installed

$(PY):
	python3 -m venv $(VENV)

# pip's output goes to a log and is shown only when the install fails.
$(VENV)/.installed: pyproject.toml | $(PY)
	@echo "installing nerve into $(VENV) (log: $(PIP_LOG))"
	@$(PY) -m pip install -q --upgrade pip > $(PIP_LOG) 2>&1 || (cat $(PIP_LOG); exit 1)
	@$(PY) -m pip install -q -e . >> $(PIP_LOG) 2>&1 || (cat $(PIP_LOG); exit 1)
	@touch $@

$(VENV)/.test-installed: $(VENV)/.installed
	@echo "installing test dependencies (log: $(PIP_LOG))"
	@$(PY) -m pip install -q -e '.[test]' >> $(PIP_LOG) 2>&1 || (cat $(PIP_LOG); exit 1)
	@touch $@

web: web/node_modules/.installed

web/node_modules/.installed: web/package.json web/package-lock.json
	@echo "installing dashboard modules from npm"
	@cd web && npm ci --no-fund --no-audit --loglevel=error > /dev/null
	@touch $@

chromium:
	@command -v chromium > /dev/null || { echo "installing Debian chromium"; \
		$(APT_GET) update -qq && DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y -qq chromium > /dev/null; }

# The exporter's tests scrape it with a real Prometheus server.
prometheus:
	@command -v prometheus > /dev/null || { echo "installing Debian prometheus"; \
		$(APT_GET) update -qq && DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y -qq prometheus > /dev/null; }

# The notifier's tests push alerts to a real Alertmanager.
alertmanager:
	@command -v prometheus-alertmanager > /dev/null || { echo "installing Debian prometheus-alertmanager"; \
		$(APT_GET) update -qq && DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y -qq prometheus-alertmanager > /dev/null; }

# Each bench prints a table and a summary line; see docs/benchmarks.md for recorded figures.
bench: setup web
	$(PY) bench/mesh_bench.py
	$(PY) bench/transport_bench.py
	$(PY) bench/load_bench.py
	$(PY) bench/dashboard_bench.py
	$(PY) bench/pipeline_bench.py
	$(PY) bench/fanout_bench.py
	$(PY) bench/analyzer_bench.py
	$(PY) bench/tracker_bench.py
	$(PY) bench/tsp_bench.py
	$(PY) bench/tuning_bench.py --setting lazy_debug_format
	$(PY) bench/tuning_bench.py --setting tcp_nodelay --hosts 1000
	$(PY) bench/orchestrator_bench.py
	$(PY) bench/simulator_bench.py
	$(PY) bench/proxy_bench.py
	$(PY) bench/exporter_bench.py
	$(PY) bench/notifier_bench.py
	$(PY) bench/alerts_bench.py
	$(PY) bench/history_bench.py
	$(PY) bench/chaos_bench.py

clean:
	rm -rf $(VENV) web/node_modules .crossbar/runtime
