"""Running experiments inside the dashboard: shared models, cached runs, live progress, cancel, errors.

Models load through one ``st.cache_resource`` function (shared by every browser
session; ``tokconv.models.load`` is itself thread-safe).

The run store is the source of truth: settings whose finished run is saved (by any
server or the CLI using that database, found by ``RunConfig.key()``) open that run
instead of running again. Every run that is made is saved there; this browser
session's list (the Fingerprints page reads it) and a small process-wide cache of
loaded runs (by database and id) only save work. Without a usable store a
process-wide cache by settings key stands in for it.

A page that shows a saved run puts its id in the URL (``?run=19``), and such a link
opens that run (:func:`linked_run`).

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
from dataclasses import dataclass
from typing import Any, Callable

import streamlit as st

from tokconv import models as tk_models
from tokconv.errors import TokconvError
from tokconv.experiments import IterationEnd, RunConfig, RunEnd, RunResult, Step, collect, partial_result, prepare
from tokconv.models import LoadedModel, ProgressFn

from . import controls, runstore
from tokconv.analysis.display import markdown_escape as md  # user text in markdown elements
from .views import chips_html, status_sentence

RUNS = "runs"  # session state: list of {"key", "origin", "label", "result": RunResult, "id": int | None, "note": str | None}
PARTIAL = "partial_run"  # session state: the run in progress (its records so far)
SHARED_LIMIT = 32  # finished runs kept for all sessions
SESSION_LIMIT = 100  # runs kept per browser session (oldest dropped first)
LINK = "run"  # the URL query parameter naming the saved run a page shows
LEFT_PAGE = "left_page"  # PARTIAL["cut_by"] when the run stopped because the user opened another page
# Usual iterations of each mode, per token of the start (single-token modes) or in all (passes),
# for the progress bar's estimate; from FINDINGS.md and the original's table.
PER_TOKEN = {"single": 2.5, "adversarial-single": 3.0, "batch": 1.0}
PASSES = {"sequential": 2, "adversarial": 4}


def run_label(config: RunConfig) -> str:
    """Settings in a few words, for lists and titles."""
    who = config.model_a if not config.adversarial else f"{config.model_a} vs {config.model_b}"
    start = f"text '{config.start_text[:20]}'" if config.start_text else f"L={config.length}, seed {config.seed}"
    return f"{config.mode} · {who} · {start}"  # raw user text: pass it through markdown_escape() in markdown elements


def running_label(config: RunConfig) -> str:
    """The status box's label while a run goes: markdown, so the start text and typed model names are escaped."""
    return f"Running {md(run_label(config), 120)}…"


@st.cache_resource(show_spinner=False, max_entries=8)
def load_model(spec: str, dtype: str = "auto", _progress: ProgressFn | None = None) -> LoadedModel:
    """The one place the dashboard loads a model: a singleton shared by every session.
    ``_progress`` (not part of the cache key) hears the loader's steps, such as a first conversion."""
    return tk_models.load(spec, progress=_progress, dtype=dtype)


class _SharedRuns:
    """A small thread-safe LRU of finished runs, shared by all browser sessions."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.items: OrderedDict[Any, RunResult] = OrderedDict()

    def get(self, key: Any) -> RunResult | None:
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        return None

    def put(self, key: Any, result: RunResult) -> None:
        with self.lock:
            self.items[key] = result
            while len(self.items) > SHARED_LIMIT:
                self.items.popitem(last=False)


@st.cache_resource(show_spinner=False)
def _shared_runs() -> _SharedRuns:
    """Runs by settings key, for when there is no usable store; and saved runs by (database, id)."""
    return _SharedRuns()


@dataclass(frozen=True)
class Shown:
    """The run a page shows, its id in the store (None when not saved), and how it relates to the settings."""

    result: RunResult
    run_id: int | None
    current: bool  # made with exactly the settings on the page
    note: str | None = None  # a sentence about how it ended, shown above it (e.g. the page was left mid-run)
    linked: bool = False  # opened from the link's ?run=ID


def session_runs() -> list[dict[str, Any]]:
    """This browser session's runs, oldest first."""
    return st.session_state.setdefault(RUNS, [])


def _remember(key: str, config: RunConfig, result: RunResult, origin: str, run_id: int | None, note: str | None = None) -> None:
    runs = session_runs()
    runs[:] = [r for r in runs if r["key"] != key]
    runs.append({"key": key, "origin": origin, "label": run_label(config), "result": result, "id": run_id, "note": note})
    del runs[:-SESSION_LIMIT]
    st.session_state[f"{origin}_last"] = key


