"""GGUF -> mlx-lm conversion: clear errors, atomic writes, and real behaviour on the bundled models.

Each real model is converted once per module (SmolLM2 ~10 s, Qwen 0.5B and Gemma 3 ~30-50 s
each, hence their `slow` marks) into a fresh temp dir, so these tests always exercise the
current converter rather than a cached result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import mlx.core as mx
import mlx_lm
import numpy as np
import pytest
from tokenizers import Tokenizer

from tokconv.models.catalog import get_entry
from tokconv.errors import CorruptModelFile, ModelNotFound, UnsupportedArchitecture
from tokconv.models.gguf_convert import (
    SUPPORTED_ARCHITECTURES,
    convert_gguf,
    gguf_architecture,
    read_gguf,
    unpermute_rope_rows,
)

SMOL, QWEN, GEMMA = "smollm2-135m", "qwen2.5-coder-0.5b", "gemma3-270m"
ALL_MODELS = [SMOL, pytest.param(QWEN, marks=pytest.mark.slow), pytest.param(GEMMA, marks=pytest.mark.slow)]

ENGLISH = (
    "The sun rose slowly over the quiet village. Children walked to school while their parents "
    "went to work in the fields. In the afternoon, the market was full of people buying bread, "
    "fruit and vegetables. When the evening came, families sat together to eat dinner and talk "
    "about their day."
)
ROUND_TRIP_TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  two leading spaces",
    "trailing spaces   ",
    "multiple   inner    spaces",
    "paragraph one\n\nparagraph two\n",
    "\ttab\tseparated\tcolumns\t",
    "中文文本测试，你好世界。",
    "emoji 😀🎉👍🏽 mixed in",
    "def square(x):\n    return x ** 2  # comment\n",
    "Ünïcödé çåfé naïve résumé",
    " ",
    "\n",
]


@dataclass
class Converted:
    name: str
    gguf: Path
    path: Path
    model: Any
    tokenizer: Any  # mlx_lm TokenizerWrapper
    seconds: float


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory):
    """``converted(name)``: that catalog model converted (once per module), loaded with mlx_lm.load."""
    done: dict[str, Converted] = {}

    def get(name: str) -> Converted:
        if name not in done:
            source = get_entry(name).gguf_path()
            start = time.perf_counter()
            out = convert_gguf(source, tmp_path_factory.mktemp("converted") / name)
            seconds = time.perf_counter() - start
            model, tokenizer = mlx_lm.load(str(out))
            model.set_dtype(mx.float32)  # float32 is the fast path on CPU, and exact enough to compare
            done[name] = Converted(name, source, out, model, tokenizer, seconds)
        return done[name]

    return get


@pytest.fixture(scope="module")
def smol_gguf() -> Path:
    return get_entry(SMOL).gguf_path()


def mean_nll(model: Any, ids: list[int]) -> float:
    """Mean negative log-likelihood (nats/token) of ids[1:] given the prefixes."""
    logits = model(mx.array([ids]))[0].astype(mx.float32)  # (L, V)
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    return -mx.take_along_axis(logprobs[:-1], mx.array(ids[1:])[:, None], axis=-1).mean().item()


def _llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf.py LlamaModel.permute: HF Q/K rows -> llama.cpp's RoPE layout."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def leftovers(parent: Path, name: str) -> list[Path]:
    return [p for p in parent.iterdir() if p.name == name or p.name.startswith(f".{name}.tmp-")]


# --- errors ---------------------------------------------------------------------------------


def test_missing_file_raises_model_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    for call in (read_gguf, gguf_architecture, lambda p: convert_gguf(p, tmp_path / "out")):
        with pytest.raises(ModelNotFound, match="nope.gguf"):
            call(missing)
    with pytest.raises(ModelNotFound, match="directory"):
        read_gguf(tmp_path)
    assert not (tmp_path / "out").exists()


def test_random_bytes_raise_corrupt_model_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(np.random.default_rng(0).bytes(100_000))
    for call in (read_gguf, gguf_architecture, lambda p: convert_gguf(p, tmp_path / "out")):
        with pytest.raises(CorruptModelFile) as err:
            call(junk)
        assert str(junk) in err.value.problem and "not a GGUF file" in err.value.problem
        assert err.value.fix
    assert leftovers(tmp_path, "out") == []


def test_truncated_files_raise_corrupt_model_file(tmp_path: Path, smol_gguf: Path) -> None:
    size = smol_gguf.stat().st_size
    for keep in (1_000_000, size - 1000):  # cut inside the metadata, and inside the last tensor
        cut = tmp_path / f"cut-{keep}.gguf"
        with open(smol_gguf, "rb") as src:
            cut.write_bytes(src.read(keep))
        with pytest.raises(CorruptModelFile) as err:
            convert_gguf(cut, tmp_path / "out")
        assert str(cut) in err.value.problem and "truncated or corrupt" in err.value.problem
        assert "again" in err.value.fix
        assert leftovers(tmp_path, "out") == []


def test_unsupported_architecture_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tiny-bert.gguf"
    writer = gguf.GGUFWriter(str(path), "bert")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert gguf_architecture(path) == "bert"
    with pytest.raises(UnsupportedArchitecture) as err:
        convert_gguf(path, tmp_path / "out")
    assert "'bert'" in err.value.problem and all(a in err.value.problem for a in SUPPORTED_ARCHITECTURES)
    assert leftovers(tmp_path, "out") == []


def test_gguf_architecture_reads_only_the_header() -> None:
    for name, arch in ((SMOL, "llama"), (QWEN, "qwen2"), (GEMMA, "gemma3")):
        path = get_entry(name).gguf_path()  # assembles multi-part files on first use
        start = time.perf_counter()
        assert gguf_architecture(path) == arch
        assert time.perf_counter() - start < 1.0  # the full reader takes 5-20 s


def test_existing_out_dir_is_returned_untouched(tmp_path: Path) -> None:
    out = tmp_path / "done"
    out.mkdir()
    (out / "marker").write_text("x")
    assert convert_gguf(tmp_path / "absent.gguf", out) == out  # not even opened
    assert [p.name for p in out.iterdir()] == ["marker"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_interrupted_conversion_leaves_nothing_behind(
    tmp_path: Path, smol_gguf: Path, monkeypatch: pytest.MonkeyPatch, error: type[BaseException]
) -> None:
    out = tmp_path / "smol"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".smol.tmp-{dead.pid}-dead"  # left by a killed conversion
    busy = tmp_path / f".smol.tmp-{os.getppid()}-busy"  # a conversion still running elsewhere
    stale.mkdir()
    busy.mkdir()
    real, calls = gguf.quants.dequantize, []

    def failing_dequantize(data: np.ndarray, qtype: Any) -> np.ndarray:
        calls.append(qtype)
        if len(calls) == 100:  # about a third of the way through the weights
            raise error("interrupted")
        return real(data, qtype)

    monkeypatch.setattr(gguf.quants, "dequantize", failing_dequantize)
    with pytest.raises(error):
        convert_gguf(smol_gguf, out)
    assert len(calls) == 100
    assert sorted(leftovers(tmp_path, "smol")) == [busy]


def test_unpermute_inverts_llama_cpp_permute() -> None:
    rng = np.random.default_rng(0)
    for shape, heads in (((9 * 64, 576), 9), ((3 * 64, 576), 3), ((4 * 8,), 4)):
        w = rng.standard_normal(shape).astype(np.float32)
        assert not np.array_equal(_llama_cpp_permute(w, heads), w)
        np.testing.assert_array_equal(unpermute_rope_rows(_llama_cpp_permute(w, heads), heads), w)


def test_converter_does_not_import_torch() -> None:
    code = "import sys, tokconv.models.gguf_convert, tokconv.models.gguf_tokenizer; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# --- real models: loading, generation, numbers ----------------------------------------------

CONTINUATIONS = {
    SMOL: ("The capital of France is", "Paris"),
    QWEN: ("The capital of France is", "Paris"),
    GEMMA: ("The Eiffel Tower is located in the city of", "Paris"),
}


@pytest.mark.parametrize("name", ALL_MODELS)
def test_mlx_lm_loads_and_continues_sensibly(converted, name: str) -> None:
    c = converted(name)
    prompt, expected = CONTINUATIONS[name]
    text = mlx_lm.generate(c.model, c.tokenizer, prompt, max_tokens=8, verbose=False)
    assert expected in text, text
    counting = mlx_lm.generate(c.model, c.tokenizer, "1, 2, 3, 4, 5,", max_tokens=10, verbose=False)
    assert counting.strip().startswith("6, 7, 8"), counting


def test_smollm2_says_paris(converted) -> None:
    c = converted(SMOL)
    ids = c.tokenizer.encode("The capital of France is")
    for _ in range(2):  # greedy, no chat template
        ids.append(int(mx.argmax(c.model(mx.array([ids]))[0, -1]).item()))
    assert c.tokenizer.decode(ids[-2:]) == " Paris."


@pytest.mark.parametrize("name", ALL_MODELS)
def test_directory_layout_config_and_provenance(converted, name: str) -> None:
    c = converted(name)
    files = {p.name for p in c.path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "tokconv.json"} <= files
    config = json.loads((c.path / "config.json").read_text())
    expected = {SMOL: ("llama", True), QWEN: ("qwen2", False), GEMMA: ("gemma3_text", True)}[name]
    assert (config["model_type"], config["tie_word_embeddings"]) == expected
    provenance = json.loads((c.path / "tokconv.json").read_text())
    assert provenance["source_file"] == c.gguf.name and provenance["source_size"] == c.gguf.stat().st_size
    assert provenance["architecture"] == get_entry(name).architecture and provenance["converter_version"] >= 1
    assert not [p for p in c.path.parent.iterdir() if ".tmp-" in p.name]


# Measured mean NLL on ENGLISH: SmolLM2 2.79 (ppl 16), Qwen2.5-Coder 3.38 (ppl 29), Gemma 3 2.45 (ppl 12).
PERPLEXITY_BOUNDS = {SMOL: 25.0, QWEN: 40.0, GEMMA: 20.0}


@pytest.mark.parametrize("name", ALL_MODELS)
def test_plain_english_has_low_perplexity(converted, name: str) -> None:
    c = converted(name)
    perplexity = float(np.exp(mean_nll(c.model, c.tokenizer.encode(ENGLISH))))
    assert perplexity < PERPLEXITY_BOUNDS[name], perplexity


def test_smollm2_weights_match_mlx_native_gguf_dequantization(converted) -> None:
    """An independent dequantizer: MLX reads Q4_1/Q8_0 natively (as affine 4/8-bit arrays)."""
    c = converted(SMOL)
    ours, raw = mx.load(str(c.path / "model.safetensors")), mx.load(str(c.gguf))

    def native(name: str) -> np.ndarray:
        w, scales, biases = raw[f"{name}.weight"], raw[f"{name}.scales"], raw[f"{name}.biases"]
        bits = w.shape[-1] * 32 // (scales.shape[-1] * 32)
        w = mx.dequantize(w, scales.astype(mx.float32), biases.astype(mx.float32), group_size=32, bits=bits)
        return np.array(w)

    pairs = [("token_embd", "model.embed_tokens", None)]
    for i in (0, 14, 29):
        pairs += [(f"blk.{i}.attn_q", f"model.layers.{i}.self_attn.q_proj", 9)]
        pairs += [(f"blk.{i}.attn_k", f"model.layers.{i}.self_attn.k_proj", 3)]
        pairs += [
            (f"blk.{i}.{g}", f"model.layers.{i}.{h}", None)
            for g, h in (
                ("attn_v", "self_attn.v_proj"),
                ("attn_output", "self_attn.o_proj"),
                ("ffn_gate", "mlp.gate_proj"),
                ("ffn_down", "mlp.down_proj"),
            )
        ]
    for gguf_name, hf_name, heads in pairs:
        ref = native(gguf_name)
        ref = unpermute_rope_rows(ref, heads) if heads else ref
        got = np.array(ours[f"{hf_name}.weight"].astype(mx.float32))
        np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-5, err_msg=hf_name)  # float16 storage


def test_llama_unpermuted_qk_equal_llama_cpp_layout_with_interleaved_rope(converted) -> None:
    """Q/K rows put back in llama.cpp's order need traditional RoPE to give the same logits."""
    from mlx_lm.models.rope_utils import initialize_rope

    c = converted(SMOL)
    ids = c.tokenizer.encode(ENGLISH)
    reference = c.model(mx.array([ids]))[0]
    nll = mean_nll(c.model, ids)
    saved = [(a.q_proj.weight, a.k_proj.weight, a.rope) for a in (layer.self_attn for layer in c.model.layers)]
    try:
        for layer in c.model.layers:
            a = layer.self_attn
            a.q_proj.weight = mx.array(_llama_cpp_permute(np.array(a.q_proj.weight), a.n_heads))
            a.k_proj.weight = mx.array(_llama_cpp_permute(np.array(a.k_proj.weight), a.n_kv_heads))
        scrambled = mean_nll(c.model, ids)
        for layer in c.model.layers:
            layer.self_attn.rope = initialize_rope(64, 100000.0, traditional=True)
        interleaved = c.model(mx.array([ids]))[0]
    finally:
        for layer, (q, k, rope) in zip(c.model.layers, saved, strict=True):
            layer.self_attn.q_proj.weight, layer.self_attn.k_proj.weight, layer.self_attn.rope = q, k, rope
    assert mx.abs(interleaved - reference).max().item() < 1e-3
    assert scrambled > nll + 1.0  # measured: 4.19 vs 2.79


