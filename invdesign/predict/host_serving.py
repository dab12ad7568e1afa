"""Serving the packaged host models (every 2DMD host, every density) behind the ``predict`` table.

:func:`packaged_host_model` loads ``invdesign/resources/host_models/<Host>.npz`` (a
:class:`~invdesign.predict.defect_env.HostModel` trained on all of that host's 2DMD DFT, written by
``benchmarks/package_host_models.py``). :class:`HostPredictor` gives it the interface of
:class:`~invdesign.predict.serving.Predictor` that the ``predict`` table reads (means and stds in eV,
extrapolation reasons, the gap's validity, the formation energy's reference). 8x8 MoS2 is served by the packaged MoS2 model, which hands configurations of more than 3 defects to the
MoS2 host model itself (:meth:`invdesign.predict.serving.Predictor.high_density_model`).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import numpy as np

from invdesign.errors import InvdesignError
from invdesign.lattice.host import HostLattice
from invdesign.predict.defect_env import TARGETS as HM_TARGETS
from invdesign.predict.defect_env import HostModel

FE, GAP = "formation_energy_per_site", "homo_lumo_gap"


def host_model_resource(name: str):
    return resources.files("invdesign.resources") / "host_models" / f"{name}.npz"


@cache
def packaged_host_model(name: str) -> HostModel:
    """The packaged host model of the packaged host ``name`` (e.g. ``"BN"``), loaded once."""
    ref = host_model_resource(name)
    if not ref.is_file():
        raise InvdesignError(f"no packaged model for host {name}")
    with resources.as_file(ref) as path:
        return HostModel.load(path)


class HostPredictor:
    """``predict``-table view of a host model: the interface of :class:`~invdesign.predict.serving.Predictor`
    that the ``predict`` table, ``with_mu`` and the extrapolation warning read.

    Args:
        model: the host model.
        reference: words for the formation energy's reference in the table.
    """

    targets = (FE, GAP)
    # no invertible embedding and no flow: design anneals on the predictions, or screens every orbit where enumerable
    design_modes = ("anneal", "exhaustive")

    def __init__(self, model: HostModel, reference: str = "") -> None:
        self.model = model
        self.host: HostLattice = model.host
        self.reference = reference or "DFT-trained host model (2DMD, PBE)"
        self.meta = {"targets": list(self.targets), "serving": {FE: "host model", GAP: "host model"}}

    def serving_heads(self) -> dict[str, str]:
        return dict(self.meta["serving"])

    def spin_polarised(self) -> bool:
        return bool(self.model.meta.get("targets_known", [True, True, False])[2])

    def predict(self, occ: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(N, 2)`` means and stds (eV): formation energy per defect site, HOMO-LUMO gap."""
        mu, std, _ = self.model.predict(np.asarray(occ))
        return mu[:, :2], std[:, :2]

    def predict_with_moment(self, occ: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(N, 3)`` means and stds: :meth:`predict`'s two columns (eV, the same floats) and ``total_mag`` (Bohr
        magnetons per cell; NaN on a host without a moment), for windows that bound the moment."""
        mu, std, _ = self.model.predict(np.asarray(occ))
        return mu[:, :3], std[:, :3]

    @property
    def train_moment(self) -> np.ndarray:
        """``(N,)`` the training configurations' DFT ``total_mag`` (Bohr magnetons per cell; NaN without a moment)."""
        return self.model.train_y[:, HM_TARGETS.index("total_mag")]

    def gap_validated(self, occ: np.ndarray) -> np.ndarray:
        """``(N,)`` bool: the gap's density band had calibration data and the defect count was trained."""
        return self.model.predict(np.asarray(occ))[2][:, 1]

    def extrapolation(self, occ: np.ndarray) -> list[str]:
        """One reason per configuration ('' inside the training data): a defect count outside the trained
        range (e.g. 1-2 defects on a host trained at 3-18), or a defect type never seen in training."""
        occ = np.asarray(occ)
        n = (occ != self.host.host_code[None, :]).sum(1)
        kmin, kmax = self.model.meta.get("kmin", 1), self.model.meta.get("kmax", 10_000)
        counts = self.model._type_counts(occ)
        seen = np.asarray(self.model.meta.get("compositions", []), dtype=np.int64)
        seen_types = (seen > 0).any(axis=0) if len(seen) else np.ones(counts.shape[1], bool)
        labels = [self.host.defect_label(s, c) for s, c in self.host.defect_types]
        out = []
        for k, c in zip(n, counts):
            why = []
            if k > kmax:
                why.append(f"{k} defects > {kmax} seen in training")
            elif 0 < k < kmin:
                why.append(f"{k} defects < {kmin} seen in training")
            new = [lab for lab, cc, s in zip(labels, c, seen_types) if cc and not s]
            if new:
                why.append(f"defect type(s) {', '.join(new)} not in training")
            out.append("; ".join(why))
        return out

    def fe_reference(self, occ: np.ndarray) -> list[str]:
        return [self.reference] * len(occ)

    def served_reasons(self, occ: np.ndarray) -> list[str]:
        """The extrapolation reasons of :meth:`extrapolation`, as design's candidate checks read them."""
        return self.extrapolation(occ)

    def embed(self, occ: np.ndarray) -> np.ndarray:
        """``(N, d)`` invariant descriptors (:meth:`HostModel.embed`): distances for diversity and nearest-known."""
        return self.model.embed(occ)

    @property
    def train_occ(self) -> np.ndarray:
        return self.model.train_occ

    @property
    def train_y(self) -> np.ndarray:
        return self.model.train_y[:, :2]

    def magnetisation_columns(self, occ: np.ndarray) -> dict[str, np.ndarray]:
        """``total_mag`` and ``total_mag_std`` (Bohr magnetons per cell) for spin-polarised hosts, else {}."""
        if not self.spin_polarised():
            return {}
        mu, std, _ = self.model.predict(np.asarray(occ))
        j = HM_TARGETS.index("total_mag")
        return {"total_mag": mu[:, j], "total_mag_std": std[:, j]}


