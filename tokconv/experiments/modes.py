"""The five convergence modes as generators of step records.

Every mode works on token ids through :class:`Player` objects (a model plus a
KV-cached scoring session). A replacement always puts the acting model's argmax
prediction at one position; position 0 has no prediction of its own in the
original experiment and always keeps its token.

Two models with the same vocabulary share token positions directly. Two models
with different tokenizers share *text*: on its turn a model encodes the current
text with its own tokenizer, makes its move(s), and decodes the result. Positions
in its steps are indices into its own tokenization of that text; each step also
records the characters of the shared text it replaced, and flip counts and blocking
live on those characters (:mod:`.textaxis`).

A mode never calls the model itself: where it needs scores it yields a :class:`ScoreRequest`
and is sent the :class:`~tokconv.engine.Scores` back (``scores = yield ask(p, ids)``).
:func:`served` answers each request at once from the player's own session (one run);
:mod:`.lockstep` gathers the requests of many runs into batched model calls. Each mode's
rules are written once, here, for both.
"""

from __future__ import annotations

from typing import Callable, Generator, Iterator

import numpy as np

from ..engine import Scores
from .config import MODES, RunConfig
from .players import Player, ScoreRequest, State, answer, ask, now, served, unknown_id
from .records import IterationEnd, Record, RunEnd, Step
from .textaxis import Edit, token_spans

__all__ = [  # the players and score requests live in .players; re-exported for the modes' callers
    "Player",
    "RUNNERS",
    "Runner",
    "ScoreRequest",
    "State",
    "answer",
    "apply_single",
    "ask",
    "iteration_end",
    "mismatch_positions",
    "mismatches",
    "now",
    "pick_single",
    "run_adversarial",
    "run_adversarial_single",
    "run_batch",
    "run_sequential",
    "run_single",
    "sequential_pass",
    "served",
    "single_turn",
    "stuck_status",
    "text_single_turn",
    "unknown_id",
]


def _step(p: Player, iteration: int, pos: int, old: int, scores: Scores, row: int = 0, edit: Edit | None = None) -> Step:
    """The record of putting the prediction of ``scores`` at ``pos`` (over token ``old``)."""
    new = int(scores.argmax[row, pos])
    span = (edit.start, edit.end, edit.inserted) if edit is not None else (None, None, None)
    return Step(iteration, p.label, p.index, pos, int(old), new, p.piece(old), p.piece(new),
                float(scores.entropy[row, pos]), float(scores.prob[row, pos]), bool(scores.finite[row, pos]), *span)


def iteration_end(p: Player, iteration: int, ids: list[int], changes: int, blocked=()) -> IterationEnd:
    """The record after an iteration: ``p``'s tokens, their pieces and the decoded text (byte
    pieces show as U+FFFD one by one, but the text holds the characters they make together)."""
    pieces = tuple(p.piece(t) for t in ids)
    return IterationEnd(iteration, p.label, p.index, tuple(int(t) for t in ids), pieces, p.decode(ids), changes,
                        tuple(sorted(blocked)))


def sequential_pass(p: Player, ids: list[int], iteration: int, state: State | None = None):
    """One greedy left-to-right pass; yields each replacement (and score requests), leaves the
    result in ``ids`` and returns how many replacements it made (use with ``yield from``).

    Predictions are fetched lazily: right after a change only the changed token
    is forwarded; after agreements the look-ahead doubles, so a pass over an
    already consistent sequence takes a few model calls, not L. With a ``state``
    shared across tokenizers, each step records its characters, and a replacement
    that would leave a character incomplete is not made.
    """
    text_axis = state is not None and not state.shared_ids
    arr = np.array([ids], dtype=np.int64)
    L = arr.shape[1]
    valid, chunk, scores, made = 0, 0, None, 0
    for i in range(1, L):
        if scores is None or i > valid:
            valid = min(L - 1, i + chunk)
            scores = yield ask(p, arr[0], upto=valid)
        pred = int(scores.argmax[0, i])
        if pred != arr[0, i]:
            edit = None
            if text_axis:
                moved = state.text_edit(p, ids, i, pred)
                if moved is None:
                    chunk = max(1, 2 * chunk)
                    continue
                edit = moved[2]
            yield _step(p, iteration, i, arr[0, i], scores, edit=edit)
            made += 1
            arr = arr.copy()
            arr[0, i] = pred
            ids[i] = pred
            valid, chunk = i, 0  # predictions after i are stale now
        else:
            chunk = max(1, 2 * chunk)
    return made


