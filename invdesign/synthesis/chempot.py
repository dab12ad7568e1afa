"""Chemical potentials: the model's reference, the stable range of MoS2, and exact re-referencing.

Sign convention (the one 2DMD uses; recovered from its data to ~1e-8 meV, see
``resources/chempot_reference.json``)::

    E_f(mu) = E_def - E_host - sum_El dn_El mu_El          (eV per cell)

with ``dn_El`` = atoms added minus atoms removed (:mod:`invdesign.lattice.stoichiometry`). Hence,
exactly, for any other set ``mu'``::

    E_f(mu') = E_f(mu) - sum_El dn_El (mu'_El - mu_El)      (per cell)
    E_f_per_site(mu') = E_f(mu') / n_defects                 (per defect site)

A vacancy (``dn < 0``) gets cheaper as its element's ``mu`` drops: V_S is lowest S-poor (Mo-rich).

The model's reference (``mu_ref``) is 2DMD's: elemental energies (eV/atom, VASP PBE) of Mo, S, W,
Se. Named limits ``"Mo-rich"`` / ``"S-rich"`` lie on ``mu_Mo + 2 mu_S = E(MoS2)/f.u.``.

Every other packaged host has its own (:func:`host_reference`, from the release's ``elements.csv`` and
pristine energies, ``resources/chempot_hosts.json``): ``mu_ref`` is ``elements.csv``'s mu of the elements its
configurations hold, the stability line is ``a mu_A + b mu_B = E(A_a B_b)/f.u.`` (DFT) with limits ``"<A>-rich"`` /
``"<B>-rich"`` (``"W-rich"``/``"Se-rich"`` on WSe2, ``"B-rich"``/``"N-rich"`` on h-BN, ``"Ga-rich"``/``"Se-rich"``
on GaSe, ``"In-rich"``/``"Se-rich"`` on InSe; black P is elemental: one point, ``"N-rich"``), and each
substituent as rich as its elemental phase and the competing compounds of the data allow.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np

from invdesign.errors import InvdesignError
from invdesign.lattice.host import HostLattice
from invdesign.lattice.stoichiometry import dn_matrix, elements

FE = "formation_energy_per_site"


@cache
def load_reference() -> dict:
    """The packaged reference (``invdesign/resources/chempot_reference.json``; see its provenance)."""
    ref = resources.files("invdesign.resources") / "chempot_reference.json"
    return json.loads(ref.read_text())


@cache
def load_host_facts() -> dict:
    """The packaged facts of the other hosts (``invdesign/resources/chempot_hosts.json``;
    ``scripts/compute_chempot_hosts.py``): elemental mu, competing phases, each host's formula and energy."""
    ref = resources.files("invdesign.resources") / "chempot_hosts.json"
    return json.loads(ref.read_text())


def host_name(host) -> str:
    """``"MoS2"`` for MoS2, a user's own host or None; else the packaged host's name (``"GaSe"``, ...)."""
    if host is None:
        return "MoS2"
    if isinstance(host, str):
        from invdesign.lattice.hosts import spec

        return spec(host).name
    from invdesign.lattice.hosts import host_spec_of

    s = host_spec_of(host)
    return "MoS2" if s is None or s.name not in load_host_facts()["hosts"] else s.name


def _substituent_mu(name: str, mu_host: dict[str, float]) -> tuple[dict[str, float], list[str]]:
    """Each substituent of host ``name`` as rich as allowed with the host elements at ``mu_host``: the smaller
    of its elemental mu and every competing phase of it with the host's elements; with the rule in words."""
    f = load_host_facts()
    h = f["hosts"][name]
    out, words = {}, []
    for x, mu0 in h["mu_ref"].items():
        if x in h["formula"]:
            continue
        bound, by = mu0, [f"{x}^0"]
        for pname, ph in f["phases"].items():
            comp = ph["composition"]
            if pname == name or x not in comp or not set(comp) - {x} or not set(comp) - {x} <= set(mu_host):
                continue
            v = (ph["E_per_fu"] - sum(n * mu_host[e] for e, n in comp.items() if e != x)) / comp[x]
            bound = min(bound, v)
            by.append(pname)
        out[x] = bound
        words.append(f"mu_{x} = min({', '.join(by)})" if len(by) > 1 else
                     f"mu_{x} = mu_{x}^0 (no competing phase of {x} with the host's elements in the data: an upper bound)")
    return out, words


