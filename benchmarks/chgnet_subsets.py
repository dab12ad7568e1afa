"""Write the low-density structures that the CHGNet-vs-DFT study labels (CIFs, no targets) into a work folder.

    python benchmarks/chgnet_subsets.py --data /work/shared/data/2dmd-mos2-low --work /tmp/chgnet_work \
        --n-test 260 --n-train 300 --n-protocol-test 120 --n-protocol-train 100 \
        --n-long-test 20 --n-long-train 20

Writes ``WORK/test``, ``WORK/train`` (single-point study), ``WORK/test_p``, ``WORK/train_p``
(prefixes of those for the short relaxation protocol) and ``WORK/test_l``, ``WORK/train_l`` (shorter
prefixes for the long relaxation protocol, which costs ~4x more per structure). Test = ``split_indices(ids, seed=0)["test"]``,
train = its ``"train"`` part; both sampled with a fixed seed, so the folders are reproducible.
Only structures (unrelaxed 2DMD CIFs re-written from their occupancies) are written, never DFT labels.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from invdesign.data.dataset import load_dataset, split_indices
from invdesign.io import write_structure


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/work/shared/data/2dmd-mos2-low")
    ap.add_argument("--work", required=True)
    ap.add_argument("--n-test", type=int, default=260)
    ap.add_argument("--n-train", type=int, default=300)
    ap.add_argument("--n-protocol-test", type=int, default=120)
    ap.add_argument("--n-protocol-train", type=int, default=100)
    ap.add_argument("--n-long-test", type=int, default=20)
    ap.add_argument("--n-long-train", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    ds = load_dataset(a.data)
    sp = split_indices(ds.ids, seed=0)
    rng = np.random.default_rng(a.seed)
    test = rng.permutation(sp["test"])[: a.n_test]
    train = rng.permutation(sp["train"])[: a.n_train]
    for name, idx in (("test", test), ("train", train), ("test_p", test[: a.n_protocol_test]),
                      ("train_p", train[: a.n_protocol_train]), ("test_l", test[: a.n_long_test]),
                      ("train_l", train[: a.n_long_train])):
        d = Path(a.work) / name
        d.mkdir(parents=True, exist_ok=True)
        for i in idx:
            write_structure(ds.occ[i], ds.host, d / f"{ds.ids[i]}.cif")
        print(f"{name}: {len(idx)} structures -> {d}")


if __name__ == "__main__":
    main()