def mismatch_positions(scores: Scores, ids, row: int = 0) -> np.ndarray:
    """Positions (>= 1) of ``row`` where the prediction differs from the token."""
    arr = np.asarray(ids)
    return np.nonzero(scores.argmax[row, 1:] != arr[1:])[0] + 1


def mismatches(p: Player, ids: list[int]):
    """Scores of ``ids`` and the positions (>= 1) where the prediction differs from the token
    (use with ``yield from``; :func:`now` outside a mode)."""
    scores = yield ask(p, ids)
    return scores, mismatch_positions(scores, ids)


def pick_single(scores: Scores, ids, blocked: set[int], row: int = 0) -> int | None:
    """The highest-entropy unblocked mismatch (ties: lowest position), or None if there is none."""
    pos = np.array([i for i in mismatch_positions(scores, ids, row) if i not in blocked], dtype=np.int64)
    if pos.size == 0:
        return None
    return int(pos[np.argmax(scores.entropy[row, pos])])  # argmax takes the first of equal maxima


def apply_single(p: Player, scores: Scores, ids: list[int], i: int, iteration: int, block_after: int, row: int = 0) -> Step:
    """Put the prediction at ``i``, count the flip and block the position once it flipped ``block_after`` times."""
    step = _step(p, iteration, i, ids[i], scores, row)
    ids[i] = step.new_token
    p.flips[i] = p.flips.get(i, 0) + 1
    if p.flips[i] >= block_after:
        p.blocked.add(i)
    return step


def single_turn(p: Player, scores: Scores, ids: list[int], iteration: int, block_after: int,
                row: int = 0) -> tuple[Step | None, IterationEnd]:
    """One single-token turn from ``scores``: the highest-entropy unblocked mismatch replaced in
    ``ids`` (None when there is none), and the iteration's end record. Solo single mode and
    adversarial-single with one vocabulary move through here."""
    i = pick_single(scores, ids, p.blocked, row)
    step = None if i is None else apply_single(p, scores, ids, i, iteration, block_after, row)
    return step, iteration_end(p, iteration, ids, int(step is not None), p.blocked)


def stuck_status(mismatches_left: int) -> str:
    """How a single-token run ends when no move is left: ``converged``, or ``all-blocked``."""
    return "converged" if mismatches_left == 0 else "all-blocked"


def _single_turn(p: Player, ids: list[int], iteration: int, block_after: int):
    scores = yield ask(p, ids)
    return single_turn(p, scores, ids, iteration, block_after)


def text_single_turn(p: Player, state: State, ids: list[int], iteration: int, block_after: int):
    """:func:`single_turn` across tokenizers (use with ``yield from``; it returns the step or None,
    and the iteration's end): positions whose characters are blocked are skipped, and so are moves
    that would leave a character incomplete (the next-highest entropy is taken)."""
    scores = yield ask(p, ids)
    view = p.lm.decode(ids)
    spans = token_spans(p.lm, ids, view)  # once per turn: every candidate move reads them
    blocked = state.blocked_positions(spans, block_after)
    pos = np.array([i for i in mismatch_positions(scores, ids) if i not in blocked], dtype=np.int64)
    # highest entropy first, ties by position; NaN first, as np.argmax takes it in single_turn
    ent = np.nan_to_num(scores.entropy[0, pos], nan=np.inf)
    for i in pos[np.lexsort((pos, -ent))]:
        moved = state.text_edit(p, ids, int(i), int(scores.argmax[0, i]), view, spans)
        if moved is None:
            continue
        new_ids, after, edit = moved
        step = _step(p, iteration, int(i), ids[i], scores, edit=edit)
        state.apply_text_edit(p, new_ids, edit, len(view))
        ids[:] = new_ids
        p.blocked = state.blocked_positions(token_spans(p.lm, ids, after), block_after)
        return step, iteration_end(p, iteration, ids, 1, p.blocked)
    p.blocked = blocked
    return None, iteration_end(p, iteration, ids, 0, blocked)


def run_sequential(players: list[Player], state: State, config: RunConfig) -> Iterator[Record]:
    """Solo greedy passes until a pass changes nothing."""
    p, max_iter = players[0], config.iterations
    for it in range(1, max_iter + 1):
        ids = state.ids_for(p)
        steps = yield from sequential_pass(p, ids, it)
        state.update(p, ids)
        yield iteration_end(p, it, ids, steps)
        if steps == 0:
            yield RunEnd("converged", it, None, state.text)
            return
    yield RunEnd("max-iterations", max_iter, None, state.text)


