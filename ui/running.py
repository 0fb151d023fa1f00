"""Running experiments inside the dashboard: shared models, cached runs, live progress, cancel, errors.

Models load through one ``st.cache_resource`` function (shared by every browser
session; ``tokconv.models.load`` is itself thread-safe). Finished runs are kept
twice: in this browser session's list (the Fingerprints page reads it) and in a
small process-wide cache, so identical settings never run twice.

Every run that is made (not a cached one) is saved to the run store (ui/runstore.py).

Cancelling: Streamlit stops a running script at its next ``st.*`` call when any
widget changes, so the Cancel button (or Streamlit's own Stop) interrupts the
run between two model steps. The records streamed so far are kept in session
state while the run goes on; the next script run turns them into an
"interrupted" result, so a cancelled run still shows how far it got; it is saved,
whole, with that status.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any, Callable

import streamlit as st

from tokconv import models as tk_models
from tokconv.errors import TokconvError
from tokconv.experiments import IterationEnd, RunConfig, RunEnd, RunResult, Step, collect, partial_result, prepare
from tokconv.models import LoadedModel, ProgressFn

from . import runstore
from .views import chips_html, status_sentence

RUNS = "runs"  # session state: list of {"key", "origin", "label", "result": RunResult}
PARTIAL = "partial_run"  # session state: the run in progress (its records so far)
SHARED_LIMIT = 32  # finished runs kept for all sessions
SESSION_LIMIT = 100  # runs kept per browser session (oldest dropped first)


def run_label(config: RunConfig) -> str:
    """Settings in a few words, for lists and titles."""
    who = config.model_a if not config.adversarial else f"{config.model_a} vs {config.model_b}"
    start = f"text '{config.start_text[:20]}'" if config.start_text else f"L={config.length}, seed {config.seed}"
    return f"{config.mode} · {who} · {start}"


@st.cache_resource(show_spinner=False, max_entries=8)
def load_model(spec: str, _progress: ProgressFn | None = None) -> LoadedModel:
    """The one place the dashboard loads a model: a singleton shared by every session.
    ``_progress`` (not part of the cache key) hears the loader's steps, such as a first conversion."""
    return tk_models.load(spec, progress=_progress)


class _SharedRuns:
    """A small thread-safe LRU of finished runs, shared by all browser sessions."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: OrderedDict[str, RunResult] = OrderedDict()

    def get(self, key: str) -> RunResult | None:
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        return None

    def put(self, key: str, result: RunResult) -> None:
        with self.lock:
            self.items[key] = result
            while len(self.items) > SHARED_LIMIT:
                self.items.popitem(last=False)


@st.cache_resource(show_spinner=False)
def _shared_runs() -> _SharedRuns:
    return _SharedRuns()


def session_runs() -> list[dict[str, Any]]:
    """This browser session's runs, oldest first."""
    return st.session_state.setdefault(RUNS, [])


def _remember(key: str, config: RunConfig, result: RunResult, origin: str) -> None:
    runs = session_runs()
    runs[:] = [r for r in runs if r["key"] != key]
    runs.append({"key": key, "origin": origin, "label": run_label(config), "result": result})
    del runs[:-SESSION_LIMIT]
    st.session_state[f"{origin}_last"] = key


def find_run(key: str | None) -> RunResult | None:
    """A run of this session (or of the shared cache) by key."""
    if key is None:
        return None
    for r in session_runs():
        if r["key"] == key:
            return r["result"]
    return _shared_runs().get(key)


def last_run(origin: str) -> RunResult | None:
    """The most recent run started from page ``origin``."""
    return find_run(st.session_state.get(f"{origin}_last"))


def peek(config: RunConfig) -> RunResult | None:
    """The finished run with exactly these settings, if this session or another one made it."""
    found = find_run(config.key())
    return found if found is not None and found.status != "interrupted" else None


def shown_run(config_fn: Callable[[], RunConfig], origin: str) -> tuple[RunResult | None, bool]:
    """What a page shows before Run is pressed: the run of the current settings if one exists, else the page's last run.

    Returns the run and whether it matches the current settings.
    """
    try:
        config = config_fn()
    except Exception:  # settings that cannot run yet (e.g. 'other…' with nothing typed)
        config = None
    found = peek(config) if config is not None else None
    if found is not None:
        return found, True
    last = last_run(origin)
    if last is None:
        return None, False
    return last, config is not None and last.config == config


