#!/usr/bin/env bash
# design --check at 8-12 defects (flow mode, packaged model) with the corrected CHGNet check.
#   OUT=/tmp/check_run bash benchmarks/run_design_check.sh
# The share of checked candidates in the window is compared (benchmarks/design_check_summary.py)
# with random configurations of the same counts from the high-density reference set.
set -euo pipefail
OUT=${OUT:?set OUT}
export OMP_NUM_THREADS=1
python -c "import sys; from invdesign.cli import main; sys.exit(main())" design \
    --target formation_energy_per_site=1.8:2.2 --min-defects 8 --max-defects 12 --mode flow -n 10 --seed 0 \
    --out "$OUT" --check chgnet --check-top 10 --check-executor process:1
