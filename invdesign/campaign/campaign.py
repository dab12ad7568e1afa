"""The campaign loop: suggest a batch, evaluate it with an oracle, observe, repeat.

A :class:`Campaign` lives in one SQLite file (:mod:`invdesign.campaign.store`) holding its
config (target, search space, oracle spec, batch size, seed, budget), the candidate set with
its features (and the model's predictions as GP prior mean), every suggestion and every
observation. Each ``suggest`` and each ``observe`` is one transaction, so a campaign killed
at any moment resumes from its last commit; ``suggest`` holds the write lock while it computes,
so two processes never suggest the same configuration, and a suggestion depends only on the
stored state (observations sorted by canonical key, pending points, ``seed + step``): a
resumed campaign makes the same suggestions it would have made without the interruption.

Units: all target values, means and stds are eV.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from invdesign.campaign.store import Store
from invdesign.campaign.target import Target
from invdesign.data.dataset import TARGETS, Dataset
from invdesign.errors import InvdesignError
from invdesign.lattice.host import HostLattice

ACQUISITIONS = ("auto", "pwin", "ei", "random")
CODE_ORACLES = ("python", "ase")  # oracle kinds that import a module: never run from a stored spec alone
MAX_COUNT = 10**9  # batch, budget, until-hits, generate: beyond this no campaign ends


def host_from_spec(spec: dict) -> HostLattice:
    """Host from the stored ``{"host": ..., "supercell": ...}`` (``builtin:MoS2`` 8x8 is shared)."""
    h, sc = spec.get("host", "builtin:MoS2"), spec.get("supercell", "8x8")
    if h == "builtin:MoS2" and sc in ("8x8", "8x8x1"):
        return HostLattice.default()
    from invdesign.limits import check_supercell

    check_supercell(h, sc)
    if str(h).endswith(".toml"):
        return HostLattice.from_config(h)
    return HostLattice.from_unit_cell(h, sc)


def absolute_spec(spec: str | None, base: Path | None = None) -> str | None:
    """An oracle spec with its file made absolute (``table:F.csv`` -> ``table:/abs/F.csv``), so a campaign
    resumes from any folder. A relative file that does not exist from here is looked up next to ``base``
    (the database's folder: campaigns written before paths were stored absolute)."""
    if not spec:
        return spec
    kind, sep, arg = spec.partition(":")
    if kind not in ("table", "chgnet", "surrogate") or not arg:
        return spec
    return f"{kind}{sep}{absolute_path(arg, base)}"


def absolute_path(p: str | Path | None, base: Path | None = None) -> str | None:
    """``p`` made absolute; a relative ``p`` missing here but present under ``base`` resolves there."""
    if p is None or str(p).startswith("builtin:"):
        return None if p is None else str(p)
    q = Path(p).expanduser()
    if not q.is_absolute() and not q.exists() and base is not None and (base / q).exists():
        q = base / q
    return str(q.absolute())


def _host_request(host: str | None, supercell: str | None, pool) -> tuple[str, str]:
    """The stored host spec ``(host, supercell)``: a packaged host named by ``host`` (``GaSe`` -> ``builtin:GaSe``
    in its release cell unless ``supercell``), another ``host`` as given (8x8 by default), or with neither the
    packaged host recognised from the pool's first structure, else 8x8 MoS2."""
    from invdesign.lattice.hosts import PACKAGED, host_spec_of
    from invdesign.lattice.hosts import spec as packaged_spec

    names = {s.name.lower() for s in PACKAGED} | {a for s in PACKAGED for a in s.aliases}
    if host is not None:
        h = str(host)
        if h.removeprefix("builtin:").lower() in names and not Path(h).exists():
            s = packaged_spec(h)
            return f"builtin:{s.name}", supercell or "x".join(map(str, s.supercell))
        return h, supercell or "8x8"
    if supercell is None and pool is not None:
        if isinstance(pool, Dataset):
            found = pool.host
        else:
            from invdesign.data.dataset import recognised_host

            found = recognised_host([p for p in pool if Path(p).exists()])
        s = host_spec_of(found) if found is not None else None
        if s is not None:
            return f"builtin:{s.name}", "x".join(str(int(v)) for v in np.diag(found.matrix)[:2])
    return "builtin:MoS2", supercell or "8x8"


def _featurizer(config: dict, host: HostLattice):
    from invdesign.campaign.features import ModelFeatures, PairFeatures

    if config["features"] == "pairs":
        return PairFeatures(host)
    try:
        from invdesign.model import load_model
    except ImportError:
        raise InvdesignError("no model is available in this install; use features='pairs' (--features pairs)") from None
    from invdesign.predict.host_serving import packaged_predictor
    from invdesign.predict.transfer import on_host

    if config.get("model") is None:  # a packaged host other than MoS2: its packaged host model's descriptors and predictions
        served = packaged_predictor(host)
        if served is not None:
            return ModelFeatures(served)
    elif str(config["model"]).lower().endswith(".npz"):  # a host model file (invdesign train --out F.npz)
        from invdesign.predict.host_serving import load_host_predictor

        served = load_host_predictor(config["model"])
        if served.host.fingerprint != host.fingerprint:
            raise InvdesignError(f"the host model is for {served.host.name}, not the campaign's {host.name}",
                                 source=str(config["model"]))
        return ModelFeatures(served)
    return ModelFeatures(on_host(load_model(config.get("model")), host))


class Campaign:
    """A Bayesian-optimisation campaign over defect configurations, persisted in SQLite.

    Create one with :meth:`create`, reopen it with :meth:`open`; then :meth:`suggest`,
    :meth:`observe` / :meth:`observe_csv`, :meth:`run`, :meth:`status`, :meth:`report`.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        try:
            self.config, self.target, self.host = _checked_config(store)
        except BaseException:
            store.close()
            raise
        store.n_sites = self.host.n_sites
        store.site_codes = _site_codes(self.host)
        self._cand: tuple[pd.DataFrame, np.ndarray] | None = None
        self._feat = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        db: str | Path,
        target: Target,
        pool: Sequence[str | Path] | Dataset | None = None,
        *,
        max_defects: int = 3,
        min_defects: int = 1,
        defect_types: Sequence[str] | None = None,
        host: str | None = None,
        supercell: str | None = None,
        oracle: str | None = None,
        batch: int = 5,
        budget: int | None = None,
        until_hits: int | None = None,
        seed: int = 0,
        model: str | None = None,
        features: str = "model",
        warm_start: bool = True,
        acquisition: str = "auto",
        executor: str = "auto",
        generate: int | None = None,
        allow_failures: bool = False,
        features_from: str | Path | None = None,
    ) -> Campaign:
        """Create a campaign file.

        Args:
            db: the SQLite file to create (must not exist).
            target: the goal (:class:`~invdesign.campaign.target.Target`).
            pool: candidate structures (STRUCTURES paths, or a Dataset); None: every symmetry-distinct
                configuration with ``min_defects..max_defects`` defects of ``defect_types`` (enumeration).
            host, supercell: a packaged host (``"GaSe"``, ``"builtin:BN"``; its release cell unless ``supercell``),
                a unit-cell CIF or a host TOML; None: the packaged host recognised from the pool's structures,
                else 8x8 MoS2.
            oracle: spec stored for ``run`` (``table:F.csv``, ``surrogate``, ``chgnet:MU.json``); None
                when observations come from outside (``observe``) or a Python oracle is passed to ``run``.
            batch: suggestions per step; budget: most evaluations; until_hits: stop after this many hits.
            model: model path (None: packaged default) for ``features="model"``; ``features="pairs"``
                uses exact pair features and no model.
            warm_start: use the model's predictions as the GP prior mean.
            acquisition: ``pwin`` (window), ``ei`` (single objective), ``random``, or ``auto``.
            generate: instead of a pool or the enumeration, ``generate`` candidates for the window from
                the model's conditional flow + decoder (:func:`invdesign.generate.design.design`, flow mode).
            allow_failures: validate a table oracle without refusing bad labels (see :meth:`run`).
            features_from: another campaign file over the same candidate set (same canonical keys in the
                same order, same ``features`` and ``model``): its features and prior are copied instead of
                recomputed (embedding thousands of high-density candidates takes minutes); refused
                when the candidates or settings differ.
        """
        from invdesign.campaign.executors import check_spec
        from invdesign.campaign.oracles import make_oracle

        db = Path(db)
        if db.exists() and (db.is_symlink() or not db.is_file()):
            raise InvdesignError("exists and is not a regular file; choose another --db", source=str(db))
        if db.exists() and db.stat().st_size > 0 and not Store.blank(db):
            try:
                Store.open(db, readonly=True).close()
            except InvdesignError:
                raise InvdesignError("a file that is not a campaign database is here (it is left as it is); choose "
                                     "another --db", source=str(db)) from None
            raise InvdesignError("a campaign database already exists here (use `run` to resume it)", source=str(db))
        # every path is stored absolute: the campaign resumes from any working folder
        oracle = absolute_spec(oracle) if isinstance(oracle, str) else oracle
        model = absolute_path(model) if isinstance(model, (str, Path)) else model
        host, supercell = _host_request(host, supercell, pool)
        if not str(host).startswith("builtin:"):
            host = absolute_path(host)
        if pool is not None and not isinstance(pool, Dataset):
            pool = [absolute_path(p) for p in pool]
        if batch < 1:
            raise InvdesignError("batch must be at least 1")
        if budget is not None and budget < 1:
            raise InvdesignError("budget must be at least 1")
        from invdesign.limits import check_number

        check_number("--batch", batch, 1, MAX_COUNT, integer=True)
        for name, v in (("--budget", budget), ("--until-hits", until_hits), ("--generate", generate)):
            if v is not None:
                check_number(name, v, 1, MAX_COUNT, integer=True)
        check_number("--seed", seed, 0, 2**63 - 1, integer=True)
        check_number("--max-defects", max_defects, 0, 10**6, integer=True)
        check_number("--min-defects", min_defects, 0, 10**6, integer=True)
        if acquisition not in ACQUISITIONS:
            raise InvdesignError(f"unknown acquisition {acquisition!r} ({', '.join(ACQUISITIONS)})")
        if acquisition == "pwin" and target.objective:
            raise InvdesignError("acquisition pwin needs a target window; use ei for --minimise/--maximise")
        if acquisition == "ei" and not target.objective:
            raise InvdesignError("acquisition ei needs --minimise or --maximise; use pwin for a window")
        if features not in ("model", "pairs"):
            raise InvdesignError(f"features must be 'model' or 'pairs', not {features!r}")
        check_spec(executor)
        host_spec = {"host": host, "supercell": supercell}
        h = host_from_spec(host_spec)
        checked_oracle = None
        if oracle is not None:  # validate now: a bad spec or label is an error before anything is written
            checked_oracle = make_oracle(oracle, h, needed=target.names, allow_failures=allow_failures)
        if generate is not None:
            if pool is not None:
                raise InvdesignError("give --pool or --generate (candidates from the flow), not both")
            if target.objective:
                raise InvdesignError("flow candidates need a target window (the flow samples for a window)")
            from invdesign.model import load_model

            trained = load_model(model).host
            if h.fingerprint != trained.fingerprint:
                raise InvdesignError(f"--generate samples the flow trained on {trained.name}, not on {h.name}; give a pool "
                                     "or let the campaign enumerate")
            cands, occ, source_desc = _flow_candidates(target, generate, model, max_defects, min_defects, defect_types, seed)
        else:
            cands, occ, source_desc = _candidate_set(h, pool, max_defects, min_defects, defect_types)
        _check_coverage(checked_oracle, cands, allow_failures)
        config = {
            "target": target.to_dict(), "host": host_spec, "space": source_desc, "oracle": oracle,
            "batch": int(batch), "budget": budget, "until_hits": until_hits, "seed": int(seed),
            "model": model, "features": features, "warm_start": bool(warm_start and features == "model"),
            "acquisition": acquisition, "executor": executor, "version": 1,
        }
        if features_from is not None:
            arrays = _features_from(Path(features_from), config, cands)
        else:
            feat = _featurizer(config, h)
            from invdesign.progress import task

            arrays = {}
            with task(f"featurising {len(occ)} candidates", total=1) as advance:
                arrays["features"] = np.asarray(feat(occ), dtype=np.float64)
                if config["warm_start"]:
                    pm, ps = feat.prior(occ)
                    arrays["prior_mean"], arrays["prior_std"] = pm, ps
                advance()
        store = Store.create(db, config, cands, occ, arrays)
        return cls(store)

    @classmethod
    def open(cls, db: str | Path, readonly: bool = False) -> Campaign:
        """Open an existing campaign file (``readonly``: the file is never modified, for status and reports)."""
        return cls(Store.open(db, readonly=readonly))

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Campaign:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ state
    @property
    def candidates(self) -> tuple[pd.DataFrame, np.ndarray]:
        """Candidate table (``idx, id, canonical_key, source``) and ``(C, n_sites)`` occupancies."""
        if self._cand is None:
            df, occ = self.store.candidates()
            _check_keys(self.store, list(df["canonical_key"]), occ, self.host, "candidate", list(df["idx"]))
            if not df["canonical_key"].is_unique or not df["id"].is_unique:
                raise self.store.damaged("its candidates repeat an id or a canonical key")
            self._cand = df, occ
        return self._cand

    def _arrays(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Features ``(C, d)`` and the prior mean and std ``(C, 2)`` (or None), checked against the candidates."""
        C = len(self.candidates[0])
        X = self.store.array("features")
        if X is None or X.ndim != 2 or X.shape[0] != C or X.shape[1] < 1:
            raise self.store.damaged(f"its features are {'absent' if X is None else f'of shape {X.shape}'}, not "
                                     f"({C}, d) for its {C} candidates")
        pm, ps = self.store.array("prior_mean"), self.store.array("prior_std")
        for name, a in (("prior_mean", pm), ("prior_std", ps)):
            if a is not None and a.shape != (C, len(TARGETS)):
                raise self.store.damaged(f"its {name} is of shape {a.shape}, not ({C}, {len(TARGETS)})")
        if (pm is None) != (ps is None):
            raise self.store.damaged("it holds a prior mean without a prior std or the reverse")
        if ps is not None and (ps < 0).any():
            raise self.store.damaged("its prior_std holds negative values")
        return X, pm, ps

    def observation_occ(self) -> np.ndarray:
        """``(n, n_sites)`` occupancies of the observations in evaluation order (each checked against its key)."""
        occ = self.store.observation_occ()
        stored = self.store.observations()
        keys = list(stored["canonical_key"])
        if len(keys) != len(occ):
            raise self.store.damaged("its observations changed while read")
        _check_keys(self.store, keys, occ, self.host, "observation", list(stored["seq"]))
        return occ

    def suggestions(self, status: str | None = None) -> pd.DataFrame:
        """The stored suggestions (validated: each names a candidate of this campaign, at its index)."""
        sug = self.store.suggestions(status)
        cands, _ = self.candidates
        by_key = dict(zip(cands["canonical_key"], range(len(cands))))
        for sid, key, cid, idx in zip(sug["sid"], sug["canonical_key"], sug["id"], sug["idx"]):
            i = by_key.get(key)
            if i is None or cands["id"].iat[i] != cid or (idx is not None and not pd.isna(idx) and int(idx) != i):
                raise self.store.damaged(f"suggestion {sid}: {str(cid)[:40]} ({str(key)[:60]}) is not a candidate of "
                                         "this campaign at its index")
        return sug

    def featurizer(self):
        if self._feat is None:
            self._feat = _featurizer(self.config, self.host)
        return self._feat

    def observations(self) -> pd.DataFrame:
        """Observations in evaluation order, with a ``hit`` column and a ``score`` (larger is better)."""
        obs = self.store.observations()
        _check_keys(self.store, list(obs["canonical_key"]), None, self.host, "observation", list(obs["seq"]))
        y = obs[list(TARGETS)].to_numpy(float)
        obs["hit"] = self.target.hits(y)
        obs["score"] = self.target.score(y)
        return obs

    def validate(self) -> None:
        """Read and check every stored value that :meth:`suggest` and :meth:`run` use (config, step counter,
        candidates, features and prior, observations with their occupancies, suggestions), so that a command
        that only reads (status, report) refuses a database those would refuse, in the same one line."""
        self.store.step()
        self._arrays()
        self.observation_occ()
        self.observations()
        self.suggestions()

    def status(self) -> dict:
        """Counts and the best observation: ``evaluations, hits, pending, failed, steps, best, ...``."""
        counts = self.store.counts()
        obs = self.observations()
        best = None
        if len(obs) and obs["score"].notna().any():
            b = obs.loc[obs["score"].idxmax()]
            best = {"id": b["id"], "canonical_key": b["canonical_key"], **{t: _f(b[t]) for t in TARGETS},
                    "score": _f(b["score"]), "evaluation": int(b["seq"])}
        cands, _ = self.candidates
        hits = int(obs["hit"].sum())
        until = self.config.get("until_hits")
        budget = self.config.get("budget")
        return {
            "evaluations": counts["evaluations"], "hits": hits, "pending": counts["pending"],
            "failed": counts["failed"], "suggested": counts["suggested"], "steps": counts["step"],
            "candidates": len(cands), "target": self.target.describe(), "oracle": self.config.get("oracle"),
            "batch": self.config["batch"], "budget": budget, "until_hits": until,
            "done": bool((until is not None and hits >= until)
                         or (budget is not None and counts["evaluations"] + counts["failed"] >= budget)),
            "evaluations_to_hits": [int(s) for s in obs.loc[obs["hit"], "seq"]],
            "hit_ids": [str(i) for i in obs.loc[obs["hit"], "id"]],
            "best": best,
            "failures": self.store.failures(),
        }

    # ------------------------------------------------------------------ suggest
    def suggest(self, n: int | None = None, on_batch=None) -> pd.DataFrame:
        """Choose the next batch, record it as pending, and return it.

        Args:
            n: batch size (default: the campaign's); capped by the budget left
                (``budget - evaluations - pending``) and by the candidates left.
            on_batch: called with the batch before it is recorded (inside the transaction), e.g. to write
                the batch's files: when it raises (a full disk), nothing is recorded.

        Returns:
            DataFrame ``step, id, canonical_key, acquisition, <target>_mean, <target>_std`` (eV);
            empty when nothing is left to suggest.
        """
        q = int(n or self.config["batch"])
        if q < 1:
            raise InvdesignError("batch must be at least 1")
        cands, occ = self.candidates
        with self.store.transaction() as c:
            step = self.store.step(c) + 1
            obs_rows = self.store.observation_rows(c)
            _check_keys(self.store, [r[0] for r in obs_rows], None, self.host, "observation")
            stored = self.suggestions()  # read inside this transaction
            sug = list(zip(stored["canonical_key"], stored["status"]))
            budget = self.config.get("budget")
            n_spent = sum(s in ("pending", "failed") for _, s in sug)  # failed evaluations count against the budget
            if budget is not None:
                q = min(q, int(budget) - len(obs_rows) - n_spent)
            taken = {k for k, _ in sug} | {r[0] for r in obs_rows}
            allowed = ~cands["canonical_key"].isin(taken).to_numpy()
            if q <= 0 or not allowed.any():
                return _empty_suggestions()
            pending_keys = [k for k, s in sug if s == "pending"]
            chosen, acq, mean, std = self._choose(q, step, obs_rows, pending_keys, allowed)
            rows = []
            for i, a in zip(chosen, acq):
                r = {"idx": int(i), "id": str(cands["id"].iat[i]), "canonical_key": str(cands["canonical_key"].iat[i]),
                     "acquisition": float(a)}
                for j, t in enumerate(TARGETS):
                    r[f"{t}_mean"], r[f"{t}_std"] = float(mean[i, j]), float(std[i, j])
                rows.append(r)
            self.store.add_suggestions(c, step, rows)
            out = pd.DataFrame(rows).drop(columns=["idx"])
            out.insert(0, "step", step)
            if on_batch is not None:
                on_batch(out)
        return out

    def _choose(self, q: int, step: int, obs_rows: list, pending_keys: list[str], allowed: np.ndarray):
        """Pick ``q`` candidate indices. Returns ``(idx, acquisition, mean (C, 2), std (C, 2))``."""
        from invdesign.campaign.acquisition import kriging_believer_ei, log_p_window, top_q
        from invdesign.campaign.gp import MIN_POINTS, posterior

        cands, occ = self.candidates
        C = len(cands)
        rng = np.random.default_rng([int(self.config["seed"]), step])
        X, pm, ps = self._arrays()
        acq_kind = self.config["acquisition"]
        if acq_kind == "auto":
            acq_kind = "ei" if self.target.objective else "pwin"
        nan = np.full((C, len(TARGETS)), np.nan)
        if acq_kind == "random":
            return rng.permutation(np.flatnonzero(allowed))[:q], np.zeros(q), nan, nan
        # training data, sorted by canonical key so the fit never depends on observation order
        obs_rows = sorted(obs_rows, key=lambda r: r[0])
        keys = [r[0] for r in obs_rows]
        y = np.array([[np.nan if v is None else v for v in r[1 : 1 + len(TARGETS)]] for r in obs_rows], float).reshape(-1, len(TARGETS))
        X_tr, p_tr = self._train_features(keys, [r[-1] for r in obs_rows], X, pm)
        bounds = np.stack([X.min(axis=0), X.max(axis=0)])
        used = [TARGETS.index(t) for t in self.target.names]
        enough = all(np.isfinite(y[:, j]).sum() >= MIN_POINTS for j in used) if len(y) else False
        if not enough and pm is None:  # cold start without a prior: random search
            return rng.permutation(np.flatnonzero(allowed))[:q], np.zeros(q), nan, nan
        seed = int(self.config["seed"]) + step
        mean, std, gps = posterior(X_tr, y, X, bounds, p_tr, pm, ps, seed=seed)
        if acq_kind == "pwin":
            a = log_p_window(mean, std, self.target)
            idx = top_q(a, q, allowed)
            return idx, np.exp(a[idx]), mean, std
        # single objective: log EI with Kriging-believer batches
        name, sense = self.target.objective
        j = TARGETS.index(name)
        maximise = sense == "max"
        seen = y[np.isfinite(y[:, j]), j]
        gp = gps[j]
        if gp is None or not len(seen):  # prior only: rank by the prior mean
            score = mean[:, j] if maximise else -mean[:, j]
            idx = top_q(score, q, allowed)
            return idx, score[idx], mean, std
        best = float(seen.max() if maximise else seen.min())
        key_to_idx = {k: i for i, k in enumerate(cands["canonical_key"])}
        pend = [key_to_idx[k] for k in pending_keys if k in key_to_idx]
        idx, a = kriging_believer_ei(gp, None if pm is None else pm[:, j], X, q, allowed, best, maximise,
                                     X[pend] if pend else None)
        return idx, a, mean, std

    def _train_features(self, keys: list[str], occ_blobs: list[bytes], X: np.ndarray, pm: np.ndarray | None):
        """Features ``(n, d)`` and prior means ``(n, 2)`` of observed configurations (off-set ones featurised)."""
        cands, _ = self.candidates
        key_to_idx = {k: i for i, k in enumerate(cands["canonical_key"])}
        idx = np.array([key_to_idx.get(k, -1) for k in keys], dtype=np.int64)
        X_tr = np.zeros((len(keys), X.shape[1]))
        p_tr = None if pm is None else np.zeros((len(keys), pm.shape[1]))
        inside = idx >= 0
        X_tr[inside] = X[idx[inside]]
        if p_tr is not None:
            p_tr[inside] = pm[idx[inside]]
        if (~inside).any():
            off = np.stack([np.frombuffer(occ_blobs[i], dtype=np.uint8) for i in np.flatnonzero(~inside)])
            feat = self.featurizer()
            X_tr[~inside] = feat(off)
            if p_tr is not None:
                p_tr[~inside] = feat.prior(off)[0]
        return X_tr, p_tr

    # ------------------------------------------------------------------ observe
    def observe(self, records: pd.DataFrame, source: str = "api", physical: bool = True) -> tuple[int, int]:
        """Record observations (one transaction; idempotent by canonical key).

        Args:
            records: DataFrame with ``id`` and/or ``canonical_key`` and one or more target columns
                (eV; blank/NaN = not measured). Rows where every target is blank are skipped.
            source: a label stored with each row (e.g. the CSV path or the oracle).
            physical: refuse values no measurement gives (a negative gap, beyond +-1000 eV); :meth:`evaluate_pending`
                checks the targeted ones itself (marking them failed) and passes False.

        Returns:
            ``(new, repeated)`` numbers of observations.
        """
        from invdesign.lattice.canonical import canonical_keys, key_to_occ

        df = records.copy()
        if "_id" in df.columns and "id" not in df.columns:
            df = df.rename(columns={"_id": "id"})
        if "id" not in df.columns and "canonical_key" not in df.columns:
            raise InvdesignError("observations need an 'id' or a 'canonical_key' column", source=source)
        present = [t for t in TARGETS if t in df.columns]
        if not present:
            raise InvdesignError(f"observations need at least one of the columns {', '.join(TARGETS)}", source=source)
        from invdesign.campaign.oracles import check_labels

        df = check_labels(df, present, source, physical=physical)  # text and +-inf refused (file, line, column); blank = not measured
        for t in TARGETS:
            if t not in df.columns:
                df[t] = np.nan
        cands, occ = self.candidates
        by_id = dict(zip(cands["id"], range(len(cands))))
        by_key = dict(zip(cands["canonical_key"], range(len(cands))))
        sug = self.suggestions()
        sug_by_id = dict(zip(sug["id"], sug["canonical_key"]))
        rows = []
        self.last_skipped = 0
        for r in df.itertuples(index=False):
            rd = r._asdict()
            y = [float(rd[t]) for t in TARGETS]
            if not np.isfinite(y).any():
                self.last_skipped += 1
                continue
            cid = None if pd.isna(rd.get("id", None)) else str(rd.get("id"))
            key = None if pd.isna(rd.get("canonical_key", None)) else str(rd.get("canonical_key"))
            if key is None:
                if cid in by_id:
                    key = cands["canonical_key"].iat[by_id[cid]]
                elif cid in sug_by_id:
                    key = sug_by_id[cid]
                else:
                    raise InvdesignError(f"unknown id {cid!r}: not a candidate of this campaign (give its canonical_key)", source=source)
            if key in by_key:
                o = occ[by_key[key]]
                if cid is None:
                    cid = str(cands["id"].iat[by_key[key]])
                elif cid in by_id and cands["canonical_key"].iat[by_id[cid]] != key:
                    raise InvdesignError(f"id {cid!r} and canonical_key {key!r} name different configurations", source=source)
            else:
                o = key_to_occ(key, self.host)
                if canonical_keys(o[None], self.host)[0] != key:
                    raise InvdesignError(f"{key!r} is not a canonical key", source=source)
                cid = cid or key
            rows.append({"id": cid, "canonical_key": key, "occ": o, **dict(zip(TARGETS, y))})
        return self.store.add_observations(rows, source)

    def observe_csv(self, path: str | Path) -> tuple[int, int]:
        """Observations from a CSV a user filled in (columns ``id`` and/or ``canonical_key`` + targets)."""
        path = Path(path)
        if not path.is_file():
            raise InvdesignError("no such file", source=str(path))
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False)  # every value checked by check_labels
            for c in ("id", "_id", "canonical_key"):
                if c in df.columns:
                    df[c] = df[c].where(df[c].str.strip() != "", None)
        except Exception as exc:  # noqa: BLE001 - pandas raises many types
            raise InvdesignError(f"cannot read CSV ({type(exc).__name__}: {exc})", source=str(path)) from None
        return self.observe(df, source=str(path))

    # ------------------------------------------------------------------ run
    def evaluate_pending(self, oracle, executor, chunk: int = 1, on_result=None, allow_failures: bool = True) -> int:
        """Evaluate every pending suggestion with ``oracle`` on ``executor``; observe each result as it lands.

        Failed evaluations (oracle errors or non-finite values for the targeted quantities) are
        marked ``failed`` with the error. An input error of the oracle (:class:`InvdesignError`: a
        label missing from a table, say) stops the run with that error unless ``allow_failures``
        (the suggestion stays pending and is retried on resume). Returns the number of new observations.
        """
        import concurrent.futures as cf

        pend = self.suggestions("pending")
        if not len(pend):
            return 0
        cands, occ = self.candidates
        key_to_idx = {k: i for i, k in enumerate(cands["canonical_key"])}
        from invdesign.lattice.canonical import key_to_occ

        rows = [occ[key_to_idx[k]] if k in key_to_idx else key_to_occ(k, self.host) for k in pend["canonical_key"]]
        ids, keys = list(pend["id"]), list(pend["canonical_key"])
        from invdesign.campaign.executors import InlineExecutor
        from invdesign.campaign.label import oracle_token

        # other processes (a process pool, Dask workers) keep one live copy of the oracle each, so an
        # expensive oracle (CHGNet: model load + pristine host) is set up once per worker, not once per call
        in_process = isinstance(executor, (InlineExecutor, cf.ThreadPoolExecutor))
        token = None if in_process else oracle_token(oracle)
        futs = {}
        for s in range(0, len(ids), chunk):
            f = executor.submit(_evaluate, oracle, np.stack(rows[s : s + chunk]), ids[s : s + chunk], token)
            futs[f] = slice(s, s + chunk)
        used = [TARGETS.index(t) for t in self.target.names]
        name = getattr(oracle, "name", type(oracle).__name__)
        new = lost = 0

        # inline: results in suggestion (acquisition) order; pools: as they land, each committed at once
        from invdesign.campaign.executors import completed

        arrivals = ((f, False) for f in futs) if isinstance(executor, InlineExecutor) else completed(executor, futs)
        for f, gone in arrivals:
            sl = futs[f]
            if gone:  # the Dask scheduler went away with this call's result: no answer of the oracle
                lost += len(keys[sl])
                continue
            try:
                y = np.asarray(f.result(), dtype=float).reshape(-1, len(TARGETS))
            except InvdesignError:
                if not allow_failures:
                    raise
                for k in keys[sl]:
                    self.store.mark_failed(k, f"{sys.exc_info()[1]}")
                continue
            except BaseException as exc:  # noqa: BLE001 - any oracle failure is recorded, the campaign goes on
                if lost_by_executor(exc):  # a dead worker, a cancelled call: no answer of the oracle; stays pending
                    lost += len(keys[sl])
                    continue
                if not isinstance(exc, Exception):
                    raise
                for k in keys[sl]:
                    self.store.mark_failed(k, f"{type(exc).__name__}: {exc}")
                continue
            recs = []
            from invdesign.campaign.oracles import unphysical

            for k, i, v in zip(keys[sl], ids[sl], y):
                odd = [TARGETS[j] for j in used if unphysical(TARGETS[j], v[j])]
                if odd:  # finite but no measurement (a negative gap, 1e308 eV)
                    self.store.mark_failed(k, "oracle returned an unphysical value ("
                                           + ", ".join(f"{t}={v[TARGETS.index(t)]:g}" for t in odd) + ")")
                    continue
                if np.isinf(v[used]).any() or not np.isfinite(v[used]).any():
                    # +-inf is never a measurement; NaN is "not supplied" (e.g. CHGNet has no gap), all-NaN is no value
                    bad = ", ".join(f"{TARGETS[j]}={v[j]}" for j in used if not np.isfinite(v[j]))
                    self.store.mark_failed(k, f"oracle returned no finite value ({bad})")
                    continue
                # a target the campaign does not use is kept only as a measurement could give it (else not measured)
                v = np.array([x if j in used or (np.isfinite(x) and not unphysical(TARGETS[j], x)) else np.nan
                              for j, x in enumerate(v)])
                recs.append({"id": i, "canonical_key": k, **dict(zip(TARGETS, v))})
            if recs:
                new += self.observe(pd.DataFrame(recs), source=name, physical=False)[0]
            if on_result is not None:
                on_result()
        if lost:
            raise LostEvaluations(lost)
        return new

    def run(self, oracle=None, *, until_hits: int | None = None, budget: int | None = None,
            executor: str | None = None, max_steps: int | None = None, progress: bool = True,
            allow_failures: bool = False, trust_stored_code: bool = False) -> dict:
        """Suggest-evaluate-observe until ``until_hits`` hits or ``budget`` evaluations (resumes pending work).

        Args:
            oracle: an oracle object, a spec string, or None for the stored spec.
            until_hits, budget: override the stored stopping rules for this call (budget is stored).
            executor: executor spec (default: the stored one, ``auto``).
            max_steps: stop after this many suggest steps in this call.
            allow_failures: record bad labels (non-finite, missing) and oracle input errors as failed
                evaluations (counted in :meth:`status`) instead of stopping with the error.
            trust_stored_code: run a stored oracle that imports code (``python:``, ``ase:``). A campaign file
                is data (one received from someone else may name any module): such an oracle runs only
                when it is passed again as ``oracle`` or with this flag (``--trust-db``).

        Returns:
            :meth:`status`.
        """
        from invdesign.campaign.executors import make_executor, resolve
        from invdesign.campaign.oracles import make_oracle

        if oracle is None:
            if not self.config.get("oracle"):
                raise InvdesignError("this campaign has no oracle; give one (--oracle table:F.csv, surrogate, chgnet:MU.json)")
            oracle = self.config["oracle"]
            if str(oracle).partition(":")[0] in CODE_ORACLES and not trust_stored_code:
                raise InvdesignError(f"the campaign's stored oracle {oracle} imports and runs code; name it again "
                                     f"(--oracle {oracle}) or give --trust-db to run it", source=str(self.store.path))
        if isinstance(oracle, str):
            oracle = make_oracle(absolute_spec(oracle, self.store.path.absolute().parent), self.host,
                                 needed=self.target.names, allow_failures=allow_failures)
        else:  # an oracle object: one that cannot give a target (CHGNet and a gap) is refused before any work
            from invdesign.campaign.oracles import TableOracle, check_gives

            if not (allow_failures and isinstance(oracle, TableOracle)):
                check_gives(oracle, self.target.names)
        _check_coverage(oracle, self.candidates[0], allow_failures)
        if not hasattr(oracle, "evaluate"):
            if callable(oracle):
                from invdesign.campaign.oracles import CallableOracle

                oracle = CallableOracle(oracle, self.host)
            else:
                raise InvdesignError(f"oracle {oracle!r} has no evaluate(occ, ids) method")
        self._update_stop(until_hits, budget)
        until = self.config.get("until_hits")
        budget = self.config.get("budget")
        if until is None and budget is None:
            raise InvdesignError("give a budget or until-hits (or both) so that the campaign can stop")
        from contextlib import ExitStack

        from invdesign.campaign.label import LOST_ROUNDS
        from invdesign.progress import task

        steps = 0
        spec = resolve(executor or self.config.get("executor") or "auto", oracle)
        cheap = getattr(oracle, "cheap", False)
        with ExitStack() as outer, task(f"campaign: {self.target.describe()}", total=budget) as advance:
            pool = ExitStack()
            outer.callback(lambda: pool.close())
            ex = pool.enter_context(make_executor(spec, cheap=cheap))
            lost_rounds = 0
            while True:
                st = self.status()
                if st["done"] and not st["pending"]:
                    break
                if not st["pending"]:
                    if max_steps is not None and steps >= max_steps:
                        break
                    if not len(self.suggest()):
                        break  # nothing left to suggest (candidates or budget exhausted)
                    steps += 1
                try:
                    self.evaluate_pending(oracle, ex, on_result=advance, allow_failures=allow_failures)
                    lost_rounds = 0
                except LostEvaluations:
                    # a dead pool worker fails every call still queued: they stay pending and are evaluated again
                    # on a fresh executor (a call that kills its worker each time ends the run after LOST_ROUNDS)
                    lost_rounds += 1
                    if lost_rounds >= LOST_ROUNDS:
                        raise
                    pool.close()
                    pool = ExitStack()
                    try:
                        ex = pool.enter_context(make_executor(spec, cheap=cheap))
                    except InvdesignError:  # e.g. the Dask scheduler is gone: they stay pending for a rerun
                        n = len(self.suggestions("pending"))
                        raise LostEvaluations(n) from None
        return self.status()

    def _update_stop(self, until_hits: int | None, budget: int | None) -> None:
        from invdesign.limits import check_number

        for name, v in (("--until-hits", until_hits), ("--budget", budget)):
            if v is not None:
                check_number(name, v, 1, MAX_COUNT, integer=True)
        changed = False
        if until_hits is not None and until_hits != self.config.get("until_hits"):
            if until_hits < 1:
                raise InvdesignError("until-hits must be at least 1")
            self.config["until_hits"], changed = int(until_hits), True
        if budget is not None and budget != self.config.get("budget"):
            if budget < 1:
                raise InvdesignError("budget must be at least 1")
            self.config["budget"], changed = int(budget), True
        if changed:
            with self.store.transaction() as c:
                cfg = json.loads(c.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()[0])
                cfg["until_hits"], cfg["budget"] = self.config["until_hits"], self.config["budget"]
                self.store._set_meta(c, "config", json.dumps(cfg))

    # ------------------------------------------------------------------ report
    def report(self, out: str | Path, overwrite: bool = False) -> Path:
        """Write ``out/`` (see :func:`invdesign.campaign.report.write_report`; policy :mod:`invdesign.outputs`)."""
        from invdesign.campaign.report import write_report

        return write_report(self, out, overwrite)