def _entry(key: str | None) -> dict[str, Any] | None:
    for r in session_runs():
        if r["key"] == key:
            return r
    return None


def saved_run(run_id: int) -> RunResult:
    """A saved run by id (cached per database: a saved run never changes); raises TokconvError when it is not there."""
    s = runstore.store()
    if s is None:
        _, error = runstore.open_store()
        raise error or TokconvError("the run database cannot be used", "see the History page")
    key = (str(s.path), int(run_id))
    found = _shared_runs().get(key)
    if found is None:
        found = s.get(int(run_id))
        _shared_runs().put(key, found)
    return found


def find_run(key: str | None) -> RunResult | None:
    """A run of this session (or of the shared cache) by settings key."""
    entry = _entry(key)
    if entry is not None:
        return entry["result"]
    return _shared_runs().get(key) if key is not None else None


def last_run(origin: str) -> RunResult | None:
    """The most recent run started from page ``origin``."""
    return find_run(st.session_state.get(f"{origin}_last"))


def peek(config: RunConfig) -> tuple[RunResult, int | None] | None:
    """The newest finished run with exactly these settings and its id: from the store, whoever made it."""
    key = config.key()
    s = runstore.store()
    if s is not None:
        try:
            rid = s.latest_ids([key]).get(key)
            if rid is not None:
                return saved_run(rid), rid
        except Exception:  # the file went away meanwhile: run again rather than fail
            runstore.forget()
    found = find_run(key)  # not saved (no usable store, or saving failed)
    if found is not None and found.status != "interrupted":
        entry = _entry(key)
        return found, entry["id"] if entry else None
    return None


def linked_run(*, battle: bool) -> tuple[int, RunResult] | None:
    """The saved run named by the link's ``?run=ID``, if it exists and fits this page (call before the settings widgets).

    The first time a session sees the link, settings the URL does not give are filled in from that run,
    so that the page's settings are the run's. A link that cannot be used is said (controls.link_note).
    """
    raw = st.query_params.get(LINK)
    if raw is None:
        return None
    try:
        rid = int(raw)
        result = saved_run(rid)
    except ValueError:
        controls.link_note(f"The link's {LINK}={md(raw, 40)} is not a run number; showing no saved run.")
        del st.query_params[LINK]
        return None
    except Exception:
        controls.link_note(f"The link's {LINK}={rid} is not a run in this run database (it may have been deleted); showing no saved run.")
        del st.query_params[LINK]
        return None
    if result.config.adversarial != battle:
        where = "Battle" if result.config.adversarial else "Solo"
        controls.link_note(f"Run #{rid} from the link is a {'battle' if result.config.adversarial else 'solo run'}: open it on the {where} page or in History.")
        del st.query_params[LINK]
        return None
    seen = st.session_state.setdefault("linked_runs_applied", set())
    if (rid, battle) not in seen:
        seen.add((rid, battle))
        controls.fill_from(result.config, battle=battle)
    return rid, result


def shown_run(config_fn: Callable[[], RunConfig], origin: str, linked: tuple[int, RunResult] | None = None) -> Shown | None:
    """What a page shows before Run is pressed.

    In this order: the linked run when the settings are its own; the saved run of the current settings;
    this session's last run when it had these settings (an interrupted one); else the linked run or the
    last run, marked as made with other settings.
    """
    try:
        config = config_fn()
    except Exception:  # settings that cannot run yet (e.g. 'other…' with nothing typed)
        config = None
    if linked is not None and linked[1].config == config:
        return Shown(linked[1], linked[0], True, _note_of(linked[0]), linked=True)
    found = peek(config) if config is not None else None
    if found is not None:
        return Shown(found[0], found[1], True)
    last = _entry(st.session_state.get(f"{origin}_last"))
    if last is not None and last["result"].config == config:
        return Shown(last["result"], last["id"], True, last["note"])
    if linked is not None:
        return Shown(linked[1], linked[0], False, _note_of(linked[0]), linked=True)
    if last is not None:
        return Shown(last["result"], last["id"], False, last["note"])
    return None


def _note_of(run_id: int | None) -> str | None:
    """What this session noted about a saved run (how it was interrupted), if anything."""
    return next((e["note"] for e in session_runs() if run_id is not None and e["id"] == run_id), None)


