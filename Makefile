# invdesign: the two commands of the README.
PY ?= python3
PIP = $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: install demo test lint bench

install:
	$(PIP) torch==2.13.0
	$(PIP) -c constraints.txt -e ".[peers,dev]"

demo: install
	invdesign design --target formation_energy_per_site=1.0:1.2 --target homo_lumo_gap=0.9:1.3 -n 10 --out demo_out --overwrite
	head -n 6 demo_out/candidates.csv

test: install
	$(PY) -m pytest -x --durations=15

lint:
	ruff check invdesign tests benchmarks

bench:
	$(PY) benchmarks/run_all.py
