"""Peers for bench_runs.py: tokconv's run modes written plainly on other engines, over the same GGUF files.

Runs under the peers' own interpreter (never tokconv's: torch, transformers and llama-cpp-python must
not become tokconv dependencies, and nothing here imports tokconv or MLX). Engines:

- ``torch``: PyTorch + transformers (``from_pretrained(..., gguf_file=...)``, float32), the model and the
  tokenizer both from the GGUF. Every model call forwards the whole sequence with ``use_cache=False``:
  full re-scoring after every replacement, as the original experiment did.
- ``llamacpp``: llama.cpp through llama-cpp-python (``logits_all=True``, 2 threads, the GGUF's own
  quantized weights). Full re-scoring too: ``reset()`` then ``eval()`` of the whole sequence.
- ``llamacpp-kv``: the same, but keeping llama.cpp's KV cache for the common prefix with the previous
  call (what a llama.cpp user would naturally do; only the tokens from the first changed one on are
  evaluated, and the logits of the kept prefix are reused).

The algorithm is tokconv's (tokconv/experiments/modes.py) in spirit, written the plain way:
``single`` (highest-entropy mismatch at position >= 1, blocking a position after ``block_after``
flips), ``adversarial-single`` across two tokenizers (the models share text; each turn encodes the text
with its own tokenizer, capped at its token count of the start text, moves on the highest-entropy
mismatch whose characters are not blocked and whose move leaves no character incomplete, and decodes
back; flips count per character), and ``adversarial`` (alternating greedy left-to-right passes; after a
replacement the whole sequence is re-scored). Start tokens come from tokconv's ``random_tokens`` (the
tokconv worker of bench_runs.py passes them in), so both start from the same text.

    PEER_PY bench/peer_runs.py --engine torch --mode single --model-a A.gguf --starts '[[1, 2, ...], ...]'
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import time

import numpy as np

REPLACEMENT = "\ufffd"


# --- engines: logits of a whole sequence ----------------------------------------------------------------

class TorchLM:
    def __init__(self, path: str, threads: int) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(threads)
        self.torch = torch
        d, name = os.path.dirname(path), os.path.basename(path)
        self.tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
        self.model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32).eval()
        self.vocab_size = int(self.model.get_output_embeddings().weight.shape[0])
        self.runtime = f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32"

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(list(ids))

    def predict(self, ids: list[int]) -> tuple[np.ndarray, np.ndarray, int]:
        """Argmax and entropy of the next-token distribution after each prefix; tokens forwarded."""
        torch = self.torch
        with torch.inference_mode():
            lg = self.model(torch.tensor([ids]), use_cache=False).logits[0].float()
            z = lg - lg.max(-1, keepdim=True).values
            e = z.exp()
            s = e.sum(-1)
            ent = s.log() - (e * z).sum(-1) / s
            return lg.argmax(-1).numpy(), ent.numpy(), len(ids)


class LlamaCppLM:
    def __init__(self, path: str, threads: int, kv: bool, n_ctx: int = 256) -> None:
        import llama_cpp

        self.llm = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=n_ctx, n_threads=threads,
                                   n_threads_batch=threads, logits_all=True, verbose=False)
        self.kv = kv
        self.vocab_size = int(self.llm.n_vocab())
        self.runtime = (f"llama-cpp-python {llama_cpp.__version__}, {threads} threads, GGUF weights as stored, "
                        + ("KV cache kept for the common prefix" if kv else "full re-scoring"))

    def encode(self, text: str) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def decode(self, ids: list[int]) -> str:
        return self.llm.detokenize(list(ids)).decode("utf-8", errors="replace")

    def predict(self, ids: list[int]) -> tuple[np.ndarray, np.ndarray, int]:
        llm, n = self.llm, len(ids)
        keep = 0
        if self.kv:
            old = llm.input_ids[: llm.n_tokens]
            limit = min(len(old), n)
            while keep < limit and old[keep] == ids[keep]:
                keep += 1
            keep = min(keep, n - 1)  # at least one token evaluated: the logits rows before it stay valid
            llm.n_tokens = keep  # eval() drops the KV cache from n_tokens on
        else:
            llm.reset()
        llm.eval(ids[keep:])
        lg = llm.scores[:n]
        z = lg - lg.max(-1, keepdims=True)
        e = np.exp(z)
        s = e.sum(-1)
        ent = np.log(s) - (e * z).sum(-1) / s
        return lg.argmax(-1), ent, n - keep


class Player:
    """One model in a run: its engine, its call counts, and (solo / shared positions) its flips."""

    def __init__(self, name: str, lm) -> None:
        self.name, self.lm = name, lm
        self.calls = self.tokens = 0
        self.seconds = 0.0

    def score(self, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Prediction and entropy for each position (row i: what the model puts at i; row 0 none)."""
        t0 = time.perf_counter()
        am, ent, forwarded = self.lm.predict(ids)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        self.tokens += forwarded
        return np.concatenate([[-1], am[:-1]]).astype(np.int64), np.concatenate([[np.nan], ent[:-1]])

    def token_text(self, t: int) -> str:
        return self.lm.decode([int(t)])


