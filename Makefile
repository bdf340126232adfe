# Two commands do everything on a fresh machine (Python 3.11, Debian):
#   make run   - install, then start the app on http://localhost:8501
#   make test  - install what the tests need (incl. Chromium for the browser tests), then run the whole suite
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test test-fast lint bench test-deps screenshots precompute

$(STAMP): requirements.txt requirements-dev.txt requirements-nodeps.txt pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade pip
	$(VENV)/bin/pip install -r requirements-dev.txt
	$(VENV)/bin/pip install --no-deps -r requirements-nodeps.txt
	$(VENV)/bin/pip install --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Local use sees tracebacks and the developer menu; with FER_PUBLIC=1 the safe defaults of
# .streamlit/config.toml stay in force.
LOCAL_CLIENT := $(if $(filter 1 true yes on,$(FER_PUBLIC)),,--client.showErrorDetails=full --client.toolbarMode=auto --server.fileWatcherType=auto)

run: $(STAMP)
	$(VENV)/bin/streamlit run streamlit_app.py $(LOCAL_CLIENT)

# fill the evaluation cache for the shipped models (what a public deployment's Metrics page shows)
precompute: $(STAMP)
	$(VENV)/bin/fer-precompute

# what the tests drive besides Python, from Debian when missing: Chromium for the browser tests, and
# PostgreSQL for the study shared by two workers through a real database (SQLite is tested regardless)
test-deps:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$SUDO apt-get update && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y chromium chromium-driver; }
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$SUDO apt-get update && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y --no-install-recommends postgresql || \
	    echo "PostgreSQL could not be installed: the study's PostgreSQL test will be skipped"; }

test: $(STAMP) test-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -m "" -ra

test-fast: $(STAMP)
	$(PY) -m pytest -ra

bench: $(STAMP)
	$(VENV)/bin/fer-bench

# the README's pictures (docs/screenshots/), taken by the browser tests
screenshots: $(STAMP) test-deps
	@fc-list | grep -qi "color emoji" || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y fonts-noto-color-emoji; }  # the pages' icons
	FER_DOC_SCREENSHOTS=1 $(PY) -m pytest -m "" tests/test_browser_recognition.py tests/test_browser_tour.py tests/test_browser_training.py