def _features_from(src: Path, config: dict, cands: pd.DataFrame) -> dict[str, np.ndarray]:
    """Features (and prior) of the campaign in ``src`` for ``cands``; refused unless the candidate set
    (canonical keys, in order) and the feature settings (``features``, ``model``, warm start) are the same."""
    if not src.is_file():
        raise InvdesignError("no campaign file to take features from", source=str(src))
    with Store.open(src, readonly=True) as st:
        other, _ = st.candidates()
        cfg = st.config
        arrays = {k: st.array(k) for k in ("features", "prior_mean", "prior_std")}
    if list(other["canonical_key"]) != list(cands["canonical_key"]):
        raise InvdesignError(f"its {len(other)} candidates are not this campaign's {len(cands)} (same canonical keys "
                             "in the same order are needed to reuse its features)", source=str(src))
    for k in ("features", "model"):
        if cfg.get(k) != config.get(k):
            raise InvdesignError(f"its {k} setting {cfg.get(k)!r} differs from this campaign's {config.get(k)!r}",
                                 source=str(src))
    if config["warm_start"] and (arrays["prior_mean"] is None or arrays["prior_std"] is None):
        raise InvdesignError("it holds no prior (made without warm start); this campaign needs one", source=str(src))
    if not config["warm_start"]:
        arrays = {"features": arrays["features"]}
    return {k: v for k, v in arrays.items() if v is not None}


