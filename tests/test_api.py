"""The Python API takes the objects of the ecosystem: pymatgen Structures and ASE Atoms (converted by
pymatgen's AseAtomsAdaptor) wherever the CLI takes STRUCTURES, and gives Structures back."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from invdesign import Configuration, InvdesignError, canonical_key, design, embed, predict
from invdesign.io import write_structure
from invdesign.lattice.enumerate import sample_configurations

ase = pytest.importorskip("ase")


@pytest.fixture(scope="module")
def model():
    from invdesign.model import load_model

    return load_model()


@pytest.fixture(scope="module")
def configs(host):
    rng = np.random.default_rng(5)
    return np.concatenate([sample_configurations(host, {"V_S": 1, "W_Mo": 1}, 3, rng),
                           sample_configurations(host, {"Se_S": 2}, 3, rng)])


def test_ase_atoms_are_accepted_like_structures(tmp_path, host, configs, model):
    from ase.io import read
    from pymatgen.io.ase import AseAtomsAdaptor

    structures = [Configuration(o, host).to_structure() for o in configs]
    atoms = [AseAtomsAdaptor.get_atoms(s) for s in structures]
    write_structure(configs[0], host, tmp_path / "a.cif")
    atoms[0] = read(tmp_path / "a.cif")  # as a user reads a CIF with ASE
    assert isinstance(atoms[0], ase.Atoms)
    by_struct, by_atoms = predict(structures, model), predict(atoms, model)
    assert by_atoms["id"].tolist() == [str(i) for i in range(len(configs))]
    cols = ["formation_energy_per_site", "homo_lumo_gap", "formation_energy_per_site_std", "homo_lumo_gap_std"]
    np.testing.assert_allclose(by_atoms[cols].to_numpy(), by_struct[cols].to_numpy(), atol=1e-9)
    np.testing.assert_allclose(embed(atoms, model).iloc[:, 1:].to_numpy(), model.embed(configs), atol=1e-9)
    for o, a in zip(configs, atoms):
        c = Configuration.from_structure(a, host)
        assert np.array_equal(c.occ, o) and canonical_key(c) == canonical_key(Configuration(o, host))
    with pytest.raises(InvdesignError, match="not a pymatgen Structure or an ASE Atoms"):
        Configuration.from_structure("a.cif", host)
    with pytest.raises(InvdesignError, match="ASE Atoms"):
        predict([structures[0], 3.0], model)


def test_design_ranks_a_pool_of_atoms_and_returns_structures(tmp_path, host, configs, model):
    from pymatgen.core import Structure
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = [AseAtomsAdaptor.get_atoms(Configuration(o, host).to_structure()) for o in configs]
    window = {"formation_energy_per_site": (0.0, 10.0)}
    res = design(window, n=4, model=model, pool=atoms)
    folder = design(window, n=4, model=model, pool=str(_write(tmp_path, host, configs)))
    assert len(res.candidates) == 4 and set(res.candidates["source"]) == {"pool"}
    # the same ranking as the same configurations read from files (ids "0".."5" vs the file stems "c0".."c5")
    assert res.candidates["id"].tolist() == [c[1:] for c in folder.candidates["id"]]
    pd.testing.assert_series_equal(res.candidates["p_in_window"], folder.candidates["p_in_window"])
    out = res.structures()
    assert len(out) == 4 and all(isinstance(s, Structure) for s in out)
    for s, cid, key in zip(out, res.candidates["id"], res.candidates["canonical_key"]):
        assert canonical_key(Configuration.from_structure(s, host)) == key
        assert np.array_equal(Configuration.from_structure(s, host).occ, configs[int(cid)])
    one = design(window, n=1, model=model, pool=atoms[2])  # a single Atoms is a pool of one
    assert one.candidates["id"].tolist() == ["0"]
    with pytest.raises(InvdesignError, match="one kind at a time"):
        design(window, n=2, model=model, pool=[atoms[0], str(tmp_path)])


def _write(tmp_path, host, configs):
    d = tmp_path / "pool"
    d.mkdir()
    for i, o in enumerate(configs):
        write_structure(o, host, d / f"c{i}.cif")
    return d
