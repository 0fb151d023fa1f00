"""Models: turn a spec into a loaded model (catalog, GGUF conversion, tokenizer, vocabulary).

``load(spec)`` is the entry point; :mod:`.resolve` finds or converts the weights, :mod:`.catalog`
lists the bundled models, :mod:`.gguf_convert` and :mod:`.gguf_tokenizer` turn a GGUF file into an
mlx-lm folder, :mod:`.vocab` knows which ids are ordinary text.
"""

from .catalog import CATALOG, DEFAULT_MODEL_A, DEFAULT_MODEL_B
from .loading import LoadedModel, load, load_vocabulary, loaded_specs, register, registry_key, unregister
from .resolve import ProgressFn, converted_dir_for, resolve

__all__ = ["CATALOG", "DEFAULT_MODEL_A", "DEFAULT_MODEL_B", "LoadedModel", "ProgressFn", "converted_dir_for",
           "load", "load_vocabulary", "loaded_specs", "register", "registry_key", "resolve", "unregister"]
