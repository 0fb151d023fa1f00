"""Sharing token ids between models with different vocabularies, as a naive script would: every
out-of-vocabulary policy, on tiny models whose behaviour is known by construction."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from conftest import make_tiny_lm
from tiny import CharTokenizer, constant_lm, experiment
from tokconv.errors import TokconvError
from tokconv.experiments.experiment import collect


def _run(lms, start, oov, **cfg):
    exp = experiment("adversarial-single", lms, start, share="ids", oov=oov, **cfg)
    return collect(exp, exp.records())


def test_error_names_the_id_and_both_vocabulary_sizes():
    big, small = constant_lm(9, vocab=12, name="big"), constant_lm(2, vocab=6, name="small")
    exp = experiment("adversarial-single", [big, small], [0, 9, 9, 9], share="ids", oov="error")  # big agrees: small's turn
    with pytest.raises(TokconvError, match=r"token id 9 \(from big, 12 ids\) is outside small's vocabulary of 6 ids"):
        collect(exp, exp.records())


def test_unk_reads_the_unknown_token_and_never_gathers_out_of_range():
    big, small = constant_lm(9, vocab=12, name="big"), constant_lm(2, vocab=6, name="small")
    r = _run([big, small], [0, 9, 9, 9], "unk", iterations=40)
    assert r.status in ("converged", "all-blocked")
    assert all(s.finite for s in r.steps)
    assert any(s.model == "small" and s.old_token >= 6 for s in r.steps)  # small replaced big's ids
    assert "⟨id 9⟩" in r.iterations_log[1].pieces  # small's view of an id it does not have


def test_nan_emulates_an_unchecked_gather_and_every_such_step_is_flagged():
    """A NaN embedding poisons the small model's whole forward: every logit row is NaN, its argmax
    is id 0, and each of its moves is flagged by the numerics audit."""
    big = constant_lm(9, vocab=12, name="big")
    small = dataclasses.replace(make_tiny_lm(vocab_size=6), name="small", spec="small", tokenizer=CharTokenizer(6))
    r = _run([big, small], [0, 9, 9, 9, 9], "nan", iterations=20)
    mine = [s for s in r.steps if s.model == "small"]
    assert mine and all(not s.finite and s.new_token == 0 for s in mine)
    assert all(s.finite for s in r.steps if s.model == "big")
    assert r.cost.nonfinite_rows > 0
    assert r.config.oov == "nan" and r.to_dict()["config"]["oov"] == "nan"


def test_oov_policies_need_shared_ids():
    from tokconv.experiments import RunConfig

    with pytest.raises(TokconvError, match="--share ids"):
        RunConfig(mode="adversarial-single", model_a="a", model_b="b", oov="nan")
    # the settings key of a run without these options is what it was before they existed
    import hashlib
    import json

    plain = RunConfig(mode="adversarial-single", model_a="a", model_b="b", length=8)
    before = {k: v for k, v in dataclasses.asdict(plain).items() if k not in ("share", "oov", "dtype")}
    assert plain.key() == hashlib.sha1(json.dumps(before, sort_keys=True).encode()).hexdigest()
    assert dataclasses.replace(plain, share="ids").key() != plain.key()


def test_flagged_insertions_are_marked_in_the_fingerprint_table_and_exports():
    from tokconv.analysis import frames
    from tokconv.store import steps_table

    big = constant_lm(9, vocab=12, name="big")
    small = dataclasses.replace(make_tiny_lm(vocab_size=6), name="small", spec="small", tokenizer=CharTokenizer(6))
    r = _run([big, small], [0, 9, 9, 9, 9], "nan", iterations=20)
    ins = frames.insertions_frame(r)
    assert ins[ins["model"] == "small"]["flagged"].sum() == sum(1 for s in r.steps if s.model == "small")
    assert ins[ins["model"] == "big"]["flagged"].sum() == 0
    assert frames.steps_frame(r)["flagged"].sum() == sum(not s.finite for s in r.steps) > 0
    exported = steps_table({1: r})
    assert (~exported["finite"]).sum() > 0 and set(exported["oov"]) == {"nan"}


def test_the_command_line_shares_ids_and_stops_with_both_sizes(tmp_path, capsys):
    from tokconv import models
    from tokconv.cli import main

    big, small = constant_lm(9, vocab=12, name="cli-big"), constant_lm(2, vocab=6, name="cli-small")
    for lm in (big, small):
        models.register(lm)
    try:
        args = ["run", "-m", "adversarial-single", "--model-a", "cli-big", "--model-b", "cli-small", "-l", "4",
                "--share", "ids", "--db", str(tmp_path / "runs.sqlite")]
        assert main(args + ["--oov", "error"]) == 2
        err = capsys.readouterr().err
        assert "is outside cli-small's vocabulary of 6 ids" in err and "(from cli-big, 12 ids)" in err
        assert "Traceback" not in err
        assert main(args + ["--oov", "unk", "--quiet"]) == 0
        assert main(["run", "-m", "single", "--oov", "nan", "--no-save"]) == 2  # needs --share ids
        assert "--share ids" in capsys.readouterr().err
    finally:
        for lm in (big, small):
            models.unregister(lm.spec)
