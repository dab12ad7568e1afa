# invdesign: the two commands of the README (make demo, make test), plus the lock and its checks.
PY ?= python3
PIP = $(PY) -m pip install --quiet --disable-pip-version-check
LOCK = requirements.lock
# Optional extra index for the torch step only, e.g. the PyTorch CPU wheel index:
#   make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=

.PHONY: install demo test lint bench lock check-latest check-public docs

# torch first, pinned by version (constraints.txt: torch==2.13.0, any build; on these machines the local
# 2.13.0+cpu wheel, never the multi-GB CUDA build; elsewhere TORCH_INDEX picks where it comes from), then
# the package with every transitive dependency at the exact version of the lock.
install:
	$(PIP) -c constraints.txt $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) torch
	$(PIP) -c $(LOCK) -e ".[peers,dev]"

demo: install
	invdesign design --target formation_energy_per_site=1.0:1.2 --target homo_lumo_gap=0.9:1.3 -n 10 --out demo_out --overwrite
	head -n 6 demo_out/candidates.csv

test: install
	$(PY) -m pytest -x --durations=15

# The documentation site (mkdocs.yml, docs/) into site/, warnings as errors (also built by tests/test_docs.py).
docs:
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

lint:
	ruff check invdesign tests benchmarks

bench:
	$(PY) benchmarks/run_all.py

# Regenerate the lock from pyproject.toml (all extras) and constraints.txt: newest versions that resolve today.
lock:
	$(PY) -m uv pip compile pyproject.toml --extra peers --extra dev -c constraints.txt \
	    --python-version 3.11 --python-platform x86_64-manylinux_2_28 --find-links /opt/wheels -o $(LOCK)

# The unlocked path: `pip install .` (no lock, no extras: newest of everything) in a fresh virtual
# environment, then --help, a tiny design and a predict on its output.
check-latest:
	TORCH_INDEX="$(TORCH_INDEX)" bash scripts/check_latest.sh

# `make install` resolved (dry run) as a machine without this one's pip set-up sees it: local pip configuration
# ignored, only PyPI plus TORCH_INDEX (e.g. make check-public TORCH_INDEX=https://download.pytorch.org/whl/cpu).
check-public:
	TORCH_INDEX="$(TORCH_INDEX)" bash scripts/check_public_index.sh
