# Two entry points for a fresh machine with Python 3.11 and pip: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= runs/vae_digits

.PHONY: demo test lint install clean-demo

$(BIN)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/.installed

# Trains the VAE on scikit-learn's bundled digits (offline, under a minute on 2 quiet CPU cores),
# then evaluates (ELBO and the k=5000 importance-sampled NLL) and samples from the prior.
demo: $(BIN)/.installed
	$(BIN)/python -m aigc_jax.main --config=configs/vae.py:digits --workdir=$(DEMO_DIR)
	$(BIN)/python -m aigc_jax.main --config=configs/vae.py:digits --workdir=$(DEMO_DIR) --mode=eval
	$(BIN)/python -m aigc_jax.main --config=configs/vae.py:digits --workdir=$(DEMO_DIR) --mode=sample
	@echo "demo done: see $(DEMO_DIR)/samples/, $(DEMO_DIR)/samples.png, $(DEMO_DIR)/metrics.jsonl and $(DEMO_DIR)/eval/"

# pytest exits 5 when it collects no tests: that is a broken suite, not a pass.
# One pytest worker per core (at most 4), whole files per worker so module fixtures run once.
TEST_WORKERS ?= $(shell $(PYTHON) -c "import os; print(min(4, max(1, os.cpu_count() or 1)))")
test: $(BIN)/.installed
	$(BIN)/ruff check aigc_jax configs tests benchmarks experiments
	$(BIN)/python -m pytest tests -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile; \
	status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$status

lint: $(BIN)/.installed
	$(BIN)/ruff check aigc_jax configs tests benchmarks experiments

clean-demo:
	rm -rf $(DEMO_DIR)