def _host_line(name: str, x: float) -> dict[str, float]:
    """Host-element mu a fraction ``x`` along the stability line of host ``name`` (0: first element rich)."""
    h = load_host_facts()["hosts"][name]
    comp, e, mu0 = h["formula"], h["E_per_fu"], h["mu_ref"]
    els = list(comp)
    if len(els) == 1:  # an elemental host (black P): one point
        return {els[0]: e / comp[els[0]]}
    a, b = els
    lo = mu0[a]
    hi = (e - comp[b] * mu0[b]) / comp[a]
    mu_a = lo + x * (hi - lo)
    return {a: mu_a, b: (e - comp[a] * mu_a) / comp[b]}


def host_limits(name: str) -> tuple[dict[str, dict[str, float]], str]:
    """Named limits of the packaged host ``name`` (not MoS2) and the rule that made them."""
    h = load_host_facts()["hosts"][name]
    els = list(h["formula"])
    formula = " + ".join(f"{n if n > 1 else ''}mu_{e}" for e, n in h["formula"].items())
    points = ([(f"{els[0]}-rich", 0.0), (f"{els[1]}-rich", 1.0)] if len(els) == 2 else
              [("-".join(e for e in h["mu_ref"] if e not in h["formula"]) + "-rich", 0.0)])
    limits, words = {}, []
    for label, x in points:
        mh = _host_line(name, x)
        sub, words = _substituent_mu(name, mh)
        limits[label] = {**mh, **sub}
    if len(els) == 2:
        rule = (f"{formula} = E({name})/f.u. = {h['E_per_fu']:.4f} eV (DFT, the release's pristine supercell); "
                f"{els[0]}-rich: mu_{els[0]} = mu_{els[0]}^0; {els[1]}-rich: mu_{els[1]} = mu_{els[1]}^0")
    else:
        rule = (f"{name} is elemental: mu_{els[0]} = E({name})/atom = {h['E_per_fu']:.4f} eV (DFT); its substituents "
                "at their richest")
    return limits, "; ".join([rule, *words]) + " (mu^0: elements.csv)"


def host_reference(host=None) -> dict:
    """The chemical-potential reference of ``host`` (a HostLattice, a packaged host's name or None) in the shape of
    :func:`load_reference`: ``reference``, ``mu_ref``, ``limits``, ``limits_rule``, ``residual_meV``, ``provenance``
    (MoS2, a user's own host and None: the packaged MoS2 reference itself)."""
    name = host_name(host)
    if name == "MoS2":
        r = load_reference()
        return {**r, "host": "MoS2", "residual_meV": r["dft"]["residual"]}
    f = load_host_facts()
    h = f["hosts"][name]
    limits, rule = host_limits(name)
    return {
        "host": name,
        "reference": f"2DMD DFT (VASP PBE) of {h['label']}: formation_energy = E_def - E_pristine - sum_El dn_El mu_El "
                     "with these mu (elements.csv; the host model's reference)",
        "mu_ref": dict(h["mu_ref"]),
        "E_per_fu": h["E_per_fu"],
        "dH_per_fu": h["dH_per_fu"],
        "limits": limits,
        "limits_rule": rule,
        "residual_meV": h["residual"],
        "provenance": f["provenance"],
    }


@dataclass(frozen=True)
class ChemicalPotentials:
    """Absolute chemical potentials in eV/atom in the model's (2DMD DFT) reference.

    Attributes:
        mu: element -> eV/atom.
        name: ``"reference"``, ``"Mo-rich"``, ``"S-rich"`` or the file it came from.
        note: how the values were obtained (e.g. doped limit and the alignment used).
    """

    mu: dict[str, float]
    name: str = "reference"
    note: str = ""
    extra: dict = field(default_factory=dict, compare=False)

    @classmethod
    def reference(cls, host=None) -> ChemicalPotentials:
        """The mu's that define the model's (2DMD's) formation energies on ``host`` (None: MoS2)."""
        r = host_reference(host)
        return cls(dict(r["mu_ref"]), "reference", r["reference"])

    def delta(self, host: HostLattice) -> np.ndarray:
        """``(E,)`` ``mu - mu_ref`` over :func:`elements` of the host (eV/atom)."""
        r = load_reference()
        ref = {**r.get("mu_ref_all_hosts", {}), **r["mu_ref"]}  # every 2DMD element (the release's elements.csv)
        mu = {**ref, **self.mu} if self.name == "reference" else self.mu
        missing = [e for e in elements(host) if e not in mu]
        if missing:
            raise InvdesignError(f"chemical potentials {self.name!r} give no value for {missing[0]} "
                                 f"(needed: {', '.join(elements(host))})")
        return np.array([mu[e] - ref[e] for e in elements(host)], dtype=float)

    def as_dict(self) -> dict:
        return {"name": self.name, "mu_eV_per_atom": dict(self.mu), "note": self.note}


