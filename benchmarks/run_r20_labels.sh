#!/usr/bin/env bash
# Relaxation-protocol comparison (FIRE fmax 0.2 eV/A, <= 20 steps) on small subsets (resumable).
#   WORK=/tmp/chgnet_work bash benchmarks/run_r20_labels.sh
set -euo pipefail
WORK=${WORK:?set WORK}
OUT=benchmarks/results/chgnet
export OMP_NUM_THREADS=1
inv() { python -c "import sys; from invdesign.cli import main; sys.exit(main())" "$@"; }
inv label "$WORK/train_p" --oracle chgnet --steps 20 --fmax 0.2 --out $OUT/r20_train.csv --executor process:1
inv label "$WORK/test_p" --oracle chgnet --steps 20 --fmax 0.2 --out $OUT/r20_test.csv --executor process:1