@pytest.mark.slow
def test_qwen2_qk_are_not_permuted(converted) -> None:
    c = converted(QWEN)
    ids = c.tokenizer.encode(ENGLISH)
    nll = mean_nll(c.model, ids)
    saved = [(a.q_proj.weight, a.q_proj.bias, a.k_proj.weight, a.k_proj.bias) for a in _attns(c.model)]
    try:
        for a in _attns(c.model):
            for proj, heads in ((a.q_proj, a.n_heads), (a.k_proj, a.n_kv_heads)):
                proj.weight = mx.array(unpermute_rope_rows(np.array(proj.weight), heads))
                proj.bias = mx.array(unpermute_rope_rows(np.array(proj.bias), heads))
        wrongly_unpermuted = mean_nll(c.model, ids)
    finally:
        for a, (qw, qb, kw, kb) in zip(_attns(c.model), saved, strict=True):
            a.q_proj.weight, a.q_proj.bias, a.k_proj.weight, a.k_proj.bias = qw, qb, kw, kb
    assert wrongly_unpermuted > nll + 0.4  # measured: 4.03 vs 3.38


def _attns(model: Any) -> list[Any]:
    return [layer.self_attn for layer in model.layers]


@pytest.mark.slow
def test_gemma3_norms_have_the_folded_one_removed(converted) -> None:
    """Each Gemma norm kind left as stored (1 + w) hurts, and so does subtracting one more."""
    c = converted(GEMMA)
    ids = c.tokenizer.encode(ENGLISH)
    nll = mean_nll(c.model, ids)
    kinds = {
        "input": lambda b: [b.input_layernorm],
        "post_attention": lambda b: [b.post_attention_layernorm],
        "pre_feedforward": lambda b: [b.pre_feedforward_layernorm],
        "post_feedforward": lambda b: [b.post_feedforward_layernorm],
        "q_k": lambda b: [b.self_attn.q_norm, b.self_attn.k_norm],
    }
    groups = {k: [m for b in c.model.layers for m in f(b)] for k, f in kinds.items()} | {"final": [c.model.model.norm]}

    def shifted_nll(norms: list[Any], delta: float) -> float:
        for m in norms:
            m.weight = m.weight + delta
        try:
            return mean_nll(c.model, ids)
        finally:
            for m in norms:
                m.weight = m.weight - delta

    # Measured: converted 2.45; raw per kind 2.94-14.2 (smallest gap: input norms); minus one more 7.5-11.8.
    for kind, norms in groups.items():
        assert shifted_nll(norms, 1.0) > nll + 0.3, kind
    assert shifted_nll([m for norms in groups.values() for m in norms], -1.0) > nll + 3.0