def run_or_show(config_fn: Callable[[], RunConfig], origin: str, clicked: bool,
                linked: tuple[int, RunResult] | None = None) -> Shown | None:
    """Run (when ``clicked``) or pick the run to show; put its id in the URL (``?run=ID``)."""
    if clicked:
        result = safe_execute(config_fn, origin)
        entry = _entry(st.session_state.get(f"{origin}_last")) if result is not None else None
        shown = Shown(result, entry["id"] if entry else None, True, entry["note"] if entry else None) if result is not None else None
    else:
        shown = shown_run(config_fn, origin, linked)
    if shown is not None and shown.run_id is not None:
        if st.query_params.get(LINK) != str(shown.run_id):
            st.query_params[LINK] = str(shown.run_id)
    elif LINK in st.query_params and not clicked:
        del st.query_params[LINK]
    return shown


def show_header(shown: Shown, what: str) -> None:
    """The sentences above a shown run: which saved run it is, how it ended, and whether the settings changed since."""
    if shown.note:
        st.warning(shown.note)
    if not shown.current:
        if shown.linked:
            st.caption(f"This is run #{shown.run_id} from the link; the settings above differ from it. Press Run to run them.")
        else:
            st.caption(f"This is your last {what}; the settings above have changed since. Press Run to run them.")
    elif shown.run_id is not None:
        st.caption(f"Saved run #{shown.run_id}: this page's address opens it again, on any server using this run database.")


def settle_interrupted(page: str | None = None) -> None:
    """Turn a run that a rerun cut short into an 'interrupted' result (call once at the top of each script run).

    ``page`` is the URL path of the page this script run shows: another page than the run's means the user left it.
    """
    partial = st.session_state.pop(PARTIAL, None)
    if not partial or partial.get("labels") is None:
        return
    config: RunConfig = partial["config"]
    result = partial_result(config, partial["labels"], partial["start_text"], partial["start_tokens"], partial["records"])
    n = result.iterations
    its = f"{n} iteration{'s' if n != 1 else ''}"
    home = "" if partial["origin"] == "home" else partial["origin"]
    if page is not None and page != home:
        note = (f"This run was interrupted: you opened another page while it was running, so it stopped after {its}. "
                "Below is how far it got; press Run to run it again from the start.")
    else:
        note = (f"This run was interrupted after {its} (Cancel, Stop, or a setting changed while it ran). "
                "Below is how far it got; press Run to run it again from the start.")
    saved = runstore.save(result)
    _remember(config.key() + "-cut", config, result, partial["origin"], saved, note)


def load_models(specs: list[str], say: Callable[[str], None], dtype: str = "auto") -> None:
    """Load models through the shared cache, saying what happens (a first use converts the model).

    ``say`` is a markdown element (a caption): what it gets is escaped, since a model path is typed by the user."""
    for spec in dict.fromkeys(specs):
        if tk_models.registry_key(spec, dtype) in tk_models.loaded_specs():
            load_model(spec, dtype)
            continue
        t0 = time.perf_counter()
        lm = load_model(spec, dtype, lambda msg: say(md(msg)))  # the loader says what it does: locating, converting once, loading
        say(md(f"{lm.name} ready ({time.perf_counter() - t0:.1f} s)."))


def expected_iterations(config: RunConfig, tokens: int) -> int:
    """How many iterations a run of this mode usually takes (capped by its limit), for the progress estimate."""
    usual = PASSES.get(config.mode) or round(PER_TOKEN.get(config.mode, 1.0) * max(tokens, 1))
    return max(1, min(config.iterations, int(usual)))