class LostEvaluations(InvdesignError):
    """Evaluations the executor lost (a worker died, a call was cancelled): they stay pending, and a rerun
    (``campaign run`` resumes pending suggestions first) evaluates them."""

    def __init__(self, n: int) -> None:
        self.n = n
        super().__init__(f"{n} evaluation(s) were lost by the executor (a worker died or a call was cancelled); "
                         "they stay pending: rerun the same command to evaluate them")


def lost_by_executor(exc: BaseException) -> bool:
    """True for an exception of the executor, not of the oracle: a dead process-pool worker, a cancelled
    future, a Dask worker killed or a scheduler gone."""
    import concurrent.futures as cf
    from concurrent.futures.process import BrokenProcessPool

    return isinstance(exc, (BrokenProcessPool, cf.CancelledError)) or type(exc).__name__ in (
        "KilledWorker", "CancelledError", "CommClosedError", "FutureCancelledError")


def _check_coverage(oracle, cands: pd.DataFrame, allow_failures: bool) -> None:
    """A table oracle must label every candidate (unless failures are allowed): refused before any evaluation."""
    from invdesign.campaign.oracles import TableOracle

    if isinstance(oracle, TableOracle) and not allow_failures:
        oracle.check_covers(list(cands["id"]), list(cands["canonical_key"]))