# --- real models: tokenizers -----------------------------------------------------------------

KNOWN_IDS = {  # "Hello world", and special tokens that must stay whole
    SMOL: ([19556, 905], ["Hello", "Ġworld"], {"<|im_start|>": 1, "<|im_end|>": 2, "<|endoftext|>": 0}),
    QWEN: ([9707, 1879], ["Hello", "Ġworld"], {"<|im_start|>": 151644, "<|im_end|>": 151645, "<|endoftext|>": 151643}),
    GEMMA: ([2, 9259, 1902], ["<bos>", "Hello", "▁world"], {"<bos>": 2, "<start_of_turn>": 105, "<end_of_turn>": 106}),
}


@pytest.mark.parametrize("name", ALL_MODELS)
def test_tokenizer_round_trips_text(converted, name: str) -> None:
    tok = converted(name).tokenizer
    raw = Tokenizer.from_file(str(converted(name).path / "tokenizer.json"))
    bos = tok.bos_token_id if name == GEMMA else None
    for text in ROUND_TRIP_TEXTS:
        ids = tok.encode(text)
        assert ids == raw.encode(text).ids, text  # AutoTokenizer's class choice changes nothing
        assert (ids[:1] == [bos]) == (bos is not None), (text, ids)
        assert tok.decode(ids[1:] if bos is not None else ids) == text


@pytest.mark.parametrize("name", ALL_MODELS)
def test_tokenizer_matches_known_ids_and_keeps_special_tokens_whole(converted, name: str) -> None:
    tok = converted(name).tokenizer
    ids, pieces, specials = KNOWN_IDS[name]
    assert tok.encode("Hello world") == ids
    assert tok.convert_ids_to_tokens(ids) == pieces
    for text, token_id in specials.items():
        assert tok.encode(text, add_special_tokens=False) == [token_id], text
        assert token_id in tok.all_special_ids, text


@pytest.mark.parametrize("name", ALL_MODELS)
def test_chat_template_and_stop_tokens(converted, name: str) -> None:
    tok = converted(name).tokenizer
    chat = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False)
    if name == GEMMA:  # the GGUF has no template: the converter supplies Gemma 3's own
        assert chat == "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
        assert {1, 106} <= set(tok.eos_token_ids)
    else:
        assert chat.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
        assert tok.convert_tokens_to_ids("<|im_end|>") in tok.eos_token_ids