def along_stable_range(x: float, host=None) -> ChemicalPotentials:
    """Chemical potentials a fraction ``x`` of the way from Mo-rich (``x = 0``) to S-rich (``x = 1``).

    ``mu_Mo`` moves linearly along ``mu_Mo + 2 mu_S = E(MoS2)/f.u.``; ``mu_W`` and ``mu_Se`` follow the
    same rule as the named limits (as rich as the competing phases allow). On another packaged ``host``
    the same along its own line, from its first element rich (``x = 0``, e.g. Ga-rich) to its second
    (``x = 1``, Se-rich); black P, elemental, has one point.
    """
    if not 0.0 <= x <= 1.0:
        raise InvdesignError(f"the fraction along the stable range must be in [0, 1], not {x}")
    name = host_name(host)
    if name != "MoS2":
        mh = _host_line(name, x)
        names = list(host_limits(name)[0])
        return ChemicalPotentials({**mh, **_substituent_mu(name, mh)[0]}, f"{names[0]}..{names[-1]} x={x:g}",
                                  host_limits(name)[1])
    r = load_reference()
    lo, hi = r["limits"]["Mo-rich"]["Mo"], r["limits"]["S-rich"]["Mo"]
    e, ph, mu0 = r["E_MoS2_per_fu"], r["phases"], r["mu_ref"]
    mo = lo + x * (hi - lo)
    s = (e - mo) / 2
    w = min(mu0["W"], ph["WS2"]["E_per_fu"] - 2 * s)
    se = min(mu0["Se"], (ph["MoSe2"]["E_per_fu"] - mo) / 2, (ph["WSe2"]["E_per_fu"] - w) / 2)
    return ChemicalPotentials({"Mo": mo, "S": s, "W": w, "Se": se}, f"Mo-rich..S-rich x={x:g}", r["limits_rule"])


def _check_mu(d: dict, source: str) -> dict[str, float]:
    out = {}
    for k, v in d.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise InvdesignError(f"chemical potential of {k} is not a finite number ({v!r})", source=source)
        out[str(k)] = float(v)
    return out


def _from_doped(d: dict, source: str, limit: str | None, host=None) -> ChemicalPotentials:
    """doped's chemical-potential dict (``{"limits": {...}, "elemental_refs": {...}, "limits_wrt_el_refs": {...}}``).

    Checked against doped 3.2.1 (``doped.chemical_potentials``: ``limits`` absolute eV/atom per limit such
    as ``"MoS2-Mo"``, ``elemental_refs`` eV/atom, ``limits_wrt_el_refs`` = ``limits - elemental_refs``);
    the older ``facets`` / ``facets_wrt_el_refs`` keys are read the same way.
    doped's absolute values stand on the user's own DFT energies, not ours, so the transferable
    part is the value *relative to the elemental references* (``limits_wrt_el_refs``, or
    ``limits - elemental_refs``); it is added to our elemental references ``mu_ref``.
    """
    limits = d.get("limits_wrt_el_refs")
    how = "limits_wrt_el_refs"
    if limits is None:
        if "elemental_refs" not in d:
            raise InvdesignError("doped-format file needs limits_wrt_el_refs or elemental_refs with limits", source=source)
        refs = _check_mu(d["elemental_refs"], source)
        limits = {}
        for name, lim in d["limits"].items():
            lim = _check_mu(lim, source)
            missing = [e for e in lim if e not in refs]
            if missing:
                raise InvdesignError(f"elemental_refs has no {missing[0]}", source=source)
            limits[name] = {e: v - refs[e] for e, v in lim.items()}
        how = "limits - elemental_refs"
    if not isinstance(limits, dict) or not limits:
        raise InvdesignError("doped-format file holds no limits", source=source)
    if limit is None:
        if len(limits) > 1:
            raise InvdesignError(f"doped-format file holds {len(limits)} limits; choose one as FILE.json#LIMIT "
                                 f"({', '.join(limits)})", source=source)
        limit = next(iter(limits))
    if limit not in limits:
        raise InvdesignError(f"no limit {limit!r} (have {', '.join(limits)})", source=source)
    rel = _check_mu(limits[limit], source)
    ref = ChemicalPotentials.reference(host).mu
    unknown = [e for e in rel if e not in ref]
    if unknown:
        raise InvdesignError(f"element {unknown[0]} has no reference in this model ({', '.join(ref)})", source=source)
    missing = [e for e in ref if e not in rel]
    if missing:
        raise InvdesignError(f"limit {limit!r} gives no chemical potential for {missing[0]} (needed: {', '.join(ref)})", source=source)
    mu = {e: ref[e] + rel[e] for e in rel}
    return ChemicalPotentials(mu, f"{source}#{limit}", f"doped limit {limit!r}: {how} added to the model's elemental mu_ref")