def _evaluate(oracle, occ: np.ndarray, ids: list[str], token: str | None = None) -> np.ndarray:
    """Module-level so that process pools and Dask can pickle the call; with a ``token`` the worker
    evaluates with its live copy of the oracle (:func:`invdesign.campaign.label.live_oracle`)."""
    from invdesign.campaign.label import live_oracle

    return np.asarray(live_oracle(token, oracle).evaluate(occ, ids), dtype=float)


def _f(v) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


def _empty_suggestions() -> pd.DataFrame:
    cols = ["step", "id", "canonical_key", "acquisition"] + [f"{t}_{s}" for t in TARGETS for s in ("mean", "std")]
    return pd.DataFrame(columns=cols)


def _flow_candidates(target: Target, n: int, model: str | None, max_defects: int, min_defects: int,
                     defect_types, seed: int) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """``n`` distinct candidates for the window from the model's conditional flow and decoder."""
    from invdesign.generate.design import design

    if n < 1:
        raise InvdesignError("generate at least 1 candidate")
    res = design(dict(target.window), n, model=model, max_defects=max_defects, min_defects=min_defects,
                 types=list(defect_types) if defect_types else None, seed=seed, mode="flow", diversity=0.0)
    if not len(res.candidates):
        raise InvdesignError(res.message or "the flow produced no candidates for this window")
    df = pd.DataFrame({"id": res.candidates["id"].astype(str), "canonical_key": res.candidates["canonical_key"].astype(str),
                       "source": "flow"})
    keep = ~df["canonical_key"].duplicated().to_numpy()
    return (df[keep].reset_index(drop=True), res.occ[keep],
            {"kind": "flow", "n": int(keep.sum()), "requested": n, "max_defects": max_defects, "min_defects": min_defects})