def mismatches(am: np.ndarray, ids: list[int]) -> list[int]:
    return [i for i in range(1, len(ids)) if am[i] != ids[i]]


# --- the modes --------------------------------------------------------------------------------------------

def run_single(p: Player, start: list[int], iterations: int, block_after: int) -> tuple[str, int]:
    ids, flips, blocked = list(start), {}, set()
    for it in range(1, iterations + 1):
        am, ent = p.score(ids)
        mis = mismatches(am, ids)
        pos = [i for i in mis if i not in blocked]
        if not pos:
            return ("converged" if not mis else "all-blocked"), it
        i = pos[int(np.argmax(ent[pos]))]
        ids[i] = int(am[i])
        flips[i] = flips.get(i, 0) + 1
        if flips[i] >= block_after:
            blocked.add(i)
    return "max-iterations", iterations


def token_spans(p: Player, ids: list[int], text: str) -> list[tuple[int, int]]:
    """The characters of ``text`` each token covers (tokens that make one character together share it)."""
    pieces = [p.token_text(t) for t in ids]
    if "".join(pieces) == text and not any(REPLACEMENT in s for s in pieces):
        ends = list(np.cumsum([len(s) for s in pieces]))
    else:
        ends = []
        for i in range(len(ids)):
            d, n = p.lm.decode(ids[: i + 1]), 0
            while n < min(len(d), len(text)) and d[n] == text[n]:
                n += 1
            ends.append(n)
    spans, start = [], 0
    for end in ends:
        end = max(int(end), start)
        spans.append((start, end))
        start = end
    for i in range(len(spans) - 2, -1, -1):
        if spans[i][0] == spans[i][1]:
            spans[i] = (spans[i][0], spans[i + 1][1])
    return spans


def edit_between(before: str, after: str, span: tuple[int, int]) -> tuple[int, int, str]:
    cp, limit = 0, min(len(before), len(after))
    while cp < limit and before[cp] == after[cp]:
        cp += 1
    cs = 0
    while cs < limit - cp and before[-1 - cs] == after[-1 - cs]:
        cs += 1
    start, end = min(span[0], cp), max(span[1], len(before) - cs)
    return start, end, after[start: len(after) - (len(before) - end)]


class TextState:
    """The shared text of two models with different tokenizers, and flip counts per character."""

    def __init__(self, players: list[Player], start: list[int]) -> None:
        self.text = players[0].lm.decode(start)
        self.caps = {p.name: max(2, len(p.lm.encode(self.text))) for p in players}
        self.flips = [0] * len(self.text)
        self.cached: tuple[str, str, list[int]] | None = None  # (player, text, ids) of the last mover

    def ids_for(self, p: Player) -> list[int]:
        if self.cached and self.cached[0] == p.name and self.cached[1] == self.text:
            return list(self.cached[2])
        return p.lm.encode(self.text)[: self.caps[p.name]]

    def update(self, p: Player, ids: list[int]) -> None:
        self.text = p.lm.decode(ids)
        self.cached = (p.name, self.text, list(ids))


def run_adversarial_single(players: list[Player], start: list[int], iterations: int, block_after: int) -> tuple[str, int]:
    st = TextState(players, start)
    idle, left = 0, {}
    for it in range(1, iterations + 1):
        p = players[(it - 1) % 2]
        ids = st.ids_for(p)
        am, ent = p.score(ids)
        view = p.lm.decode(ids)
        spans = token_spans(p, ids, view)
        mis = mismatches(am, ids)
        left[p.name] = len(mis)
        pos = np.array([i for i in mis if not any(c >= block_after for c in st.flips[spans[i][0]:spans[i][1]])], dtype=np.int64)
        moved = False
        if pos.size:
            e = np.nan_to_num(ent[pos], nan=np.inf)
            for i in pos[np.lexsort((pos, -e))]:
                new = [*ids[:i], int(am[i]), *ids[i + 1:]]
                after = p.lm.decode(new)
                if after.count(REPLACEMENT) > view.count(REPLACEMENT):
                    continue  # would leave a character incomplete
                a, b, ins = edit_between(view, after, spans[i])
                del st.flips[len(view):]
                count = max(st.flips[a:b], default=0) + 1
                st.flips[a:b] = [count] * len(ins)
                if not ins and a < len(st.flips):
                    st.flips[a] = max(st.flips[a], count)
                st.update(p, new)
                del st.flips[len(st.text):]
                moved = True
                break
        idle = 0 if moved else idle + 1
        if idle >= 2:  # neither can move; the last two scorings saw the current text
            return ("converged" if sum(left.values()) == 0 else "all-blocked"), it
    return "max-iterations", iterations