def check_mu_spec(spec: str | None) -> None:
    """Refuse (one line, before any work) a ``--mu`` that no host takes: not ``reference``, ``<El>-rich`` or
    an existing ``FILE.json`` (which host's limits apply is decided once the host is known: :func:`read_mu`)."""
    if spec is None or spec == "reference" or re.fullmatch(r"[A-Z][a-z]?(-[A-Z][a-z]?)*-rich", spec):
        return
    path = spec.partition("#")[0]
    if Path(path).suffix.lower() != ".json":
        raise InvdesignError(f"--mu must be reference, a limit such as S-rich or Ga-rich, or a FILE.json, not {spec!r}")
    if not Path(path).is_file():
        raise InvdesignError("chemical-potential file not found", source=path)


def read_mu(spec: str | Path | dict | ChemicalPotentials | None, host=None) -> ChemicalPotentials:
    """Chemical potentials on ``host`` (a HostLattice or a packaged host's name; None: MoS2) from ``"reference"``,
    a named limit of that host (``"S-rich"``, ``"Mo-rich"`` on MoS2; ``"Ga-rich"``, ``"Se-rich"`` on GaSe; ...:
    :func:`host_reference`), ``FILE.json`` (``[#LIMIT]``), a dict or None.

    FILE.json is either ``{"Mo": .., "S": .., "W": .., "Se": ..}`` (eV/atom, absolute, in the model's
    reference; every element the host's configurations hold) or doped's chemical-potential format (see
    :func:`_from_doped`).
    """
    if spec is None:
        return ChemicalPotentials.reference(host)
    if isinstance(spec, ChemicalPotentials):
        return spec
    if isinstance(spec, dict):
        return ChemicalPotentials(_check_mu(spec, "mu"), "mu")
    text = str(spec)
    ref = host_reference(host)
    if text == "reference":
        return ChemicalPotentials.reference(host)
    if text in ref["limits"]:
        return ChemicalPotentials(dict(ref["limits"][text]), text, ref["limits_rule"])
    path, _, limit = text.partition("#")
    p = Path(path)
    if p.suffix.lower() != ".json":
        names = ", ".join(ref["limits"])
        raise InvdesignError(f"--mu must be reference, {names} or a FILE.json on {ref['host']}, not {text!r}"
                             + (f" ({text} is a limit of MoS2)" if text in load_reference()["limits"] else ""))
    if not p.is_file():
        raise InvdesignError("chemical-potential file not found", source=path)
    try:
        d = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvdesignError(f"cannot read JSON ({type(exc).__name__})", source=path) from None
    if not isinstance(d, dict):
        raise InvdesignError("expected a JSON object of element -> eV/atom", source=path)
    for old_key, new_key in (("facets", "limits"), ("facets_wrt_el_refs", "limits_wrt_el_refs")):  # doped < 2
        if old_key in d and new_key not in d:
            d[new_key] = d.pop(old_key)
    if "limits" in d or "limits_wrt_el_refs" in d:
        return _from_doped(d, path, limit or None, host)
    if limit:
        raise InvdesignError("#LIMIT is only for doped-format files", source=path)
    mu = _check_mu(d, path)
    unknown = [e for e in mu if e not in ref["mu_ref"]]
    if unknown:
        raise InvdesignError(f"element {unknown[0]} has no reference on {ref['host']} ({', '.join(ref['mu_ref'])})", source=path)
    missing = [e for e in ref["mu_ref"] if e not in mu]
    if missing:
        raise InvdesignError(f"no chemical potential for {missing[0]} (give all of {', '.join(ref['mu_ref'])}, eV/atom)", source=path)
    return ChemicalPotentials(mu, path, "absolute eV/atom in the model's reference")