class Progress:
    """A progress bar with the time left, estimated from the iterations so far and the mode's usual count."""

    def __init__(self, bar: Any, config: RunConfig, tokens: int) -> None:
        self.bar, self.config, self.tokens = bar, config, max(tokens, 1)
        self.expected = expected_iterations(config, tokens)
        self.t0 = time.perf_counter()
        self.whole_passes = config.mode in PASSES  # an iteration is a pass over every position

    def text(self, done: float) -> str:
        expected = max(self.expected, int(done) + 1)
        left = (time.perf_counter() - self.t0) / done * (expected - done) if done > 0 else None
        eta = "estimating the time left…" if left is None else f"about {_duration(left)} left"
        return f"Iteration {int(done) + 1} of about {expected} (at most {self.config.iterations}) · {eta}"

    def update(self, iteration: int, position: int | None = None) -> None:
        """``iteration`` finished (position None), or a step at ``position`` of ``iteration`` (a pass in progress)."""
        done = float(iteration) if position is None else iteration - 1 + min(position + 1, self.tokens) / self.tokens
        if position is not None and not self.whole_passes:
            return
        expected = max(self.expected, int(done) + 1)
        self.bar.progress(min(done / expected, 0.99), text=self.text(done))

    def finish(self, iterations: int) -> None:
        self.bar.progress(1.0, text=f"Done: {iterations} iteration(s) in {_duration(time.perf_counter() - self.t0)}.")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _stream(config: RunConfig, origin: str, partial: dict[str, Any], live: bool, tick: Callable[[str], None] | None) -> RunResult:
    """Load, prepare and run inside the current container, reporting every record (an st.* call each)."""
    bar = st.empty()
    cancel, leaving = st.empty(), st.empty()
    if live:
        bar.progress(0.0, text="Loading the model(s)…")
        cancel.button("Cancel", key=f"{origin}_cancel", help="Stop this run after the current step and show how far it got.")
        leaving.caption("Leaving this page cancels the run: it stops after the current step and is kept as interrupted.")
    say = st.caption if live else (tick or (lambda _m: None))
    load_models(config.models, say, config.dtype)
    exp = prepare(config)
    partial.update(labels=[p.label for p in exp.players], start_text=exp.start_text, start_tokens=exp.start_tokens)
    progress = Progress(bar, config, len(exp.start_tokens)) if live else None
    if progress is not None:
        bar.progress(0.0, text=progress.text(0))
    line, seq = st.empty(), st.empty()
    show = (lambda m: line.caption(md(m))) if live else say
    changed: dict[int, int] = {}  # position -> model index, within the current iteration

    def on_record(rec) -> None:
        partial["records"].append(rec)
        if isinstance(rec, Step):
            changed[rec.position] = rec.model_index
            if progress is not None:
                progress.update(rec.iteration, rec.position)
            show(f"Iteration {rec.iteration}: {rec.model} changes position {rec.position}")
        elif isinstance(rec, IterationEnd):
            if progress is not None:
                progress.update(rec.iteration)
            show(f"Iteration {rec.iteration} of at most {config.iterations}: {rec.changes} change(s) by {rec.model}")
            if live:
                seq.markdown(chips_html(list(rec.pieces), dict(changed)), unsafe_allow_html=True)
            changed.clear()
        elif isinstance(rec, RunEnd):
            if progress is not None:
                progress.finish(rec.iterations)
            show(f"Finished after {rec.iterations} iteration(s).")

    result = collect(exp, exp.records(), on_record)
    cancel.empty()
    leaving.empty()
    return result


def execute(config: RunConfig, origin: str, *, live: bool = True, tick: Callable[[str], None] | None = None) -> RunResult:
    """Run ``config`` (or open its saved run), showing progress; raises TokconvError on bad settings.

    With ``live`` the run gets an expandable status box with a progress bar, the sequence as it changes
    and a Cancel button; without it only ``tick`` (a line of text) is called between steps.
    """
    key = config.key()
    found = peek(config)
    if found is not None:
        _remember(key, config, found[0], origin, found[1])
        return found[0]
    partial: dict[str, Any] = {"config": config, "origin": origin, "labels": None, "records": []}
    st.session_state[PARTIAL] = partial
    box = st.status(running_label(config), expanded=True) if live else st.container()
    try:
        with box:
            result = _stream(config, origin, partial, live, tick)
    except Exception:
        if live:
            box.update(label="This run could not start or failed; see the message below.", state="error", expanded=False)
        raise
    # bookkeeping first, with no st.* call in between: a rerun can only cut the script at one
    st.session_state.pop(PARTIAL, None)
    saved = runstore.save(result)
    _remember(key, config, result, origin, saved)
    if result.status != "interrupted" and saved is None:
        _shared_runs().put(key, result)
    if live:
        note = f" Saved as run #{saved}." if saved is not None else ""
        box.update(label=f"Finished: {status_sentence(result)}{note}", state="complete", expanded=False)
    return result


def show_error(exc: BaseException) -> None:
    """A TokconvError as problem + fix; anything else as a friendly message (the details go to the server log).

    The problem and fix often quote what the user typed (a model name, a path): they are shown as plain text."""
    if isinstance(exc, TokconvError):
        st.error(md(exc.problem))
        if exc.fix:
            st.info(md(exc.fix))
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
