"""GFN1-xTB labels (total energy, HOMO-LUMO gap, cost) of a seeded sample of 2DMD MoS2 structures.

    nohup nice -n 10 python benchmarks/xtb_labels.py [--n-high 140] [--n-low 100] [--seed 0] &

One process, one thread, one structure at a time (:func:`invdesign.campaign.xtb.run`, OpenBLAS preloaded
in its subprocess). Each result is appended, flushed and synced to ``benchmarks/results/xtb/labels.csv`` as
it finishes, so the run can be stopped and restarted (ids already there are skipped). The sample: the
pristine cell first, then ``--n-high`` high-density (4-24 defects, seeded random) and ``--n-low``
low-density (1-3 defects, round-robin over the compositions so that every defect combination appears,
then seeded random) structures, interleaved two high to one low so that a partial run covers both.
The structures are the configurations on the host lattice (:func:`config_to_structure`: the unrelaxed
2DMD geometry). ``benchmarks/bench_xtb_gap.py`` scores them against DFT.
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

import numpy as np

from invdesign.campaign.xtb import run_structure
from invdesign.data.dataset import load_dataset
from invdesign.errors import InvdesignError
from invdesign.lattice.config import config_to_structure
from invdesign.lattice.host import HostLattice

OUT = Path("benchmarks/results/xtb/labels.csv")
COLUMNS = ["set", "id", "n_defects", "composition", "energy", "gap", "homo", "lumo", "n_electrons", "cpu_s",
           "wall_s", "blas", "error"]
DATA = Path(os.environ.get("INVDESIGN_SHARED", "../shared")) / "data"


def stratified(comp: np.ndarray, n: int, rng: np.random.Generator) -> list[int]:
    """``n`` indices: one per distinct composition row (round-robin, random within), then random."""
    order = rng.permutation(len(comp))
    seen: dict[tuple, list[int]] = {}
    for i in order:
        seen.setdefault(tuple(comp[i]), []).append(int(i))
    chosen: list[int] = []
    while len(chosen) < n and any(seen.values()):
        for k in list(seen):
            if seen[k] and len(chosen) < n:
                chosen.append(seen[k].pop(0))
    return chosen


def sample(n_high: int, n_low: int, seed: int) -> list[tuple[str, str, np.ndarray, HostLattice, np.ndarray]]:
    """``[(set, id, occ_row, host, composition)]`` in the order they are labelled."""
    rng = np.random.default_rng(seed)
    hi = load_dataset(DATA / "2dmd-mos2-high")
    lo = load_dataset(DATA / "2dmd-mos2-low")
    ih = [int(i) for i in rng.permutation(len(hi))[:n_high]]
    il = stratified(lo.composition, n_low, rng)
    rows = [("pristine", "pristine", hi.host.host_code.copy(), hi.host, np.zeros(hi.composition.shape[1], int))]
    while ih or il:
        for _ in range(2):
            if ih:
                i = ih.pop(0)
                rows.append(("high", str(hi.ids[i]), hi.occ[i], hi.host, hi.composition[i]))
        if il:
            i = il.pop(0)
            rows.append(("low", str(lo.ids[i]), lo.occ[i], lo.host, lo.composition[i]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-high", type=int, default=140)
    ap.add_argument("--n-low", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    rows = sample(a.n_high, a.n_low, a.seed)
    done: set[tuple[str, str]] = set()
    if a.out.exists():
        with open(a.out) as fh:
            done = {(r["set"], r["id"]) for r in csv.DictReader(fh) if not r["error"]}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    new = not a.out.exists() or a.out.stat().st_size == 0
    with open(a.out, "a", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        if new:
            w.writerow(COLUMNS)
        for k, (sname, cid, occ, host, comp) in enumerate(rows):
            if (sname, cid) in done:
                continue
            t0 = time.perf_counter()
            try:
                r, err = run_structure(config_to_structure(occ, host)), ""
            except InvdesignError as exc:
                r, err = {}, str(exc).replace("\n", " ")[:300]
            w.writerow([sname, cid, int(comp.sum()), " ".join(map(str, comp)), *(r.get(c, "") for c in COLUMNS[4:9]),
                        r.get("cpu_s", ""), r.get("wall_s", time.perf_counter() - t0), r.get("blas", ""), err])
            fh.flush()
            os.fsync(fh.fileno())
            print(f"{k + 1}/{len(rows)} {sname} {cid} gap {r.get('gap', float('nan')):.3f} eV "
                  f"cpu {r.get('cpu_s', float('nan')):.1f} s {err}", flush=True)


if __name__ == "__main__":
    main()
