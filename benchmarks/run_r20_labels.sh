#!/usr/bin/env bash
# Relaxation-protocol comparison (resumable: rerun to continue):
#   r20: FIRE fmax 0.2 eV/A, <= 20 steps on WORK/train_p, WORK/test_p
#   r50: FIRE fmax 0.1 eV/A, <= 50 steps on WORK/train_l, WORK/test_l
#   WORK=/tmp/chgnet_work bash benchmarks/run_r20_labels.sh
set -euo pipefail
WORK=${WORK:?set WORK}
OUT=benchmarks/results/chgnet
export OMP_NUM_THREADS=1
inv() { python -c "import sys; from invdesign.cli import main; sys.exit(main())" "$@"; }
inv label "$WORK/train_p" --oracle chgnet --steps 20 --fmax 0.2 --out $OUT/r20_train.csv --executor process:1
inv label "$WORK/test_p" --oracle chgnet --steps 20 --fmax 0.2 --out $OUT/r20_test.csv --executor process:1
inv label "$WORK/train_l" --oracle chgnet --steps 50 --fmax 0.1 --out $OUT/r50_train.csv --executor process:1
inv label "$WORK/test_l" --oracle chgnet --steps 50 --fmax 0.1 --out $OUT/r50_test.csv --executor process:1
