#!/usr/bin/env bash
# `make install` as a machine without this one's pip set-up sees it: pip's local configuration ignored
# (PIP_CONFIG_FILE=/dev/null; no find-links, extra index or constraint from the environment), only the
# public index (INDEX, default PyPI) plus TORCH_INDEX (the PyTorch CPU wheel index, as the README gives it:
# `make check-public TORCH_INDEX=https://download.pytorch.org/whl/cpu`). Both install steps are resolved
# as a dry run (nothing is installed or downloaded beyond metadata); it fails if either does not resolve
# (ResolutionImpossible, a pin missing from the index) and prints the torch build it would take.
set -euo pipefail
cd "$(dirname "$0")/.."
INDEX="${INDEX:-https://pypi.org/simple}"
unset PIP_FIND_LINKS PIP_EXTRA_INDEX_URL PIP_INDEX_URL PIP_CONSTRAINT PIP_NO_INDEX PIP_REQUIRE_VIRTUALENV
export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
extra=()
[ -n "${TORCH_INDEX:-}" ] && extra=(--extra-index-url "$TORCH_INDEX")
pip=(python3 -m pip install --dry-run --ignore-installed --quiet --index-url "$INDEX" "${extra[@]}")
echo "check-public: index $INDEX${TORCH_INDEX:+ + $TORCH_INDEX}; local pip configuration ignored"
"${pip[@]}" --report "$tmp/torch.json" -c constraints.txt torch
"${pip[@]}" --report "$tmp/all.json" -c requirements.lock -c constraints.txt -e ".[peers,dev]"
python3 - "$tmp/torch.json" "$tmp/all.json" <<'PY'
import json, sys
from urllib.parse import urlparse
torch_step, all_step = (json.load(open(p))["install"] for p in sys.argv[1:])
t = next(i for i in torch_step if i["metadata"]["name"].lower() == "torch")
print(f"  torch step: torch {t['metadata']['version']} from {urlparse(t['download_info']['url']).netloc}")
hosts = sorted({urlparse(i["download_info"]["url"]).netloc or "local" for i in all_step})
print(f"  package step: {len(all_step)} packages resolve at the lock's versions, from {', '.join(hosts)}")
PY
echo "check-public: OK"
