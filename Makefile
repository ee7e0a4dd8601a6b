# Every target creates the virtual environment and installs the project when needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test demo bench lint

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,demo]'
	touch $(STAMP)

install: $(STAMP)

# The first run writes a random admin key to .admin-key; PREFBUDGET_ADMIN_KEY overrides it.
run: $(STAMP)
	@test -s .admin-key || $(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(32))' > .admin-key
	@echo "Admin API key: see .admin-key (send it as 'Authorization: Bearer <key>')"
	PREFBUDGET_ADMIN_KEY="$${PREFBUDGET_ADMIN_KEY:-$$(cat .admin-key)}" $(BIN)/prefbudget serve

test: $(STAMP)
	$(BIN)/python -m pytest

demo: $(STAMP)
	$(BIN)/prefbudget demo --output demo-output

bench: $(STAMP)
	$(BIN)/python -m benchmarks

lint: $(STAMP)
	$(BIN)/ruff check app solvers tests benchmarks
