#!/usr/bin/env bash
# Low-density CHGNet labels for the CHGNet-vs-DFT study (resumable: rerun to continue).
#   WORK=/tmp/chgnet_work bash benchmarks/run_chgnet_labels.sh
# Needs the CIF folders from benchmarks/chgnet_subsets.py. One worker, one thread.
set -euo pipefail
WORK=${WORK:?set WORK to the folder written by benchmarks/chgnet_subsets.py}
OUT=benchmarks/results/chgnet
export OMP_NUM_THREADS=1
inv() { python -c "import sys; from invdesign.cli import main; sys.exit(main())" "$@"; }
inv label "$WORK/test" --oracle chgnet --steps 0 --out $OUT/sp_test.csv --executor process:1
inv label "$WORK/train" --oracle chgnet --steps 0 --out $OUT/sp_train.csv --executor process:1
bash benchmarks/run_r20_labels.sh
# the 400 high-density structures of the 2DMD release as released (4-24 defects; ~2 min on 2 processes)
inv label "${SHARED:-../shared}/data/2dmd-mos2-high/initial.tar.gz" --oracle chgnet --steps 0 --out $OUT/sp_high.csv --executor process:2
