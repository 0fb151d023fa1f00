"""Who plays and what they play on: :class:`Player` (a model with its KV-cached scoring session),
:class:`State` (the sequence the players share: token ids, or text across tokenizers), and the
score requests through which a mode asks for scores (:func:`ask`, answered by :func:`served` for
one run, or by :mod:`.lockstep` for many at once).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from ..engine import Scorer, Scores, ScoringSession
from ..errors import TokconvError
from ..models import LoadedModel
from .textaxis import Edit, FlipCounts, edit_between, splits_a_character, token_spans


@dataclass
class Player:
    """One model taking part in a run."""

    lm: LoadedModel
    index: int
    label: str
    oov: str = "error"  # what to do with ids beyond this model's vocabulary (shared ids only)
    others: str = ""  # the other model, for messages about its ids
    session: ScoringSession = field(init=False)
    flips: dict[int, int] = field(default_factory=dict)  # position -> times this player changed it
    blocked: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.session = Scorer(self.lm).session()

    def known(self, token: int) -> bool:
        """Whether ``token`` is an id of this model's vocabulary."""
        return 0 <= int(token) < self.lm.vocab_size

    def piece(self, token: int) -> str:
        """The text of one token; an id beyond the vocabulary shows as ``⟨id N⟩``."""
        return self.lm.token_text(token) if self.known(token) else f"⟨id {int(token)}⟩"

    def decode(self, ids: list[int]) -> str:
        """The text of ``ids``, ids beyond the vocabulary shown as ``⟨id N⟩``."""
        if all(self.known(t) for t in ids):
            return self.lm.decode(ids)
        out, run = [], []
        for t in ids:
            if self.known(t):
                run.append(t)
            else:
                out += [self.lm.decode(run), self.piece(t)]
                run = []
        return "".join(out + [self.lm.decode(run)])

    def score(self, ids: list[int], *, upto: int | None = None) -> Scores:
        """Scores of ``ids`` by this model (its own KV-cached session), ids beyond its vocabulary
        handled as :meth:`inputs` says."""
        arr, poison = self.inputs(ids)
        return self.session.score(arr, upto=upto, poison=poison)

    def inputs(self, ids: list[int]) -> tuple[np.ndarray, np.ndarray | None]:
        """What this model reads for ``ids`` (1, L), and where it reads a NaN embedding (or None).
        Ids beyond its vocabulary are handled by ``oov``: ``error`` stops, ``unk`` reads the unknown
        token there, ``nan`` feeds a NaN embedding there."""
        arr = np.array([ids], dtype=np.int64)
        bad = (arr < 0) | (arr >= self.lm.vocab_size)
        poison = None
        if bad.any():
            first = int(arr[bad][0])
            if self.oov == "error":
                raise TokconvError(
                    f"token id {first}{self.others} is outside {self.label}'s vocabulary of "
                    f"{self.lm.vocab_size:,} ids (0..{self.lm.vocab_size - 1})",
                    "share the text (--share text, the default), or pick what happens to such ids with --oov nan|unk",
                )
            if self.oov == "unk":
                arr = np.where(bad, unknown_id(self.lm), arr)
            else:
                poison, arr = bad, np.where(bad, 0, arr)
        return arr, poison


@dataclass(frozen=True)
class ScoreRequest:
    """A mode asks for ``player``'s scores of ``ids`` (current up to position ``upto``, all when
    None); whoever drives the mode's generator sends the :class:`~tokconv.engine.Scores` back."""

    player: Player
    ids: tuple[int, ...]
    upto: int | None = None


def ask(p: Player, ids, upto: int | None = None) -> ScoreRequest:
    """The request for ``p``'s scores of ``ids`` (a snapshot: ``ids`` may change after)."""
    return ScoreRequest(p, tuple(int(t) for t in ids), upto)


def answer(request: ScoreRequest) -> Scores:
    """The scores ``request`` asks for, from the player's own session."""
    return request.player.score(list(request.ids), upto=request.upto)


def served(records: Iterator) -> Iterator:
    """Drive a mode generator alone: answer each :class:`ScoreRequest` at once from the player's
    own session; yield the records (and pass on a generator's return value)."""
    reply = None
    try:
        while True:
            try:
                item = records.send(reply)
            except StopIteration as stop:
                return stop.value
            if isinstance(item, ScoreRequest):
                reply = answer(item)
            else:
                reply = None
                yield item
    finally:
        records.close()