def predictor_for(host: HostLattice) -> HostPredictor:
    """The packaged host model's predictor for structures on ``host`` (a packaged host in its release supercell)."""
    from invdesign.lattice.hosts import host_spec_of

    spec = host_spec_of(host)
    if spec is None:
        raise InvdesignError(f"no packaged model for host {host.name}; train one (invdesign train --data DIR --out F.npz)")
    model = packaged_host_model(spec.name)
    if tuple(int(v) for v in np.diag(host.matrix)[:2]) != tuple(model.meta["header"]["host"]["supercell"]):
        raise InvdesignError(f"the packaged {spec.label} model is for its {model.host.name} cell, not {host.name}")
    sets = " + ".join(model.meta.get("trained_on", []))
    return HostPredictor(model, f"DFT-trained host model (2DMD {sets}, PBE)" if sets else "")


def packaged_predictor(host: HostLattice) -> HostPredictor | None:
    """The packaged host model's predictor where one serves ``host`` by default (a packaged host other than
    MoS2, in its release supercell, with a packaged model); None where the packaged MoS2 model (or none) does."""
    from invdesign.lattice.hosts import host_spec_of

    spec = host_spec_of(host)
    if spec is None or spec.name == "MoS2" or tuple(int(v) for v in np.diag(host.matrix)[:2]) != spec.supercell \
            or not host_model_resource(spec.name).is_file():
        return None
    return predictor_for(host)


def load_host_predictor(path) -> HostPredictor:
    """A host model file (``invdesign train --out F.npz``) as a predictor."""
    from pathlib import Path

    if not Path(path).is_file():
        raise InvdesignError("model not found", source=str(path))
    model = HostModel.load(path)
    sets = " + ".join(model.meta.get("trained_on", []))
    return HostPredictor(model, f"DFT-trained host model (2DMD {sets}, PBE)" if sets else "")
