"""The settings widgets shared by the pages, each bound to a URL query parameter.

Widgets use ``bind="query-params"`` (the widget key is the parameter name), so
the address bar always holds the chosen settings and a shared link reopens them.
Length, iterations, seed, start text and block-after use the same keys on Solo
and Battle, so a battle can be set up with the settings of the solo run it is
compared with.

A link's value that a widget cannot take (``?length=abc``, ``?mode=fast``) is reset to
the default, and the page says so (:func:`link_note`, shown by :func:`run_settings`).
The number fields have no built-in bounds: Streamlit would keep an out-of-range number
in the browser (in red) and run with the previous one. Here every typed number reaches
the script, and one out of range switches Run off with the reason (``RunSettings.problems``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from tokconv.models import CATALOG
from tokconv.errors import ModelNotFound
from tokconv.experiments import RunConfig
from tokconv.experiments.config import MAX_ITERATIONS, MAX_LENGTH, MIN_LENGTH, MODE_HELP

from tokconv.analysis.display import markdown_escape as md  # user text in markdown elements

OTHER = "other…"
NOTES = "link_notes"  # session state: sentences about link values that were reset, shown once
RESETS = "link_resets"  # session state: widget key -> default, applied on the rerun that follows
_MILLIONS = re.compile(r"^(\d+(?:\.\d+)?)([MB])$")


def _model_words(e: Any) -> str:
    """'SmolLM2, 135 million parameters, Llama family' from a catalog entry."""
    name = re.sub(r"[- ]\d+(?:\.\d+)?[MB]\b.*$", "", e.description.split(" (")[0].split(",")[0]).strip()
    m = _MILLIONS.match(e.params.strip())
    size = f"{m[1]} {'million' if m[2] == 'M' else 'billion'} parameters" if m else f"{e.params} parameters"
    return f"{name}, {size}, {e.family} family"


MODEL_HELP = (
    "Which language model to run. The bundled models: "
    + "; ".join(f"{e.name} is {_model_words(e)}" for e in CATALOG.values())
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


def link_note(text: str) -> None:
    """Say (once, below the settings) that something in the link could not be used. ``text`` must be markdown-safe."""
    notes = st.session_state.setdefault(NOTES, [])
    if text not in notes:
        notes.append(text)


def _fresh(key: str) -> bool:
    """True when this widget takes its value from the link now (its first script run in this session)."""
    return key not in st.session_state


def _check_choice(key: str, options: list[str], default: str) -> None:
    raw = st.query_params.get(key)
    if raw is not None and _fresh(key) and raw not in options:
        link_note(f"The link's {key}={md(raw, 40)} is not one of {', '.join(map(md, options))}; using {md(default)}.")


def _check_number(key: str, low: int, high: int, default: int) -> None:
    """A link's number out of range is reset on a rerun; one that is not a number Streamlit drops itself."""
    raw = st.query_params.get(key)
    if raw is None or not _fresh(key):
        return
    try:
        number = float(raw)
    except ValueError:
        number = None
    if number is not None and number.is_integer() and low <= number <= high:
        return
    link_note(f"The link's {key}={md(raw, 40)} is not a number from {low} to {high}; using {default}.")
    if number is not None:  # Streamlit may take it (no bounds): put the default in its place on the next run
        st.session_state.setdefault(RESETS, {})[key] = default


def fill_from(config: RunConfig, *, battle: bool) -> None:
    """Put a saved run's settings into the widgets the link does not set (before they are drawn)."""
    values: dict[str, Any] = {"length": config.length, "iterations": config.iterations, "seed": config.seed,
                              "start_text": config.start_text or "", "block_after": config.block_after,
                              "dtype": config.dtype, **({"share": config.share, "oov": config.oov} if battle else {})}
    sides = [("model_a", config.model_a), ("model_b", config.model_b)] if battle else [("model", config.model_a)]
    for key, spec in sides:
        if spec in CATALOG:
            values[key] = spec
        else:
            values[key], values[f"{key}_other"] = OTHER, spec or ""
    values["battle_mode" if battle else "mode"] = config.mode
    for key, value in values.items():
        if key not in st.query_params:
            st.session_state[key] = value


def model_picker(label: str, key: str, default: str) -> ModelChoice:
    """A catalog selectbox plus a free-text field for any other model."""
    options = [*CATALOG, OTHER]
    _check_choice(key, options, default)
    choice = st.selectbox(label, options, index=options.index(default), key=key, help=MODEL_HELP, bind="query-params")
    other = st.text_input(
        f"{label}: other model", key=f"{key}_other", disabled=choice != OTHER, help=OTHER_HELP,
        placeholder="path/to/model.gguf, an mlx-lm folder, or org/repo", bind="query-params",
    )
    return ModelChoice(choice, other)