def _candidate_set(host: HostLattice, pool, max_defects: int, min_defects: int, defect_types) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """Candidates (one per symmetry class): from a pool (paths or Dataset) or the orbit enumeration."""
    from invdesign.lattice.canonical import canonical_keys

    if pool is None:
        from invdesign.lattice.enumerate import enumerate_orbits, parse_defect_types
        from invdesign.limits import check_enumeration

        if min_defects < 0 or min_defects > max_defects:
            raise InvdesignError(f"--min-defects {min_defects} and --max-defects {max_defects} must satisfy 0 <= min <= max")
        check_enumeration(host, max_defects, min_defects, parse_defect_types(host, defect_types or None))
        tab = enumerate_orbits(host, max_defects, min_defects, defect_types)
        if not len(tab):
            raise InvdesignError("the enumeration is empty for these defect counts and types")
        ids = [f"orbit{i:06d}" for i in range(len(tab))]
        df = pd.DataFrame({"id": ids, "canonical_key": tab.keys, "source": "enumeration"})
        return df, tab.occ, {"kind": "enumeration", "max_defects": max_defects, "min_defects": min_defects,
                             "defect_types": list(defect_types) if defect_types else None, "n": len(tab)}
    if isinstance(pool, Dataset):
        ds, desc = pool, {"kind": "pool", "paths": [pool.name or "dataset"]}
        if ds.host.fingerprint != host.fingerprint:
            raise InvdesignError("the pool's host differs from the campaign's host")
    else:
        from invdesign.data.dataset import map_structures

        paths = [Path(p) for p in pool]
        for p in paths:
            if not p.exists():
                raise InvdesignError("no such file or folder", source=str(p))
        ds = map_structures(paths, host)
        desc = {"kind": "pool", "paths": [str(p) for p in paths]}
    if not len(ds):
        raise InvdesignError("the pool holds no structures")
    keys = canonical_keys(ds.occ, host)
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    keep = np.array(sorted(first.values()), dtype=np.int64)
    df = pd.DataFrame({"id": [str(ds.ids[i]) for i in keep], "canonical_key": [keys[i] for i in keep], "source": "pool"})
    desc["n"], desc["duplicates_dropped"] = len(keep), len(ds) - len(keep)
    return df, ds.occ[keep], desc