def shift_per_cell(occ: np.ndarray, host: HostLattice, mu: ChemicalPotentials) -> np.ndarray:
    """``(N,)`` eV per cell added to ``E_f(mu_ref)`` to get ``E_f(mu)``: ``-sum_El dn_El (mu_El - mu_ref_El)``."""
    d = dn_matrix(occ, host).astype(float)
    if np.all(mu.delta(host) == 0):
        return np.zeros(len(d))
    return -(d @ mu.delta(host))


def n_defect_sites(occ: np.ndarray, host: HostLattice) -> np.ndarray:
    """``(N,)`` defect sites per configuration (pristine counts as 1, as the model's per-site energy does)."""
    occ = np.atleast_2d(np.asarray(occ))
    return np.maximum((occ != host.host_code[None]).sum(axis=1), 1)


def rereference_per_site(fe_per_site: np.ndarray, occ: np.ndarray, host: HostLattice, mu: ChemicalPotentials) -> np.ndarray:
    """``(N,)`` formation energy per defect site under ``mu`` from the values under ``mu_ref`` (eV), exactly."""
    return np.asarray(fe_per_site, float) + shift_per_cell(occ, host, mu) / n_defect_sites(occ, host)


def coefficients(fe_per_site: float, occ: np.ndarray, host: HostLattice) -> dict:
    """Formation energy per cell as a linear function of the chemical potentials.

    ``E_f(mu) = constant + sum_El coeff_El mu_El`` with ``coeff_El = -dn_El`` and
    ``constant = E_f(mu_ref) + sum_El dn_El mu_ref_El`` (eV; per site: divide by ``n_defects``).
    """
    occ = np.asarray(occ)
    ref = ChemicalPotentials.reference(host).mu
    d = dn_matrix(occ, host)[0]
    n = int(n_defect_sites(occ, host)[0])
    els = elements(host)
    e_cell = float(fe_per_site) * n
    return {
        "formula": "E_f(mu) = constant + sum_El coefficients[El] * mu[El]  (eV per cell; per site: / n_defects)",
        "constant_eV": e_cell + float(sum(int(d[j]) * ref[e] for j, e in enumerate(els))),
        "coefficients": {e: -int(d[j]) for j, e in enumerate(els)},
        "n_defects": n,
    }


