#!/usr/bin/env bash
# design --check at 8-12 defects: the model ranks a pool (the 8-12-defect configurations of the
# high-density set, written by hd_reference.py generate) for a formation-energy window; the top 8
# are checked with the corrected CHGNet (single point + 20 FIRE steps).
#   POOL=/tmp/pool812 OUT=/tmp/check_run bash benchmarks/run_design_check.sh
#   PYTHONPATH=. python benchmarks/design_check_summary.py --run /tmp/check_run
set -euo pipefail
OUT=${OUT:?set OUT}; POOL=${POOL:?set POOL}
export OMP_NUM_THREADS=1
python -c "import sys; from invdesign.cli import main; sys.exit(main())" design \
    --target formation_energy_per_site=1.8:2.2 --min-defects 8 --max-defects 12 --pool "$POOL" -n 20 --seed 0 \
    --out "$OUT" --check chgnet --check-top 8 --check-executor process:1