def sequential_pass(p: Player, ids: list[int]) -> int:
    """One greedy left-to-right pass; the whole sequence re-scored after each replacement."""
    am, _ = p.score(ids)
    view, changes = p.lm.decode(ids), 0
    for i in range(1, len(ids)):
        if am[i] == ids[i]:
            continue
        new = [*ids[:i], int(am[i]), *ids[i + 1:]]
        after = p.lm.decode(new)
        if after.count(REPLACEMENT) > view.count(REPLACEMENT):
            continue
        ids[:], view, changes = new, after, changes + 1
        if i < len(ids) - 1:
            am, _ = p.score(ids)
    return changes


def run_adversarial(players: list[Player], start: list[int], iterations: int, block_after: int) -> tuple[str, int]:
    st = TextState(players, start)
    seen, quiet = {(st.text, 0): 0}, 0
    for it in range(1, iterations + 1):
        p = players[(it - 1) % 2]
        ids = st.ids_for(p)
        changes = sequential_pass(p, ids)
        st.update(p, ids)
        quiet = quiet + 1 if changes == 0 else 0
        if quiet >= 2:
            return "converged", it
        key = (st.text, it % 2)
        if key in seen:
            return "oscillating", it
        seen[key] = it
    return "max-iterations", iterations


MODES = {"single": run_single, "adversarial-single": run_adversarial_single, "adversarial": run_adversarial}


def load(engine: str, path: str, threads: int):
    if engine == "torch":
        return TorchLM(path, threads)
    if engine in ("llamacpp", "llamacpp-kv"):
        return LlamaCppLM(path, threads, kv=engine == "llamacpp-kv")
    raise SystemExit(f"unknown engine {engine}")


def one_run(mode: str, players: list[Player], start: list[int], iterations: int, block_after: int) -> dict:
    before = [(p.calls, p.tokens) for p in players]
    t0 = time.perf_counter()
    fn = MODES[mode]
    status, its = fn(players[0], start, iterations, block_after) if mode == "single" else fn(players, start, iterations, block_after)
    sec = time.perf_counter() - t0
    by_model = {p.name: p.calls - c for p, (c, _) in zip(players, before)}
    return {"seconds": sec, "iterations": its, "status": status, "calls": sum(by_model.values()),
            "tokens": sum(p.tokens - t for p, (_, t) in zip(players, before)), "calls_by_model": by_model}


def worker(args) -> dict:
    """The first start runs in a fresh process (loading included), then the warm runs."""
    t0 = time.perf_counter()
    for module in ("torch", "transformers") if args.engine == "torch" else ("llama_cpp",):
        importlib.import_module(module)
    import_s = time.perf_counter() - t0
    starts = json.loads(args.starts)
    paths = [p for p in (args.model_a, args.model_b) if p]
    t0 = time.perf_counter()
    players = [Player(name, load(args.engine, path, args.threads))
               for name, path in zip(args.names.split(","), paths)]
    load_s = time.perf_counter() - t0
    fresh = one_run(args.mode, players, starts[0]["tokens"], args.iterations, args.block_after)
    out = {"engine": args.engine, "runtime": players[0].lm.runtime, "import_s": import_s, "load_s": load_s,
           "fresh_s": load_s + fresh["seconds"], "fresh": fresh, "warm": []}
    for s in starts[1:]:
        out["warm"].append({"seed": s["seed"], **one_run(args.mode, players, s["tokens"], args.iterations, args.block_after)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", required=True, choices=["torch", "llamacpp", "llamacpp-kv"])
    ap.add_argument("--mode", required=True, choices=list(MODES))
    ap.add_argument("--model-a", required=True)
    ap.add_argument("--model-b", default=None)
    ap.add_argument("--names", default="a,b", help="the models' names in calls_by_model")
    ap.add_argument("--starts", required=True, help='JSON list of {"seed": N, "tokens": [...]}: the first is the fresh run')
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--block-after", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    print(json.dumps(worker(ap.parse_args())))


if __name__ == "__main__":
    main()
