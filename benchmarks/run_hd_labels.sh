#!/usr/bin/env bash
# CHGNet single-point labels of the high-density reference set (resumable: rerun to continue).
#   python benchmarks/hd_reference.py generate --work /tmp/hd_work
#   WORK=/tmp/hd_work bash benchmarks/run_hd_labels.sh
# The raw CHGNet energies are stored; `hd_reference.py table` applies the packaged correction
# (chgnet+delta = these energies + invdesign/resources/chgnet_delta.json), so a refit of the
# correction does not need new CHGNet calls.
# The train-only extension (hdx12_*) goes to its own file:
#   python benchmarks/hd_reference.py extend --work /tmp/hdx_work --n 600 --seed 12
#   WORK=/tmp/hdx_work OUT=benchmarks/results/chgnet/hd_ext_labels.csv bash benchmarks/run_hd_labels.sh
set -euo pipefail
WORK=${WORK:?set WORK to the folder written by hd_reference.py generate}
OUT=${OUT:-benchmarks/results/chgnet/hd_labels.csv}
export OMP_NUM_THREADS=1
python -c "import sys; from invdesign.cli import main; sys.exit(main())" label "$WORK/structures" \
    --oracle chgnet --steps 0 --out "$OUT" --executor process:1
