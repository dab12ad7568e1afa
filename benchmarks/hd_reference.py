"""The high-density reference set: 8x8 MoS2 with 4-30 defects, generated reproducibly (seeded).

    python benchmarks/hd_reference.py generate --work /tmp/hd_work [--n 440 --seed 11]
    WORK=/tmp/hd_work bash benchmarks/run_hd_labels.sh     # invdesign label ... --oracle chgnet --steps 0 (resumable)
    python benchmarks/hd_reference.py table --labels benchmarks/results/chgnet/hd_labels.csv \
        --out invdesign/resources/hd_reference.csv

    # the train-only extension (weighted toward 13-30 defects; the test part above stays as it is)
    python benchmarks/hd_reference.py extend --work /tmp/hdx_work [--n 2400 --seed 12]
    WORK=/tmp/hdx_work OUT=benchmarks/results/chgnet/hd_ext_labels.csv bash benchmarks/run_hd_labels.sh
    python benchmarks/hd_reference.py table \
        --labels benchmarks/results/chgnet/hd_labels.csv benchmarks/results/chgnet/hd_ext_labels.csv \
        --manifest benchmarks/results/chgnet/hd_manifest.csv benchmarks/results/chgnet/hd_ext_manifest.csv \
        --out invdesign/resources/hd_reference.csv

``generate`` draws ``--n`` configurations: the defect count from three equal bands (4-6, 7-12,
13-30, uniform inside a band), a composition family (one type, two types, or all of V_S, V_Mo,
W_Mo, Se_S; the count split at random with every chosen type present) and a placement:

- ``random``: sites drawn uniformly on each type's sublattice;
- ``clustered``: the sites nearest (minimum image) to a random centre, with a little jitter;
- ``dispersed``: greedy farthest-point placement (each new defect maximises its smallest distance
  to the defects already placed, among 64 random candidates).

Each configuration is written as ``structures/<id>.cif`` plus ``manifest.csv``
(``id,canonical_key,n_defects,family,placement,split``). The split is fixed by the id
(``split_indices(ids, (0.8, 0, 0.2), seed=0)``: train / test); duplicates by canonical key are
redrawn. ``extend`` adds TRAIN-only configurations (ids ``hdx<seed>_<i>``; see :func:`extend`): more data
where the model is weakest, with the 91 test configurations and their split unchanged. ``table`` joins the labels with the manifest into the compact committed table:
``id,canonical_key,split,n_defects,<type counts>,family,placement,dn_<El>,raw_energy,
formation_energy_per_site_chgnet,correction,formation_energy_per_site,formation_energy_per_site_std,protocol``
(eV; raw_energy = E - E_pristine of CHGNet under the protocol). No DFT data is in it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from invdesign.lattice.host import HostLattice

BANDS = ((4, 6), (7, 12), (13, 30))
PLACEMENTS = ("random", "clustered", "dispersed")


def draw(host: HostLattice, rng: np.random.Generator, n: int | None = None,
         bands: tuple[tuple[int, int], ...] = BANDS, placement: str | None = None) -> tuple[np.ndarray, str, str]:
    """One configuration ``(occ (n_sites,), family, placement)`` with ``n`` defects (None: the count
    uniform in a band drawn from ``bands``) and the given placement (None: drawn at random)."""
    if n is None:
        lo, hi = bands[rng.integers(len(bands))]
        n = int(rng.integers(lo, hi + 1))
    T = len(host.defect_types)
    k = int(rng.choice([1, 2, T], p=[0.3, 0.4, 0.3]))
    types = np.sort(rng.choice(T, size=min(k, n), replace=False))
    counts = np.ones(len(types), int) + rng.multinomial(n - len(types), np.ones(len(types)) / len(types))
    if placement is None:
        placement = PLACEMENTS[rng.integers(len(PLACEMENTS))]
    D = host.min_image_distance
    occ = host.host_code.copy()
    taken: list[int] = []
    centre = int(rng.integers(host.n_sites))
    for t, c in zip(types, counts):
        sub, code = host.defect_types[t]
        for _ in range(c):
            free = np.flatnonzero((host.sublattice == sub) & (occ == host.host_code))
            if placement == "random" or (placement == "dispersed" and not taken):
                s = int(rng.choice(free))
            elif placement == "clustered":
                d = D[centre, free] + rng.uniform(0, 1.0, len(free))
                s = int(free[np.argmin(d)])
            else:
                cand = rng.choice(free, size=min(64, len(free)), replace=False)
                s = int(cand[np.argmax(D[np.ix_(cand, taken)].min(axis=1))])
            occ[s] = code
            taken.append(s)
    family = "+".join(host.defect_label(*host.defect_types[t]) for t in types)
    return occ, family, placement


def generate(work: Path, n: int, seed: int) -> None:
    from invdesign.data.dataset import split_indices
    from invdesign.io import write_structure
    from invdesign.lattice.canonical import canonical_keys

    host = HostLattice.default()
    rng = np.random.default_rng(seed)
    rows, occs, seen = [], [], set()
    while len(rows) < n:
        occ, family, placement = draw(host, rng)
        key = canonical_keys(occ[None], host)[0]
        if key in seen:
            continue
        seen.add(key)
        rows.append({"id": f"hd{seed}_{len(rows):04d}", "canonical_key": key,
                     "n_defects": int((occ != host.host_code).sum()), "family": family, "placement": placement})
        occs.append(occ)
    df = pd.DataFrame(rows)
    sp = split_indices(df["id"].tolist(), (0.8, 0.0, 0.2), seed=0)
    df["split"] = "train"
    df.loc[sp["test"], "split"] = "test"
    (work / "structures").mkdir(parents=True, exist_ok=True)
    for r, occ in zip(rows, occs):
        write_structure(occ, host, work / "structures" / f"{r['id']}.cif")
    df.to_csv(work / "manifest.csv", index=False)
    print(df.groupby(["placement"]).size().to_dict(), df["split"].value_counts().to_dict())
    print(f"{len(df)} configurations -> {work}")


# the extension's band schedule: blocks of three configurations (random, clustered, dispersed), 7 of every
# 10 blocks at 13-30 defects and 3 at 7-12, so that any labelled prefix is balanced
EXT_BLOCKS = ((13, 30), (13, 30), (7, 12), (13, 30), (13, 30), (7, 12), (13, 30), (13, 30), (7, 12), (13, 30))


def extend(work: Path, n: int, seed: int, manifest: Path) -> None:
    """``n`` extra TRAIN configurations (ids ``hdx<seed>_<i>``, which cannot collide with ``hd<seed>_<i>``),
    none with a canonical key already in ``manifest`` (the original set, test part included) or drawn before.
    The i-th configuration has placement ``PLACEMENTS[i % 3]`` and its band from ``EXT_BLOCKS[(i // 3) % 10]``
    (70 % 13-30, 30 % 7-12); the composition family is drawn as in ``generate``. Files are labelled in id order,
    so a partly labelled extension is still balanced over bands and placements."""
    from invdesign.io import write_structure
    from invdesign.lattice.canonical import canonical_keys

    host = HostLattice.default()
    rng = np.random.default_rng(seed)
    seen = set(pd.read_csv(manifest)["canonical_key"])
    rows, occs = [], []
    while len(rows) < n:
        i = len(rows)
        occ, family, placement = draw(host, rng, bands=(EXT_BLOCKS[(i // 3) % len(EXT_BLOCKS)],),
                                      placement=PLACEMENTS[i % len(PLACEMENTS)])
        key = canonical_keys(occ[None], host)[0]
        if key in seen:
            continue
        seen.add(key)
        rows.append({"id": f"hdx{seed}_{i:04d}", "canonical_key": key, "n_defects": int((occ != host.host_code).sum()),
                     "family": family, "placement": placement, "split": "train"})
        occs.append(occ)
    df = pd.DataFrame(rows)
    (work / "structures").mkdir(parents=True, exist_ok=True)
    for r, occ in zip(rows, occs):
        write_structure(occ, host, work / "structures" / f"{r['id']}.cif")
    df.to_csv(work / "manifest.csv", index=False)
    band = pd.cut(df["n_defects"], [3, 6, 12, 30], labels=["4-6", "7-12", "13-30"])
    print(df.groupby([band, "placement"], observed=True).size().to_dict())
    print(df["family"].value_counts().to_dict())
    print(f"{len(df)} extra train configurations -> {work}")


def table(labels: list[Path], manifest: list[Path], out: Path, correction: Path | None = None) -> None:
    """Join CHGNet labels (``invdesign label --oracle chgnet --steps 0`` or ``chgnet+delta``) with the
    manifest and apply the correction (``chgnet+delta`` = raw CHGNet + correction, recomputed from
    ``raw_energy`` with the packaged or given correction file)."""
    from invdesign.campaign.oracles import ChgnetDeltaOracle, formation_energy_per_site, species_delta
    from invdesign.lattice.canonical import key_to_occ

    host = HostLattice.default()
    orc = ChgnetDeltaOracle.from_file(correction, host)
    lab = pd.concat([pd.read_csv(p) for p in labels], ignore_index=True)
    lab = lab[lab["error"].isna()] if "error" in lab else lab
    man = pd.concat([pd.read_csv(p) for p in manifest], ignore_index=True)
    for what, d in (("labels", lab), ("manifests", man)):
        if d["id"].duplicated().any():
            raise SystemExit(f"{what}: duplicated ids, e.g. {d.loc[d['id'].duplicated(), 'id'].iloc[0]}")
    if man["canonical_key"].duplicated().any():
        raise SystemExit("manifests: a configuration appears twice (a train copy of a test configuration?)")
    df = man.merge(lab[["id", "raw_energy"]], on="id", how="inner")
    occ = np.stack([key_to_occ(k, host) for k in df["canonical_key"]])
    for sub, code in host.defect_types:
        df[host.defect_label(sub, code)] = ((occ == code) & (host.sublattice[None] == sub)).sum(axis=1)
    for el, v in species_delta(occ, host).items():
        df[f"dn_{el}"] = -v
    df["formation_energy_per_site_chgnet"] = formation_energy_per_site(df["raw_energy"].to_numpy(), occ, host, orc.mu)
    df["correction"] = orc.correction(occ)
    df["formation_energy_per_site"] = df["formation_energy_per_site_chgnet"] + df["correction"]
    df["formation_energy_per_site_std"] = orc.std(occ)
    df["protocol"] = f"CHGNet 0.3.0 {orc.protocol}; chgnet+delta ({Path(orc.name.partition(':')[2]).name})"
    cols = ["id", "canonical_key", "split", "n_defects", *[host.defect_label(*t) for t in host.defect_types], "family",
            "placement", *[c for c in df.columns if c.startswith("dn_")], "raw_energy", "formation_energy_per_site_chgnet",
            "correction", "formation_energy_per_site", "formation_energy_per_site_std", "protocol"]
    df = df[cols].sort_values("id")
    df.to_csv(out, index=False, float_format="%.6f")
    print(f"{len(df)} labelled of {len(man)} ({(df['split'] == 'test').sum()} test) -> {out}")
    summary(df, len(man), Path("benchmarks/results/hd_reference.md"))


def summary(df: pd.DataFrame, n_all: int, path: Path) -> None:
    """Markdown: how many are labelled, by band and placement; what the correction does there (meV/site)."""
    df = df.assign(band=pd.cut(df["n_defects"], [3, 6, 12, 30], labels=["4-6", "7-12", "13-30"]))
    lines = ["# High-density reference set (8x8 MoS2, 4-30 defects; corrected CHGNet)", "",
             f"{len(df)} of {n_all} configurations labelled ({(df['split'] == 'test').sum()} in the fixed test split; "
             f"{df['id'].str.startswith('hdx').sum()} of them from the train-only extension `hdx*`). "
             "Formation energy per defect site, meV: raw CHGNet (chemical potentials fitted on 2DMD train), "
             "the correction added by chgnet+delta, and the correction's std (posterior of its weights + noise).", "",
             "| band | placement | n | E_f chgnet (eV) | correction mean | |correction| median | |correction| max | std median | std max |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (b, pl), g in df.groupby(["band", "placement"], observed=True):
        c, s = 1000 * g["correction"], 1000 * g["formation_energy_per_site_std"]
        lines.append(f"| {b} | {pl} | {len(g)} | {g['formation_energy_per_site_chgnet'].mean():.3f} | {c.mean():+.0f} | "
                     f"{c.abs().median():.0f} | {c.abs().max():.0f} | {s.median():.0f} | {s.max():.0f} |")
    lines += ["", "Clustered placements put many defects at the short distances where the correction's pair terms act, "
              "often with pair types never seen together in the 1-3-defect training data: there the correction and its "
              "std are large, and the reference is only as good as that std says."]
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--work", required=True, type=Path)
    g.add_argument("--n", type=int, default=440)
    g.add_argument("--seed", type=int, default=11)
    x = sub.add_parser("extend", help="extra TRAIN configurations weighted toward 13-30 defects")
    x.add_argument("--work", required=True, type=Path)
    x.add_argument("--n", type=int, default=600)
    x.add_argument("--seed", type=int, default=12)
    x.add_argument("--manifest", type=Path, default=Path("benchmarks/results/chgnet/hd_manifest.csv"))
    t = sub.add_parser("table")
    t.add_argument("--labels", required=True, type=Path, nargs="+")
    t.add_argument("--manifest", type=Path, nargs="+", default=[Path("benchmarks/results/chgnet/hd_manifest.csv")],
                   help="manifests of the labelled sets (the original and, with it, the train-only extension)")
    t.add_argument("--out", required=True, type=Path)
    t.add_argument("--correction", type=Path, default=None, help="correction JSON (default: the packaged one)")
    a = ap.parse_args()
    if a.cmd == "generate":
        generate(a.work, a.n, a.seed)
    elif a.cmd == "extend":
        extend(a.work, a.n, a.seed, a.manifest)
    else:
        table(a.labels, a.manifest, a.out, a.correction)


if __name__ == "__main__":
    main()