def run_single(players: list[Player], state: State, config: RunConfig) -> Iterator[Record]:
    """Solo: one highest-entropy replacement per iteration, with blocking."""
    p, max_iter = players[0], config.iterations
    for it in range(1, max_iter + 1):
        ids = state.ids_for(p)
        step, end = yield from _single_turn(p, ids, it, config.block_after)
        if step is not None:
            yield step
            state.update(p, ids)
        yield end
        if step is None:
            _, left = yield from mismatches(p, ids)
            yield RunEnd(stuck_status(left.size), it, None, state.text)
            return
    yield RunEnd("max-iterations", max_iter, None, state.text)


def run_batch(players: list[Player], state: State, config: RunConfig) -> Iterator[Record]:
    """Solo Jacobi iteration: every mismatch replaced at once from one scoring; cycles detected."""
    p, max_iter = players[0], config.iterations
    seen = {state.key(): 0}
    for it in range(1, max_iter + 1):
        ids = state.ids_for(p)
        scores, pos = yield from mismatches(p, ids)
        for i in pos:
            yield _step(p, it, int(i), ids[i], scores)
            ids[i] = int(scores.argmax[0, i])
        state.update(p, ids)
        yield iteration_end(p, it, ids, int(pos.size))
        if pos.size == 0:
            yield RunEnd("converged", it, None, state.text)
            return
        key = state.key()
        if key in seen:
            yield RunEnd("oscillating", it, it - seen[key], state.text)
            return
        seen[key] = it
    yield RunEnd("max-iterations", max_iter, None, state.text)


def run_adversarial(players: list[Player], state: State, config: RunConfig) -> Iterator[Record]:
    """Two models alternate full sequential passes; converged when a full round changes nothing."""
    max_iter = config.iterations
    seen = {(state.key(), 0): 0}
    quiet = 0  # consecutive passes that changed nothing
    for it in range(1, max_iter + 1):
        p = players[(it - 1) % 2]
        ids = state.ids_for(p)
        steps = yield from sequential_pass(p, ids, it, state)
        state.update(p, ids)
        yield iteration_end(p, it, ids, steps)
        quiet = quiet + 1 if steps == 0 else 0
        if quiet >= 2:
            yield RunEnd("converged", it, None, state.text)
            return
        key = (state.key(), it % 2)  # the state and whose turn is next
        if key in seen:
            yield RunEnd("oscillating", it, it - seen[key], state.text)
            return
        seen[key] = it
    yield RunEnd("max-iterations", max_iter, None, state.text)


def run_adversarial_single(players: list[Player], state: State, config: RunConfig) -> Iterator[Record]:
    """Two models alternate single replacements with blocking; ends when neither can move."""
    max_iter = config.iterations
    shared = state.shared_ids
    if shared:  # one flip count per position, whoever flips it
        players[1].flips, players[1].blocked = players[0].flips, players[0].blocked
    idle = 0  # consecutive turns without a move
    for it in range(1, max_iter + 1):
        p = players[(it - 1) % 2]
        ids = state.ids_for(p)
        if shared:
            step, end = yield from _single_turn(p, ids, it, config.block_after)
            if step is not None:
                state.update(p, ids)
        else:
            step, end = yield from text_single_turn(p, state, ids, it, config.block_after)
        if step is not None:
            yield step
        yield end
        idle = 0 if step is not None else idle + 1
        if idle >= 2:
            left = 0
            for q in players:
                left += (yield from mismatches(q, state.ids_for(q)))[1].size
            yield RunEnd(stuck_status(left), it, None, state.text)
            return
    yield RunEnd("max-iterations", max_iter, None, state.text)


# A mode's generator yields records and score requests (and is sent the scores back).
Runner = Callable[[list[Player], State, RunConfig], Generator[Record | ScoreRequest, Scores | None, None]]

# Each mode's generator, by the name tokconv.experiments.config.MODES gives it.
RUNNERS: dict[str, Runner] = {
    "sequential": run_sequential,
    "single": run_single,
    "batch": run_batch,
    "adversarial": run_adversarial,
    "adversarial-single": run_adversarial_single,
}
if RUNNERS.keys() != MODES.keys():  # a mode added to config.MODES without its generator here
    raise RuntimeError(f"modes without a runner: {sorted(MODES.keys() - RUNNERS.keys())}")