def now(requests: Iterator):
    """The return value of a generator that only asks for scores (:func:`mismatches`, a turn),
    each request served at once: for callers outside a mode."""
    reply = None
    while True:
        try:
            item = requests.send(reply)
        except StopIteration as stop:
            return stop.value
        if not isinstance(item, ScoreRequest):
            raise TypeError(f"expected only score requests, got {item!r}")
        reply = answer(item)


def unknown_id(lm: LoadedModel) -> int:
    """The model's unknown token, else its padding token, else its end-of-text token, else 0."""
    hf = getattr(lm.tokenizer, "_tokenizer", lm.tokenizer)
    for name in ("unk_token_id", "pad_token_id", "eos_token_id"):
        value = getattr(hf, name, None)
        if isinstance(value, int) and 0 <= value < lm.vocab_size:
            return value
    return 0


class State:
    """The sequence the players act on: ids when all players share a vocabulary, else text."""

    def __init__(self, players: list[Player], start_ids: list[int], shared_ids: bool) -> None:
        self.players = players
        self.shared_ids = shared_ids
        self.ids = list(start_ids)
        self.text = players[0].decode(start_ids)
        self._encoded: dict[int, tuple[str, list[int]]] = {}
        # Across tokenizers one model's token can be two of the other's, so the text could grow
        # without bound; each model keeps at most as many tokens as the start text has in its own
        # tokenization (a longer text loses its tail on that model's turn).
        self.caps = {p.index: max(2, len(p.lm.encode(self.text))) for p in players} if not shared_ids else {}
        self.flips = FlipCounts(len(self.text))  # per character of the shared text (across tokenizers)

    def ids_for(self, p: Player) -> list[int]:
        """The sequence in ``p``'s tokenization (capped at its token count of the start text)."""
        if self.shared_ids:
            return list(self.ids)
        cached = self._encoded.get(p.index)
        if cached is None or cached[0] != self.text:
            ids = p.lm.encode(self.text)
            if len(ids) > self.caps[p.index]:
                ids = ids[: self.caps[p.index]]
                # a cut inside one character's byte tokens would decode to U+FFFD and put it into
                # the shared text: cut before that character instead
                while len(ids) > 1 and not self.text.startswith(p.lm.decode(ids)):
                    ids.pop()
            cached = (self.text, ids)
            self._encoded[p.index] = cached
        return list(cached[1])

    def update(self, p: Player, ids: list[int]) -> None:
        """Set the state from ``p``'s tokens after its move."""
        self.ids = list(ids)
        self.text = p.decode(ids)
        if not self.shared_ids:
            self._encoded = {p.index: (self.text, list(ids))}

    def text_edit(self, p: Player, ids: list[int], i: int, new: int, view: str | None = None,
                  spans: list[tuple[int, int]] | None = None) -> tuple[list[int], str, Edit] | None:
        """Across tokenizers: ``p``'s tokens with ``new`` at ``i``, the new text and the edit of the
        shared text; None when the move would leave a character incomplete (no valid move there).
        ``view`` (the text of ``ids``) and ``spans`` (their :func:`token_spans`) are derived when not given."""
        view = p.lm.decode(ids) if view is None else view
        moved = [*ids[:i], int(new), *ids[i + 1 :]]
        after = p.lm.decode(moved)
        if splits_a_character(view, after):
            return None
        span = (token_spans(p.lm, ids, view) if spans is None else spans)[i]
        return moved, after, edit_between(view, after, span)

    def apply_text_edit(self, p: Player, ids: list[int], edit: Edit, seen: int) -> None:
        """Across tokenizers: count the flip on the shared characters (the first ``seen`` of them were
        what ``p`` read) and take ``p``'s new tokens."""
        self.flips.truncate(seen)
        self.flips.apply(edit)
        self.update(p, ids)
        self.flips.truncate(len(self.text))

    def blocked_positions(self, spans: list[tuple[int, int]], block_after: int) -> set[int]:
        """Across tokenizers: the token positions whose character ``spans`` hold a blocked character."""
        return {i for i, (a, b) in enumerate(spans) if self.flips.blocked(a, b, block_after)}

    def key(self) -> tuple:
        """A hashable snapshot, for detecting cycles."""
        return tuple(self.ids) if self.shared_ids else (self.text,)