class ReferencedModel:
    """A model whose formation-energy predictions stand on chemical potentials ``mu`` (std unchanged).

    Everything else (embedding, host, flow, training data) is the wrapped model's, so a design run
    screens, checks and ranks windows on the re-referenced values.
    """

    def __init__(self, model, mu: ChemicalPotentials) -> None:
        self._base = model
        self.mu = mu

    def __getattr__(self, name):
        return getattr(self._base, name)

    @property
    def base(self):
        return self._base

    def predict(self, occ: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std ``(N, 2)`` in eV; the formation-energy column under ``self.mu``."""
        mean, std = self._base.predict(occ)
        mean = np.array(mean, dtype=float, copy=True)
        j = list(self._base.targets).index(FE)
        mean[:, j] = rereference_per_site(mean[:, j], occ, self._base.host, self.mu)
        return mean, std

    def predict_with_moment(self, occ: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict` with the base model's ``total_mag`` column (Bohr magnetons per cell; not re-referenced):
        only where the base model predicts the moment (spin-polarised host models)."""
        if not hasattr(self._base, "predict_with_moment"):
            raise AttributeError("predict_with_moment")
        mean, std = self._base.predict_with_moment(occ)
        mean = np.array(mean, dtype=float, copy=True)
        j = list(self._base.targets).index(FE)
        mean[:, j] = rereference_per_site(mean[:, j], occ, self._base.host, self.mu)
        return mean, std


def type_shift_per_cell(host: HostLattice, mu: ChemicalPotentials) -> np.ndarray:
    """``(T,)`` eV per cell each defect of ``host.defect_types`` adds to ``E_f`` under ``mu`` (vs ``mu_ref``)."""
    from invdesign.lattice.host import VACANCY

    els = elements(host)
    d = np.zeros((len(host.defect_types), len(els)))
    for t, (sub, code) in enumerate(host.defect_types):
        d[t, els.index(host.sublattices[sub])] -= 1
        if host.species[code] != VACANCY:
            d[t, els.index(host.species[code])] += 1
    return -(d @ mu.delta(host))


class _ReferencedFlow:
    """A conditional flow whose context ``y`` (formation energy) stands on ``mu``.

    The flow was trained on ``y`` under ``mu_ref``; its context prior is shifted per composition to
    ``mu`` (so windows select the right training contexts) and contexts are shifted back before the
    flow is conditioned on them. Needs a composition-conditioned flow (counts per defect type).
    """

    def __init__(self, flow, host: HostLattice, mu: ChemicalPotentials, j: int) -> None:
        from invdesign.generate.flow import ContextPrior

        if flow.n_counts != len(host.defect_types):
            raise InvdesignError("--mu with flow sampling needs a flow conditioned on the composition "
                                 "(this one sees total defect counts only); retrain it with `invdesign train`")
        self._base, self._j = flow, j
        self._per_type = type_shift_per_cell(host, mu)
        p = flow.prior
        y = p.y.copy()
        y[:, j] += self._shift(p.counts)
        self.prior = ContextPrior(y, p.counts, p.bandwidth)

    def _shift(self, counts: np.ndarray) -> np.ndarray:
        c = np.asarray(counts, dtype=float).reshape(-1, len(self._per_type))
        return (c @ self._per_type) / np.maximum(c.sum(axis=1), 1.0)

    def __getattr__(self, name):
        return getattr(self._base, name)

    def sample(self, y: np.ndarray, counts: np.ndarray, seed: int = 0, temperature: float = 1.0) -> np.ndarray:
        y = np.array(y, dtype=float, copy=True)
        y[:, self._j] -= self._shift(counts)
        return self._base.sample(y, counts, seed=seed, temperature=temperature)

    def sample_window(self, window, n: int, allowed=None, seed: int = 0, temperature: float = 1.0):
        rng = np.random.default_rng(seed)
        y, c = self.prior.sample(np.asarray(window, dtype=np.float64), n, allowed, rng)
        return self.sample(y, c, seed=seed + 1, temperature=temperature), y, c


def with_mu(model, mu: ChemicalPotentials | None):
    """``model`` itself for the reference (or None), else a :class:`ReferencedModel`.

    A model with a conditional flow gets a flow whose window sampling stands on ``mu`` too
    (registered where :func:`invdesign.generate.flow.get_flow` finds it).
    """
    if mu is None or mu.name == "reference":
        return model
    mu.delta(model.host)  # every element the host can hold needs a value (one clear error, before any work)
    wrapped = ReferencedModel(model, mu)
    if "flow" in (getattr(model, "extras", None) or {}):
        from invdesign.generate.flow import _FLOW_CACHE, get_flow

        flow = _ReferencedFlow(get_flow(model), model.host, mu, list(model.targets).index(FE))
        _FLOW_CACHE[id(wrapped)] = (wrapped, flow)
    return wrapped


def reference_summary(mu: ChemicalPotentials | None = None, host=None) -> dict:
    """What ``summary.json`` records: the reference of ``host``'s model (None: MoS2), its limits and the mu used."""
    r = host_reference(host)
    mu = mu or ChemicalPotentials.reference(host)
    return {
        "host": r["host"],
        "reference": r["reference"],
        "units": "eV per atom",
        "mu_ref": r["mu_ref"],
        "residual_meV": r["residual_meV"],
        "limits": r["limits"],
        "limits_rule": r["limits_rule"],
        "used": mu.as_dict(),
        "convention": "E_f(mu') = E_f(mu_ref) - sum_El dn_El (mu'_El - mu_ref_El) per cell; per site: / n_defects",
        "provenance": r["provenance"],
    }
