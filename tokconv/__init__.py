"""tokconv: watch language models converge on token sequences, and fight.

The Python API in brief::

    import tokconv
    lm = tokconv.load("smollm2-135m")          # catalog name, .gguf path, mlx-lm folder or HF repo id
    scores = tokconv.Scorer(lm).score([lm.encode("The capital of France is Paris")])
    result = tokconv.run(tokconv.RunConfig(mode="adversarial-single", model_a="smollm2-135m",
                                           model_b="qwen2.5-coder-0.5b", length=20))

Importing tokconv first sets up the Linux CPU fast path (an optimized BLAS loaded before MLX,
tuned JIT flags; :mod:`tokconv.fastpath`). The floors, top to bottom, are described in ARCHITECTURE.md.
"""

import os as _os

# transformers (used only for its tokenizer converter) warns at import that PyTorch is missing: not our concern.
_os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from . import fastpath as _fastpath  # noqa: E402

RUNTIME = _fastpath.setup()  # must run before mlx.core is imported anywhere: everything below imports MLX

from .engine import Cost, Scorer, Scores, ScoringSession  # noqa: E402
from .errors import TokconvError  # noqa: E402
from .experiments import RunConfig, RunResult, prepare, run  # noqa: E402
from .models import CATALOG, DEFAULT_MODEL_A, DEFAULT_MODEL_B, LoadedModel, load  # noqa: E402
from .version import __version__  # noqa: E402

__all__ = [
    "CATALOG",
    "DEFAULT_MODEL_A",
    "DEFAULT_MODEL_B",
    "Cost",
    "LoadedModel",
    "RUNTIME",
    "RunConfig",
    "RunResult",
    "Scorer",
    "Scores",
    "ScoringSession",
    "TokconvError",
    "load",
    "prepare",
    "run",
    "__version__",
]
