#!/usr/bin/env bash
# The unlocked install path, as someone adding invdesign to their own environment takes it:
# a brand-new virtual environment, torch 2.13.0 (constraints.txt pins the version, not a build: the local
# CPU wheel on these machines; `TORCH_INDEX=https://download.pytorch.org/whl/cpu` adds the PyTorch CPU
# wheel index for the torch step elsewhere), then `pip install .` without the lock
# and without extras (so every other dependency resolves to the newest version that day), then
# `invdesign --version`, `--help`, a tiny `design` and a `predict` on one of its structures.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
# shellcheck disable=SC1091
. "$tmp/venv/bin/activate"
pip="python -m pip install --quiet --disable-pip-version-check"
$pip -c constraints.txt ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} torch
python -c 'import torch; print("torch", torch.__version__)'
$pip .
python -m pip list --format=freeze > "$tmp/resolved.txt"
echo "resolved $(wc -l < "$tmp/resolved.txt") packages; differences from the lock:"
python - "$tmp/resolved.txt" requirements.lock <<'PY'
import re, sys
def pins(path):
    out = {}
    for line in open(path):
        m = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line.strip())
        if m:
            out[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return out
got, lock = pins(sys.argv[1]), pins(sys.argv[2])
# a local build label (torch 2.13.0+cpu) satisfies the lock's plain version pin: compare public versions
diff = [f"  {k}: lock {lock[k]} -> {v}" for k, v in sorted(got.items())
        if k in lock and lock[k].split("+")[0] != v.split("+")[0]]
print("\n".join(diff) or "  none")
PY
export INVDESIGN_PROGRESS=0
cd "$tmp"   # run the installed package, not the source tree
invdesign --version
invdesign --help > /dev/null
invdesign design --target formation_energy_per_site=1.0:1.2 --target homo_lumo_gap=0.9:1.3 -n 3 --out "$tmp/design"
first=$(ls "$tmp"/design/structures/*.cif | head -n 1)
invdesign predict "$first" --out "$tmp/pred.csv"
cat "$tmp/pred.csv"
echo "check-latest: OK"
