"""`tokconv vocab`: how two real vocabularies relate, id by id."""

from __future__ import annotations

import json

import pytest

from tokconv.cli import main
from tokconv.models import load_vocabulary
from tokconv.models.vocab import compare_vocabularies


@pytest.mark.slow
def test_smollm2_and_qwen_vocabularies_compared(capsys):
    from tokconv.models import loaded_specs

    smol, qwen = load_vocabulary("smollm2-135m"), load_vocabulary("qwen2.5-coder-0.5b")
    for lm in (smol, qwen):  # tokenizers only, unless the model is in memory already (then that one)
        assert lm.model is None or lm.spec in loaded_specs()
    c = compare_vocabularies(smol, qwen)
    assert (c.size_a, c.size_b) == (49_152, 151_936)
    assert c.id0_b == "!" and c.id0_a == "<|endoftext|>"
    assert c.first_divergent == 0  # the two byte-level BPE vocabularies differ from id 0 on
    assert 0 < c.same_text < 1000
    assert c.beyond_b == 0.0  # every SmolLM2 id is a valid Qwen id...
    assert 0.5 < c.beyond_a < 0.8  # ...but most of Qwen's ordinary ids are past SmolLM2's end
    assert main(["vocab", "smollm2-135m", "qwen2.5-coder-0.5b", "--format", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["id0_b"] == "!" and printed["size_b"] == 151_936


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m", "qwen2.5-coder-0.5b", "gemma3-270m"])
def test_ordinary_ids_from_one_backend_call_are_those_of_one_decode_per_id(name):
    """Random start sequences are drawn from these ids: the fast path must keep every seed's start."""
    import numpy as np

    from tokconv.models import vocab

    lm = load_vocabulary(name)
    hf = lm.tokenizer._tokenizer
    fast = vocab._ordinary_ids(lm)

    class OneByOne:  # the same tokenizer without its backend: one hf.decode per id
        _tokenizer = None

        def __getattr__(self, attr):
            return getattr(hf, attr)

    slow = vocab._ordinary_ids(type("LM", (), {"tokenizer": type("W", (), {"_tokenizer": OneByOne()})(),
                                                "vocab_size": lm.vocab_size})())
    assert fast.size > 10_000
    np.testing.assert_array_equal(fast, slow)


def test_same_vocabulary_is_equal_tokenizer_keys_with_sizes_compared_first(monkeypatch):
    import dataclasses

    from conftest import make_tiny_lm
    from tiny import CharTokenizer, PairTokenizer, UnicodeTokenizer
    from tokconv.models import vocab

    def lm(name, tokenizer):
        return dataclasses.replace(make_tiny_lm(vocab_size=tokenizer.vocab_size), name=name, spec=name, tokenizer=tokenizer)

    a, a2 = lm("a", CharTokenizer(26)), lm("a2", CharTokenizer(26))
    pairs, wide, uni = lm("p", PairTokenizer(26, "ab")), lm("w", CharTokenizer(27)), lm("u", UnicodeTokenizer(26))
    hashed = []
    real = vocab.tokenizer_key
    monkeypatch.setattr(vocab, "tokenizer_key", lambda m: hashed.append(m.name) or real(m))
    assert vocab.same_vocabulary(a, a) and not hashed  # one model: nothing to hash
    assert vocab.same_vocabulary(a, a2)  # two models, one vocabulary
    assert not vocab.same_vocabulary(a, pairs) and not vocab.same_vocabulary(a, uni)  # same size, other pieces
    hashed.clear()
    assert not vocab.same_vocabulary(a, wide) and not hashed  # sizes differ: no hashing
    read = []
    monkeypatch.setattr(CharTokenizer, "get_vocab", lambda self, real=CharTokenizer.get_vocab: read.append(1) or real(self))
    assert not vocab.same_vocabulary(a, wide) and not read  # each size read once per model (every run of a sweep asks)
    for x in (a, a2, pairs, wide, uni):
        for y in (a, a2, pairs, wide, uni):
            assert vocab.same_vocabulary(x, y) == (real(x) == real(y))
