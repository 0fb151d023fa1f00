"""Experiments: what a run *is*. Settings, the five modes as record generators, runs and sweeps.

:mod:`.config` (settings, the mode registry, limits), :mod:`.records` (the streamed step records
and the result), :mod:`.modes` (the generators), :mod:`.experiment` (prepare, run, collect),
:mod:`.lockstep` (many runs at once, their score requests batched), :mod:`.sweep` (grids).
"""

from .config import ADVERSARIAL_MODES, MODES, SOLO_MODES, ModeInfo, RunConfig, SweepSpec
from .experiment import Experiment, collect, fingerprints, partial_result, prepare, run
from .records import IterationEnd, Record, RunCost, RunEnd, RunResult, Step

__all__ = ["ADVERSARIAL_MODES", "Experiment", "IterationEnd", "MODES", "ModeInfo", "Record", "RunConfig", "RunCost",
           "RunEnd", "RunResult", "SOLO_MODES", "Step", "SweepSpec", "collect", "fingerprints", "partial_result",
           "prepare", "run"]