def mode_picker(modes: tuple[str, ...], key: str, default: str) -> str:
    """A selectbox of modes, with the chosen mode explained below it."""
    modes = tuple(modes)  # a tuple of names or the MODES registry itself
    _check_choice(key, list(modes), default)
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
    problems: tuple[str, ...] = field(default=())  # numbers out of range: Run stays off while there are any
    dtype: str = "auto"
    share: str = "text"
    oov: str = "error"

    @property
    def run_help(self) -> str:
        """The Run button's help: why it is off, when it is."""
        return "Fix the settings marked in red above first: " + " ".join(self.problems) if self.problems else ""


SEED_MAX = 2**31 - 1
BLOCK_MAX = 100


def _number(where: Any, label: str, key: str, low: int, high: int, default: int, step: int, help: str, problems: list[str]) -> int:
    """An integer field without built-in bounds (see the module docstring): out of range is said in red below it."""
    _check_number(key, low, high, default)
    value = where.number_input(label, value=default, step=step, key=key, bind="query-params", help=help)
    if value is None or not low <= value <= high:
        text = f"{label} must be a whole number from {low:,} to {high:,}."
        where.error(text, icon=":material/error:")
        problems.append(text)
        return default
    return int(value)


def run_settings(*, default_length: int = 8, default_iterations: int = 100, battle: bool = False) -> RunSettings:
    """Length, iteration limit, and (folded away) seed, start text and block-after.

    Shows what the link had that could not be used, and applies link resets (with a rerun)."""
    resets = st.session_state.pop(RESETS, None)
    if resets:  # the rerun after a link's out-of-range number: the default takes its place now
        for key, value in resets.items():
            st.session_state[key] = value
    problems: list[str] = []
    c1, c2 = st.columns(2)
    length = _number(
        c1, "Length (tokens)", "length", MIN_LENGTH, MAX_LENGTH, default_length, 1, problems=problems,
        help=f"How many random tokens to start from ({MIN_LENGTH}-{MAX_LENGTH}). Longer runs take longer: a single-token mode needs about 2.5-3 iterations per token.",
    )
    iterations = _number(
        c2, "Max iterations", "iterations", 1, MAX_ITERATIONS, default_iterations, 10, problems=problems,
        help=f"The run stops here if it has not converged (two models may fight forever). From 1 to {MAX_ITERATIONS:,}.",
    )
    with st.expander("More settings: seed, start text, blocking, precision" + (", sharing" if battle else "")):
        seed = _number(
            st, "Seed", "seed", 0, SEED_MAX, 0, 1, problems=problems,
            help="Picks the random start tokens: the same seed gives the same start, so runs can be repeated and compared. Any whole number from 0 up.",
        )
        start_text = st.text_input(
            "Start text (optional)", key="start_text", bind="query-params",
            help="Start from this text instead of random tokens (the length setting is then ignored). Leave empty for a random start.",
        )
        block_after = _number(
            st, "Block after", "block_after", 1, BLOCK_MAX, 3, 1, problems=problems,
            help=f"In the single-token modes, a position that has flipped this many times is frozen (the original used 3), so two models cannot fight over it forever. From 1 to {BLOCK_MAX}.",
        )
        extra = _advanced(battle)
    if st.session_state.get(RESETS):
        st.rerun()  # Streamlit took the link's out-of-range number: the next run puts the default in its place
    for note in st.session_state.pop(NOTES, []):
        st.warning(note, icon=":material/link_off:")
    return RunSettings(length, iterations, seed, start_text or None, block_after, tuple(problems), **extra)


def _choice(label: str, key: str, options: dict[str, str], help_text: str) -> str:
    """A selectbox of ``options`` (value -> what it means), bound to the link, the first one the default."""
    values = list(options)
    _check_choice(key, values, values[0])
    return st.selectbox(label, values, index=0, key=key, bind="query-params", format_func=lambda v: f"{v}: {options[v]}",
                        help=help_text)


def _advanced(battle: bool) -> dict[str, str]:
    """Precision, and for battles how two vocabularies share the sequence."""
    out = {"dtype": _choice(
        "Precision", "dtype", {"auto": "this machine's best (float32 on a CPU)", "float32": "32-bit floats",
                               "float16": "16-bit floats", "bfloat16": "16-bit 'brain' floats"},
        "How precisely the model computes. Half precision (float16, bfloat16) is what the original experiment ran "
        "with on a Mac; here it shows what rounding does to the results. On a CPU it is several times slower.")}
    if battle:
        out["share"] = _choice(
            "Share", "share", {"text": "the text (each model reads it with its own tokenizer)",
                               "ids": "the token numbers, as a naive script would"},
            "Two models with different vocabularies give the same token number different meanings. 'text' lets each "
            "read the shared text its own way. 'ids' passes the numbers straight across, as a script that ignores "
            "this would: a model may get numbers it has no token for (see Beyond the vocabulary).")
        out["oov"] = _choice(
            "Beyond the vocabulary", "oov", {"error": "stop and say which number", "nan": "feed broken numbers (NaN), as an unchecked script can",
                                             "unk": "read the model's 'unknown' token"},
            "Only with Share = ids: what a model does with a token number past the end of its vocabulary. 'nan' imitates "
            "a script that does not check (it reads garbage memory); such moves are flagged in the results.")
    return out
