"""tokconv: watch language models converge on token sequences, and fight.

The Python API in brief::

    import tokconv
    lm = tokconv.load("smollm2-135m")          # catalog name, .gguf path, mlx-lm folder or HF repo id
    scores = tokconv.Scorer(lm).score([[1, 2, 3]])   # argmax, prob, entropy per position

On Linux CPU, importing tokconv first sets up the fast path (an optimized BLAS
loaded before MLX, tuned JIT flags); see ``tokconv.runtime``.
"""

import os as _os

# transformers (used only for its tokenizer converter) warns at import that PyTorch is missing: not our concern.
_os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from . import runtime as _runtime  # noqa: E402

RUNTIME = _runtime.setup()  # must run before mlx.core is imported anywhere

from .catalog import CATALOG, DEFAULT_MODEL_A, DEFAULT_MODEL_B  # noqa: E402
from .errors import TokconvError  # noqa: E402
from .models import LoadedModel, load  # noqa: E402
from .scoring import Cost, Scorer, Scores, ScoringSession  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "CATALOG",
    "DEFAULT_MODEL_A",
    "DEFAULT_MODEL_B",
    "Cost",
    "LoadedModel",
    "RUNTIME",
    "Scorer",
    "Scores",
    "ScoringSession",
    "TokconvError",
    "load",
    "__version__",
]
