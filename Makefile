# invdesign: the two commands of the README (make demo, make test), plus the lock and its checks.
PY ?= python3
PIP = $(PY) -m pip install --quiet --disable-pip-version-check
LOCK = requirements.lock

.PHONY: install demo test lint bench lock check-latest

# torch first, pinned to the CPU build (never the multi-GB CUDA build), then the package with every
# transitive dependency at the exact version of the lock.
install:
	$(PIP) -c constraints.txt torch
	$(PIP) -c $(LOCK) -e ".[peers,dev]"

demo: install
	invdesign design --target formation_energy_per_site=1.0:1.2 --target homo_lumo_gap=0.9:1.3 -n 10 --out demo_out --overwrite
	head -n 6 demo_out/candidates.csv

test: install
	$(PY) -m pytest -x --durations=15

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
	bash scripts/check_latest.sh
