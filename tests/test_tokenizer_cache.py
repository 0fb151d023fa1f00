"""The pickled tokenizer of a converted folder is the tokenizer mlx-lm loads, and a bad or stale
pickle, or a folder that cannot be written to, never breaks a load (tokconv/models/tokenizer_cache.py)."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from mlx_lm.utils import load_config, load_tokenizer

from tokconv.models import load, tokenizer_cache
from tokconv.models.loading import _bos_id
from tokconv.models.resolve import resolve
from tokconv.models.tokenizer_cache import cache_file, load_cached_tokenizer

pytestmark = pytest.mark.slow  # every test reads a bundled model's tokenizer files

TEXTS = [
    "The capital of France is",
    "  leading spaces,\ttabs\nand\r\nnewlines  ",
    "def f(x):\n    return x ** 2  # squares\n",
    "Grüße, naïve café — ½ € 你好，世界 こんにちは 🙂🚀",
    "<|im_start|>user\nhi<|im_end|><|endoftext|>",
    "!!!!!! ?? ... ''' \"\" ```",
    "",
]


def _folder(name: str) -> tuple[Path, object]:
    path, _, _ = resolve(name)
    return path, load_config(path).get("eos_token_id")  # as mlx_lm.load passes it


def _forbid_fresh_loads(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("loaded the tokenizer afresh instead of from its pickle")

    monkeypatch.setattr(tokenizer_cache, "load_tokenizer", refuse)


def _assert_same_tokenizer(a, b, vocab_size: int) -> None:
    for text in TEXTS:
        assert a.encode(text, add_special_tokens=False) == b.encode(text, add_special_tokens=False), text
        assert a.encode(text) == b.encode(text), text
    every = [[i] for i in range(vocab_size)]
    assert a.batch_decode(every) == b.batch_decode(every)
    rng = random.Random(0)
    for _ in range(20):
        ids = [rng.randrange(vocab_size) for _ in range(rng.randrange(1, 40))]
        assert a.decode(ids) == b.decode(ids)
        da, db = a.detokenizer, b.detokenizer
        da.reset(), db.reset()
        for t in ids:
            da.add_token(t), db.add_token(t)
        da.finalize(), db.finalize()
        assert da.text == db.text
    assert a.vocab == b.vocab
    assert list(a.eos_token_ids) == list(b.eos_token_ids)
    assert type(a.detokenizer) is type(b.detokenizer)
    assert _bos_id(a) == _bos_id(b)


@pytest.mark.parametrize("name", ["smollm2-135m", "qwen2.5-coder-0.5b", "gemma3-270m"])
def test_the_pickled_tokenizer_encodes_and_decodes_as_mlx_lm_loads_it(name, monkeypatch):
    path, eos = _folder(name)
    load_cached_tokenizer(path, eos)  # writes the pickle where this cache has none yet
    assert cache_file(path, eos).is_file()
    _forbid_fresh_loads(monkeypatch)
    pickled = load_cached_tokenizer(path, eos)
    monkeypatch.undo()
    fresh = load_tokenizer(path, eos_token_ids=eos)
    size = json.loads((path / "config.json").read_text()).get("vocab_size") or len(fresh.vocab)
    _assert_same_tokenizer(pickled, fresh, min(int(size), len(fresh.vocab)))


def test_a_model_load_and_a_vocabulary_load_share_one_pickle(monkeypatch):
    from tokconv.models.loading import load_vocabulary, unregister

    lm = load("smollm2-135m")
    pickles = sorted(lm.path.glob(f"{tokenizer_cache.PREFIX}*"))
    assert pickles == [cache_file(lm.path, load_config(lm.path).get("eos_token_id"))]
    unregister("smollm2-135m")
    try:
        _forbid_fresh_loads(monkeypatch)
        vocab_only = load_vocabulary("smollm2-135m")
    finally:
        monkeypatch.undo()
        load("smollm2-135m")
    assert sorted(lm.path.glob(f"{tokenizer_cache.PREFIX}*")) == pickles
    assert vocab_only.tokenizer.encode(TEXTS[3]) == lm.tokenizer.encode(TEXTS[3])


@pytest.fixture()
def json_only_copy(tmp_path: Path) -> tuple[Path, object]:
    """SmolLM2's folder without its weights: all a tokenizer load reads."""
    path, eos = _folder("smollm2-135m")
    for f in path.glob("*.json"):
        shutil.copy(f, tmp_path / f.name)
    return tmp_path, eos


def test_a_corrupt_pickle_is_loaded_past_and_written_again(json_only_copy, monkeypatch):
    folder, eos = json_only_copy
    target = cache_file(folder, eos)
    target.write_bytes(b"\x80\x05 not a pickle")
    tok = load_cached_tokenizer(folder, eos)
    assert tok.encode(TEXTS[0]) == load_tokenizer(folder, eos_token_ids=eos).encode(TEXTS[0])
    _forbid_fresh_loads(monkeypatch)
    assert load_cached_tokenizer(folder, eos).encode(TEXTS[3]) == tok.encode(TEXTS[3])


def test_a_changed_tokenizer_file_gets_a_new_pickle_and_the_old_one_goes(json_only_copy):
    folder, eos = json_only_copy
    load_cached_tokenizer(folder, eos)
    old = cache_file(folder, eos)
    config = folder / "tokenizer_config.json"
    settings = json.loads(config.read_text())
    settings["model_max_length"] = 12345
    config.write_text(json.dumps(settings))
    new = cache_file(folder, eos)
    assert new != old
    tok = load_cached_tokenizer(folder, eos)
    assert tok.model_max_length == 12345  # not the stale pickle's tokenizer
    assert sorted(folder.glob(f"{tokenizer_cache.PREFIX}*")) == [new]
    assert cache_file(folder, [eos, 7]) != new  # what load() passes is part of the key too


def test_a_folder_that_cannot_take_the_pickle_still_loads(json_only_copy):
    folder, eos = json_only_copy
    cache_file(folder, eos).mkdir()  # the name taken by a folder: the write fails (also as root)
    tok = load_cached_tokenizer(folder, eos)
    assert tok.encode(TEXTS[2]) == load_tokenizer(folder, eos_token_ids=eos).encode(TEXTS[2])
    assert cache_file(folder, eos).is_dir()


def test_the_switch_turns_the_pickle_off(json_only_copy, monkeypatch):
    folder, eos = json_only_copy
    monkeypatch.setenv("TOKCONV_NO_TOKENIZER_CACHE", "1")
    assert load_cached_tokenizer(folder, eos).encode(TEXTS[0])
    assert not list(folder.glob(f"{tokenizer_cache.PREFIX}*"))
