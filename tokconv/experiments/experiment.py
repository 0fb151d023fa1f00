"""Run a convergence experiment: pick the start, stream the mode's records, collect a result.

    import tokconv
    result = tokconv.run(tokconv.RunConfig(mode="adversarial-single", model_a="smollm2-135m",
                                           model_b="qwen2.5-coder-0.5b", length=20))
    print(result.status, result.fingerprints)
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Generator, Iterator, Sequence

import mlx_lm

from ..engine import Scores, arithmetic
from ..errors import TokconvError
from ..models import LoadedModel, load
from ..models.vocab import random_tokens, same_vocabulary
from ..version import __version__
from . import modes
from .config import MAX_LENGTH, RunConfig
from .records import IterationEnd, Record, RunCost, RunEnd, RunResult, Step

__all__ = ["Experiment", "collect", "fingerprints", "partial_result", "prepare", "run"]


@dataclass
class Experiment:
    """A prepared run: loaded models, players and the start state. Iterate ``records()`` to run it."""

    config: RunConfig
    players: list[modes.Player]
    state: modes.State
    start_tokens: list[int]
    start_text: str

    def records(self, should_stop: Callable[[], bool] | None = None) -> Iterator[Record]:
        """Stream the mode's step records, ending with one RunEnd.

        ``should_stop`` is asked before the first iteration and after each one; a yes ends
        the run as ``interrupted`` (one place for every mode, rather than in each loop).
        """
        records = modes.served(self.requests())
        return records if should_stop is None else self._stoppable(records, should_stop)

    def requests(self) -> Generator[Record | modes.ScoreRequest, Scores | None, None]:
        """The mode's generator itself: records and score requests, each request to be answered
        by sending its scores back (:func:`tokconv.experiments.lockstep.run_lockstep` does, for many runs)."""
        return modes.RUNNERS[self.config.mode](self.players, self.state, self.config)

    def _stoppable(self, records: Iterator[Record], should_stop: Callable[[], bool]) -> Iterator[Record]:
        if should_stop():
            yield RunEnd("interrupted", 0, None, self.state.text)
            return
        for rec in records:
            yield rec
            if isinstance(rec, IterationEnd) and should_stop():
                records.close()
                yield RunEnd("interrupted", rec.iteration, None, self.state.text)
                return

    def cost(self) -> RunCost:
        """Forward passes, forwarded tokens and model seconds, summed over players."""
        total = RunCost()
        for p in self.players:
            total.forward_passes += p.session.cost.forward_passes
            total.forwarded_tokens += p.session.cost.forwarded_tokens
            total.seconds += p.session.cost.seconds
            total.nonfinite_rows += p.session.cost.nonfinite_rows
        return total


def _labels(models: list[LoadedModel]) -> list[str]:
    names = [m.name for m in models]
    if len(set(names)) < len(names):  # the same model twice: tell the sides apart
        return [f"{n} ({side})" for n, side in zip(names, "AB")]
    return names


def prepare(config: RunConfig, models: Sequence[LoadedModel] | None = None,
            progress: Callable[[str], None] | None = None, *, start: Sequence[int] | None = None) -> Experiment:
    """Load the models (or use ``models``, one per spec in ``config.models``) and build the start
    state: ``start`` (model A's token ids), else the start text, else random tokens from model A's
    vocabulary."""
    if models is not None and len(models) != len(config.models):
        raise TokconvError(f"mode '{config.mode}' takes {len(config.models)} model(s), {len(models)} given",
                           "pass one loaded model per model in the settings")
    lms = list(models) if models is not None else [load(spec, progress, config.dtype) for spec in config.models]
    labels = _labels(lms)
    players = [modes.Player(lm, i, label, oov=config.oov,
                            others="".join(f" (from {o}, {m.vocab_size:,} ids)" for o, m in zip(labels, lms) if m is not lm))
               for i, (lm, label) in enumerate(zip(lms, labels))]
    a = lms[0]
    if start is not None:
        start = [int(t) for t in start]
    elif config.start_text is not None:
        start = a.encode(config.start_text)
        if len(start) < 2:
            raise TokconvError(
                f"the start text is only {len(start)} token(s) long", "give a longer start text (2 tokens or more)"
            )
        if len(start) > MAX_LENGTH:
            raise TokconvError(
                f"the start text is {len(start)} tokens long, more than the maximum of {MAX_LENGTH}",
                f"shorten it to at most {MAX_LENGTH} tokens",
            )
    else:
        start = random_tokens(a, config.length, config.seed)
    # one vocabulary: shared token positions; else the text, unless the settings ask for ids
    shared = config.share == "ids" or all(same_vocabulary(lm, a) for lm in lms)
    state = modes.State(players, start, shared_ids=shared)
    return Experiment(config, players, state, list(start), state.text)


def fingerprints(steps: list[Step], labels: list[str]) -> dict[str, dict[str, int]]:
    """Per model, the text of each token it inserted and how often, most frequent first.

    Across tokenizers this is the text the move put into the shared text (a byte piece that
    completes a character counts as that character)."""
    out: dict[str, dict[str, int]] = {}
    for label in labels:
        counts = Counter(s.new_text if s.inserted is None else s.inserted for s in steps if s.model == label)
        out[label] = dict(counts.most_common())
    return out


def _versions(players: Sequence[Any]) -> dict[str, str]:
    """What computed a run: tokconv's and mlx-lm's versions, and each model's arithmetic (whether its
    products took int16 inputs: such runs can take other moves at near-ties than float32 ones)."""
    out = {"tokconv": __version__, "mlx_lm": mlx_lm.__version__}
    for p in players:
        out[f"arithmetic:{p.label}"] = arithmetic(p.lm)
    return out


def collect(exp: Experiment, records: Iterator[Record], on_record: Callable[[Record], None] | None = None) -> RunResult:
    """Consume a record stream into a RunResult (calling ``on_record`` for each record)."""
    labels = [p.label for p in exp.players]
    result = RunResult(
        config=exp.config,
        models=labels,
        start_text=exp.start_text,
        start_tokens=exp.start_tokens,
        versions=_versions(exp.players),
    )
    t0 = time.perf_counter()
    try:
        for rec in records:
            if on_record:
                on_record(rec)
            if isinstance(rec, Step):
                result.steps.append(rec)
            elif isinstance(rec, IterationEnd):
                result.iterations_log.append(rec)
            elif isinstance(rec, RunEnd):
                result.status, result.iterations, result.period = rec.status, rec.iterations, rec.period
                result.final_text = rec.final_text
    except KeyboardInterrupt:
        result.status, result.iterations = "interrupted", len(result.iterations_log)
        result.final_text = exp.state.text
    result.fingerprints = fingerprints(result.steps, labels)
    result.cost = exp.cost()
    result.cost.wall_seconds = time.perf_counter() - t0
    return result


def partial_result(config: RunConfig, labels: list[str], start_text: str, start_tokens: list[int],
                   records: Sequence[Record]) -> RunResult:
    """The ``interrupted`` result of a run cut short after ``records`` (the dashboard keeps them while it runs)."""
    steps = [r for r in records if isinstance(r, Step)]
    log = [r for r in records if isinstance(r, IterationEnd)]
    return RunResult(
        config=config, models=list(labels), start_text=start_text, start_tokens=list(start_tokens),
        steps=steps, iterations_log=log, status="interrupted", iterations=len(log),
        final_text=log[-1].text if log else start_text, fingerprints=fingerprints(steps, list(labels)),
        versions={"tokconv": __version__, "mlx_lm": mlx_lm.__version__},
    )


def run(
    config: RunConfig,
    *,
    models: Sequence[LoadedModel] | None = None,
    progress: Callable[[str], None] | None = None,
    on_record: Callable[[Record], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RunResult:
    """Run one experiment to the end and return its result."""
    exp = prepare(config, models, progress=progress)
    return collect(exp, exp.records(should_stop), on_record)