# ---------------------------------------------------------------------- reading a stored campaign (data, not trusted)
def _checked_config(store: Store) -> tuple[dict, Target, HostLattice]:
    """The stored config with every value checked (types, ranges, the target and the host), its target and host.

    A database is a file anyone may have edited: a value the campaign would choke on later is refused here,
    in one line naming the file and the setting."""
    from invdesign.campaign.executors import check_spec

    cfg = store.config

    def bad(field: str, why: str) -> InvdesignError:
        return store.damaged(f"its stored setting {field} {why}")

    def integer(field: str, lo: int, hi: int, optional: bool = False) -> None:
        v = cfg.get(field)
        if v is None and optional:
            return
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise bad(field, f"{str(v)[:40]!r} is not an integer between {lo} and {hi:,}")

    for field in ("target", "host", "batch", "seed", "features", "acquisition"):
        if field not in cfg:
            raise bad(field, "is missing")
    integer("batch", 1, MAX_COUNT)
    integer("seed", 0, 2**63 - 1)
    integer("budget", 1, MAX_COUNT, optional=True)
    integer("until_hits", 1, MAX_COUNT, optional=True)
    if cfg["features"] not in ("model", "pairs"):
        raise bad("features", f"{str(cfg['features'])[:40]!r} is not model or pairs")
    if cfg["acquisition"] not in ACQUISITIONS:
        raise bad("acquisition", f"{str(cfg['acquisition'])[:40]!r} is not one of {', '.join(ACQUISITIONS)}")
    for field in ("oracle", "model", "executor"):
        if cfg.get(field) is not None and not isinstance(cfg[field], str):
            raise bad(field, f"{str(cfg[field])[:40]!r} is not text")
    if not isinstance(cfg.get("warm_start", False), bool):
        raise bad("warm_start", f"{str(cfg['warm_start'])[:40]!r} is not true or false")
    space = cfg.get("space", {})
    if not isinstance(space, dict) or not (space.get("paths") is None or (
            isinstance(space["paths"], list) and all(isinstance(p, str) for p in space["paths"]))):
        raise bad("space", f"{str(space)[:60]!r} is not a search-space description")
    try:
        check_spec(cfg.get("executor") or "auto")
    except InvdesignError as exc:
        raise bad("executor", f"is refused ({exc})") from None
    t = cfg["target"]
    try:
        if not isinstance(t, dict) or not isinstance(t.get("window") or {}, dict):
            raise InvdesignError("not a window or an objective")
        if t.get("threshold") is not None and not (isinstance(t["threshold"], (int, float))
                                                   and math.isfinite(t["threshold"])):
            raise InvdesignError(f"threshold {t['threshold']!r} is not a finite number")
        target = Target.from_dict(t)
        if not target.objective:
            target.as_window()  # finite, ordered bounds
    except (InvdesignError, TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
        raise bad("target", f"{str(t)[:80]!r} is not a target ({exc})") from None
    acq = cfg["acquisition"]
    if (acq == "pwin" and target.objective) or (acq == "ei" and not target.objective):
        raise bad("acquisition", f"{acq} does not fit the target {target.describe()}")
    spec = cfg["host"]
    if not isinstance(spec, dict) or not isinstance(spec.get("host", ""), str) \
            or not isinstance(spec.get("supercell", ""), str):
        raise bad("host", f"{str(spec)[:80]!r} is not a host and a supercell")
    try:
        host = host_from_spec(spec)
    except InvdesignError as exc:
        raise bad("host", f"{spec.get('host')} {spec.get('supercell')} cannot be built ({exc.reason})") from None
    return cfg, target, host


def _site_codes(host: HostLattice) -> np.ndarray:
    """``(n_sites, 256)`` bool: the species codes each site may hold (host species, substituents, vacancy)."""
    table = np.zeros((host.n_sites, 256), dtype=bool)
    table[:, : host.n_species] = host.allowed[host.sublattice]
    return table


def _key_codes(host: HostLattice) -> dict[str, int]:
    """``"site=species"`` -> ``site * n_species + species`` for every defect a canonical key may name."""
    table = host._cache.get("key_codes")
    if table is None:
        from invdesign.lattice.canonical import _code_labels

        table = {lab: c for c, lab in enumerate(_code_labels(host))}
        host._cache["key_codes"] = table
    return table


def _check_keys(store: Store, keys: list[str], occ: np.ndarray | None, host: HostLattice, what: str,
                numbers: list | None = None) -> None:
    """Each key names a configuration of ``host`` (defects on distinct sites, allowed species) and, with ``occ``,
    one of the same composition as its occupancy (a key and an occupancy that do not belong together are refused).
    A refusal names the row as the store does (``numbers``: a candidate's ``idx``, an observation's ``seq``;
    default: its position from 1)."""
    codes, ns = _key_codes(host), host.n_species
    allowed = host.allowed[host.sublattice]
    base = np.bincount(host.host_code, minlength=ns)
    comp = None
    if occ is not None and len(occ):
        comp = np.stack([(occ == s).sum(axis=1) for s in range(ns)], axis=1)
    prefix = f"{host.name}:"
    for i, key in enumerate(keys):
        ok = isinstance(key, str) and key.startswith(prefix)
        counts = base.copy()
        if ok and key != f"{prefix}pristine":
            sites = set()
            for item in key[len(prefix):].split(","):
                c = codes.get(item)
                if c is None:
                    ok = False
                    break
                site, sp = divmod(c, ns)
                if site in sites or sp == host.host_code[site] or not allowed[site, sp]:
                    ok = False
                    break
                sites.add(site)
                counts[host.host_code[site]] -= 1
                counts[sp] += 1
        n = numbers[i] if numbers is not None else i + 1
        if not ok:
            raise store.damaged(f"{what} {n}: {str(key)[:60]!r} is not a canonical key of {host.name}")
        if comp is not None and not np.array_equal(counts, comp[i]):
            raise store.damaged(f"{what} {n}: its canonical key {key[:60]!r} does not name its occupancy")