def settle_interrupted() -> None:
    """Turn a run that a rerun cut short into an 'interrupted' result (call once at the top of each script run)."""
    partial = st.session_state.pop(PARTIAL, None)
    if not partial or partial.get("labels") is None:
        return
    config: RunConfig = partial["config"]
    result = partial_result(config, partial["labels"], partial["start_text"], partial["start_tokens"], partial["records"])
    _remember(config.key() + "-cut", config, result, partial["origin"])
    runstore.save(result)


def load_models(specs: list[str], say: Callable[[str], None]) -> None:
    """Load models through the shared cache, saying what happens (a first use converts the model)."""
    for spec in dict.fromkeys(specs):
        if spec.strip() in tk_models.loaded_specs():
            load_model(spec)
            continue
        t0 = time.perf_counter()
        lm = load_model(spec, say)  # the loader says what it does: locating, converting once, loading
        say(f"{lm.name} ready ({time.perf_counter() - t0:.1f} s).")


def _stream(config: RunConfig, origin: str, partial: dict[str, Any], live: bool, tick: Callable[[str], None] | None) -> RunResult:
    """Load, prepare and run inside the current container, reporting every record (an st.* call each)."""
    cancel = st.empty()
    if live:
        cancel.button("Cancel", key=f"{origin}_cancel", help="Stop this run after the current step and show how far it got.")
    say = st.caption if live else (tick or (lambda _m: None))
    load_models(config.models, say)
    exp = prepare(config)
    partial.update(labels=[p.label for p in exp.players], start_text=exp.start_text, start_tokens=exp.start_tokens)
    line, seq = st.empty(), st.empty()
    show = line.caption if live else say
    changed: dict[int, int] = {}  # position -> model index, within the current iteration

    def on_record(rec) -> None:
        partial["records"].append(rec)
        if isinstance(rec, Step):
            changed[rec.position] = rec.model_index
            show(f"Iteration {rec.iteration}: {rec.model} changes position {rec.position}")
        elif isinstance(rec, IterationEnd):
            show(f"Iteration {rec.iteration} of at most {config.iterations}: {rec.changes} change(s) by {rec.model}")
            if live:
                seq.markdown(chips_html(list(rec.pieces), dict(changed)), unsafe_allow_html=True)
            changed.clear()
        elif isinstance(rec, RunEnd):
            show(f"Finished after {rec.iterations} iteration(s).")

    result = collect(exp, exp.records(), on_record)
    cancel.empty()
    return result


def execute(config: RunConfig, origin: str, *, live: bool = True, tick: Callable[[str], None] | None = None) -> RunResult:
    """Run ``config`` (or return the cached result), showing progress; raises TokconvError on bad settings.

    With ``live`` the run gets an expandable status box with the sequence as it changes and a
    Cancel button; without it only ``tick`` (a line of text) is called between steps.
    """
    key = config.key()
    found = peek(config)
    if found is not None:
        _remember(key, config, found, origin)
        return found
    partial: dict[str, Any] = {"config": config, "origin": origin, "labels": None, "records": []}
    st.session_state[PARTIAL] = partial
    box = st.status(f"Running {run_label(config)}…", expanded=True) if live else st.container()
    try:
        with box:
            result = _stream(config, origin, partial, live, tick)
    except Exception:
        if live:
            box.update(label="This run could not start or failed; see the message below.", state="error", expanded=False)
        raise
    # bookkeeping first, with no st.* call in between: a rerun can only cut the script at one
    st.session_state.pop(PARTIAL, None)
    _remember(key, config, result, origin)
    if result.status != "interrupted":
        _shared_runs().put(key, result)
    saved = runstore.save(result)
    if live:
        note = f" Saved as run #{saved}." if saved is not None else ""
        box.update(label=f"Finished: {status_sentence(result)}{note}", state="complete", expanded=False)
    return result


def show_error(exc: BaseException) -> None:
    """A TokconvError as problem + fix; anything else as a friendly message (the details go to the server log)."""
    if isinstance(exc, TokconvError):
        st.error(exc.problem)
        if exc.fix:
            st.info(exc.fix)
        return
    import logging

    logging.getLogger("tokconv.dashboard").exception("unexpected error in the dashboard")
    st.error(f"Something went wrong while running this ({type(exc).__name__}). The details are in the server log.")
    st.info("Try again with other settings or a smaller length; if it keeps happening, report it with the settings from the URL.")


def safe_execute(config_fn: Callable[[], RunConfig], origin: str, **kwargs: Any) -> RunResult | None:
    """Build the settings and run them; show any error in the page and return None instead of raising."""
    try:
        return execute(config_fn(), origin, **kwargs)
    except Exception as exc:  # Streamlit's rerun/stop signals are BaseExceptions and pass through
        st.session_state.pop(PARTIAL, None)
        show_error(exc)
        return None
