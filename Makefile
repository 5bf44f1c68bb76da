# LeadOps — one-command set-up. See README.md.
SHELL := /bin/bash
export DEBUG ?= 1
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000

.PHONY: install run test test-fast bench lint vendor browser demo migrate clean

install: $(VENV)/.installed static/vendor/.installed browser
	@echo "LeadOps installed: $(VENV) ready, front-end files in static/vendor/."

$(VENV)/.installed: requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	touch $@

# Third-party front-end files come from npm (pinned in package.json/package-lock.json), never committed.
static/vendor/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	rm -rf static/vendor && mkdir -p static/vendor/htmx static/vendor/chartjs static/vendor/pico static/vendor/sortable
	cp node_modules/htmx.org/dist/htmx.min.js static/vendor/htmx/
	cp node_modules/chart.js/dist/chart.umd.min.js static/vendor/chartjs/
	cp node_modules/@picocss/pico/css/pico.min.css static/vendor/pico/
	cp node_modules/sortablejs/Sortable.min.js static/vendor/sortable/
	touch $@

vendor: static/vendor/.installed

# Debian's Chromium drives the browser tests (a test tool's own browser download fails offline).
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing Debian's chromium for the browser tests…"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "note: /usr/bin/chromium missing and not root: browser tests will be skipped (sudo apt-get install chromium)"; fi

migrate: install
	$(PY) manage.py migrate --noinput -v0

demo: migrate
	$(PY) manage.py seed_demo

# Web server + django-q2 worker; Ctrl-C (or a SIGTERM to make) stops both, and so does either one
# exiting. scripts/run.sh prints the logins once both are up, so they are not lost above the start-up output.
run: demo
	$(PY) manage.py setup_schedules
	@PY=$(PY) PORT=$(PORT) exec bash scripts/run.sh

test: install
	$(PY) -m pytest

bench: install
	$(PY) -m pytest tests/benchmarks -m bench -p no:randomly -s -q

lint: install
	$(VENV)/bin/ruff check .
	$(PY) manage.py makemigrations --check --dry-run

clean:
	rm -rf $(VENV) node_modules static/vendor staticfiles
