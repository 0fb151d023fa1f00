"""One shared position axis for models with different tokenizers: the characters of the shared text.

Two models with different vocabularies cannot share token positions: one model's token can be
two of the other's. They share the *text* instead, and a position is a character offset into it.

- A move by model p at its token i replaces the characters ``[start, end)`` that the token covers
  in the text p sees, with the text p's new token decodes to there (:func:`edit_between`).
- Flip counts live on the characters of the current text (:class:`FlipCounts`): each inserted
  character inherits the highest count among the characters it replaces, plus one; the
  characters after the edit shift with it. A character whose count reaches ``block_after`` is
  blocked, and a move whose span holds a blocked character is not made. Both models therefore
  spend one block budget per place, as two models with one vocabulary do per token position
  (with one vocabulary and one character per token the rule is exactly the per-position rule).
- A move never puts an incomplete UTF-8 sequence into the text: a byte-level token decoded in a
  place where it does not complete a character would enter the text as U+FFFD (``'�'``). Such a
  move is treated as no valid move at that position, and the model's next-best position is
  taken (:func:`splits_a_character`). Completing the character with the model's own greedy
  continuation was the alternative; it would make one move insert several tokens, so that a
  turn is no longer one token, and the model would be credited with bytes it never chose alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..models import LoadedModel

REPLACEMENT = "\ufffd"  # what a decoder puts where bytes do not make a whole character


@dataclass(frozen=True)
class Edit:
    """The characters ``[start, end)`` of the old text replaced by ``inserted``."""

    start: int
    end: int
    inserted: str

    def apply(self, text: str) -> str:
        return text[: self.start] + self.inserted + text[self.end :]


def token_spans(lm: LoadedModel, ids: list[int], text: str | None = None) -> list[tuple[int, int]]:
    """The characters ``[start, end)`` of ``text`` (``lm.decode(ids)``) that each token covers.

    Tokens that together make one character (byte pieces) share that character's span.
    """
    text = lm.decode(ids) if text is None else text
    pieces = [lm.token_text(t) for t in ids]
    if "".join(pieces) == text and not any(REPLACEMENT in p for p in pieces):
        ends, at = [], 0
        for p in pieces:
            at += len(p)
            ends.append(at)
    else:  # byte pieces or a decoder that is not a plain concatenation: decode prefixes
        ends = [_clean_prefix(lm.decode(ids[: i + 1]), text) for i in range(len(ids))]
    spans, start = [], 0
    for end in ends:
        end = max(end, start)
        spans.append((start, end))
        start = end
    # a token that ends inside a character covers no character of its own: give it the next one's
    for i in range(len(spans) - 2, -1, -1):
        if spans[i][0] == spans[i][1]:
            spans[i] = (spans[i][0], spans[i + 1][1])
    return spans


def _clean_prefix(decoded: str, text: str) -> int:
    """How much of ``text`` the prefix ``decoded`` covers, not counting a trailing broken character."""
    n = 0
    limit = min(len(decoded), len(text))
    while n < limit and decoded[n] == text[n]:
        n += 1
    return n


def splits_a_character(before: str, after: str) -> bool:
    """True when ``after`` holds more U+FFFD than ``before``: a byte piece left a character incomplete."""
    return after.count(REPLACEMENT) > before.count(REPLACEMENT)


def edit_between(before: str, after: str, span: tuple[int, int]) -> Edit:
    """The edit that turns ``before`` into ``after``, covering at least the token span ``span``.

    For byte-level tokenizers the new text is exactly ``before`` with the span's characters
    replaced; where a decoder also touches neighbouring characters, the edit widens to them.
    """
    cp = 0
    limit = min(len(before), len(after))
    while cp < limit and before[cp] == after[cp]:
        cp += 1
    cs = 0
    while cs < limit - cp and before[len(before) - 1 - cs] == after[len(after) - 1 - cs]:
        cs += 1
    start = min(span[0], cp)
    end = max(span[1], len(before) - cs)
    return Edit(start, end, after[start : len(after) - (len(before) - end)])


class FlipCounts:
    """How often each character of the shared text was flipped (see the module's rule)."""

    def __init__(self, length: int) -> None:
        self.counts = [0] * length

    def truncate(self, length: int) -> None:
        """The text lost its tail (a model keeps at most its token count of the start text)."""
        del self.counts[length:]

    def blocked(self, start: int, end: int, block_after: int) -> bool:
        """Whether any character of ``[start, end)`` is blocked."""
        return any(c >= block_after for c in self.counts[start:end])

    def apply(self, edit: Edit) -> None:
        """Count one flip on the characters ``edit`` puts in."""
        count = max(self.counts[edit.start : edit.end], default=0) + 1
        self.counts[edit.start : edit.end] = [count] * len(edit.inserted)
        if not edit.inserted and edit.start < len(self.counts):  # a deletion: the next character carries it
            self.counts[edit.start] = max(self.counts[edit.start], count)
