"""The settings widgets shared by the pages, each bound to a URL query parameter.

Widgets use ``bind="query-params"`` (the widget key is the parameter name), so
the address bar always holds the chosen settings and a shared link reopens them.
Length, iterations, seed, start text and block-after use the same keys on Solo
and Battle, so a battle can be set up with the settings of the solo run it is
compared with.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from tokconv.models import CATALOG
from tokconv.errors import ModelNotFound
from tokconv.experiments.config import MAX_ITERATIONS, MAX_LENGTH, MIN_LENGTH, MODE_HELP

OTHER = "other…"
MODEL_HELP = (
    "Which language model to run. The bundled models: "
    + "; ".join(f"{e.name} = {e.description}" for e in CATALOG.values())
    + f". Pick '{OTHER}' to name another one in the field below."
)
OTHER_HELP = (
    "Used when the model list says 'other…': a path to a .gguf file (llama, qwen2 or gemma3), "
    "a folder made by mlx_lm.convert, or a Hugging Face repo id such as mlx-community/Qwen2.5-1.5B-Instruct-4bit "
    "(downloading needs internet)."
)


@dataclass(frozen=True)
class ModelChoice:
    """What the model widgets say: a catalog name, or the typed 'other' spec."""

    choice: str
    other: str

    def spec(self) -> str:
        """The model spec to load (raises a TokconvError when 'other' is picked but nothing typed)."""
        if self.choice != OTHER:
            return self.choice
        if not self.other.strip():
            raise ModelNotFound("'other…' is selected but no model is typed in", "type a .gguf path, an mlx-lm folder or a Hugging Face repo id, or pick a bundled model")
        return self.other.strip()


def model_picker(label: str, key: str, default: str) -> ModelChoice:
    """A catalog selectbox plus a free-text field for any other model."""
    options = [*CATALOG, OTHER]
    choice = st.selectbox(label, options, index=options.index(default), key=key, help=MODEL_HELP, bind="query-params")
    other = st.text_input(
        f"{label}: other model", key=f"{key}_other", disabled=choice != OTHER, help=OTHER_HELP,
        placeholder="path/to/model.gguf, an mlx-lm folder, or org/repo", bind="query-params",
    )
    return ModelChoice(choice, other)


def mode_picker(modes: tuple[str, ...], key: str, default: str) -> str:
    """A selectbox of modes, with the chosen mode explained below it."""
    mode = st.selectbox(
        "Mode", modes, index=modes.index(default), key=key, bind="query-params",
        help="How each iteration changes the sequence. " + " ".join(f"**{m}**: {MODE_HELP[m]}." for m in modes),
    )
    st.caption(f"{mode}: {MODE_HELP[mode]}")
    return mode


@dataclass(frozen=True)
class RunSettings:
    length: int
    iterations: int
    seed: int
    start_text: str | None
    block_after: int


def run_settings(*, default_length: int = 8, default_iterations: int = 100) -> RunSettings:
    """Length, iteration limit, and (folded away) seed, start text and block-after."""
    c1, c2 = st.columns(2)
    length = c1.number_input(
        "Length (tokens)", MIN_LENGTH, MAX_LENGTH, default_length, step=1, key="length", bind="query-params",
        help=f"How many random tokens to start from ({MIN_LENGTH}-{MAX_LENGTH}). Longer runs take longer: a single-token mode needs about 2.5-3 iterations per token.",
    )
    iterations = c2.number_input(
        "Max iterations", 1, MAX_ITERATIONS, default_iterations, step=10, key="iterations", bind="query-params",
        help="The run stops here if it has not converged (two models may fight forever).",
    )
    with st.expander("More settings: seed, start text, blocking"):
        seed = st.number_input(
            "Seed", 0, 2**31 - 1, 0, step=1, key="seed", bind="query-params",
            help="Picks the random start tokens: the same seed gives the same start, so runs can be repeated and compared.",
        )
        start_text = st.text_input(
            "Start text (optional)", key="start_text", bind="query-params",
            help="Start from this text instead of random tokens (the length setting is then ignored). Leave empty for a random start.",
        )
        block_after = st.number_input(
            "Block after", 1, 100, 3, step=1, key="block_after", bind="query-params",
            help="In the single-token modes, a position that has flipped this many times is frozen (the original used 3), so two models cannot fight over it forever.",
        )
    return RunSettings(int(length), int(iterations), int(seed), start_text or None, int(block_after))
