"""Synthesis planning: what a candidate takes to make, under which conditions it is favoured, whether its
arrangement forms at the growth temperature, and the files the next tools (VASP, Quantum ESPRESSO) read.

Data flows one way: ``lattice`` (dn bookkeeping) <- ``synthesis.chempot`` <- ``synthesis.arrangements``
(uses the enumerated orbits of ``generate``) <- ``synthesis.plan`` <- the ``design``/``predict`` commands.
"""

from invdesign.synthesis.chempot import (
    ChemicalPotentials,
    along_stable_range,
    host_reference,
    load_reference,
    read_mu,
    with_mu,
)
from invdesign.synthesis.plan import plan_design

__all__ = ["ChemicalPotentials", "along_stable_range", "host_reference", "load_reference", "plan_design", "read_mu",
           "with_mu"]
