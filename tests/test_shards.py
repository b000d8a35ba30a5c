"""WebDataset shards (`infp pack`, `infp.data.shards`): bounded shards and an index; read back byte for byte
through file:// and memory:// URLs; damaged, truncated and missing shards skipped and counted, never fatal;
bad input refused with nothing lost; both trainers train from a shard URL as from the clip folder."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tarfile
import uuid
from pathlib import Path

import fsspec
import pytest
import torch
from safetensors.torch import load_file

from infp.cli import main
from infp.data.clip import list_clips
from infp.data.shard_writer import pack
from infp.data.shards import INDEX, ShardIndex, data_source, is_shards, read_shards
from infp.errors import InfpError

IDS = ("talk_a", "talk_b", "talk_c")
MAX_SIZE = 2_500_000  # two of the ~1.1 MB test clips per shard


def _copy(src: Path, dst: Path, clip_id: str) -> None:
    shutil.copytree(src, dst / clip_id)
    meta = json.loads((dst / clip_id / "meta.json").read_text())
    (dst / clip_id / "meta.json").write_text(json.dumps({**meta, "id": clip_id}))


@pytest.fixture(scope="module")
def clips(synth_clips, tmp_path_factory) -> Path:
    """Three clips (copies of the synthetic one under other ids)."""
    root = tmp_path_factory.mktemp("shard_clips") / "clips"
    for k in IDS:
        _copy(list_clips(synth_clips)[0].path, root, k)
    return root


@pytest.fixture(scope="module")
def packed(clips, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("packs") / "pack"
    pack([clips], out, max_size=MAX_SIZE, progress=False)
    return out


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("INFP_SHARD_CACHE", str(tmp_path / "shard_cache"))
    return tmp_path / "shard_cache"


def _memory_copy(local: Path) -> str:
    """The pack at `local` copied into fsspec's in-memory file system; returns its URL."""
    url = f"memory://packs-{uuid.uuid4().hex[:8]}"
    fs = fsspec.filesystem("memory")
    for f in local.iterdir():
        fs.pipe_file(f"{url}/{f.name}", f.read_bytes())
    return url


def _same_clips(got, clips: Path) -> None:
    want = list_clips(clips)
    assert [c.meta for c in got] == [c.meta for c in want]  # same clips, same order
    for a, b in zip(got, want):
        names = sorted(p.name for p in b.path.iterdir())
        assert sorted(p.name for p in a.path.iterdir()) == names
        for n in names:
            assert (a.path / n).read_bytes() == (b.path / n).read_bytes(), (a.path, n)


def test_pack_writes_bounded_shards_and_an_index(packed, clips):
    index = ShardIndex.load(packed)
    assert [s.keys for s in index.shards] == [IDS[:2], IDS[2:]]
    for s in index.shards:
        data = (packed / s.name).read_bytes()
        assert len(data) == s.size <= MAX_SIZE and hashlib.sha256(data).hexdigest() == s.sha256
    with tarfile.open(packed / index.shards[0].name) as t:
        names = t.getnames()
    assert "talk_a.video.mp4" in names and "talk_a.sha256.json" in names and "talk_b.meta.json" in names
    assert index.samples == 3 and index.bytes == sum(s.size for s in index.shards)


def test_read_back_identical_through_file_and_memory_urls(packed, clips, cache):
    for source in (packed, packed / INDEX, f"file://{packed}", _memory_copy(packed)):
        assert is_shards(source)
        _same_clips(read_shards(source, progress=False).clips, clips)
    # one content, one cache folder per shard, whatever the URL
    assert sorted(p.name for p in cache.iterdir() if p.is_dir()) == sorted(
        s.sha256[:16] for s in ShardIndex.load(packed).shards)


def test_pack_writes_to_a_url(clips, cache):
    url = f"memory://out-{uuid.uuid4().hex[:8]}/pack"
    index = pack([clips], url, max_size=MAX_SIZE, progress=False)
    assert index.url == f"{url}/{INDEX}" and len(index.shards) == 2
    _same_clips(read_shards(url, progress=False).clips, clips)


def test_an_intact_shard_is_read_once(packed, clips, tmp_path, cache):
    local = shutil.copytree(packed, tmp_path / "pack")
    first = read_shards(local, progress=False)
    for f in local.glob("shard-*.tar"):
        f.unlink()  # the cache has them now
    again = read_shards(local, progress=False)
    assert [c.path for c in again.clips] == [c.path for c in first.clips]
    assert all(r.intact for r in again.reads)


def _damage(shard: Path, member: str) -> None:
    """Flip bytes in the middle of `member`'s data."""
    with tarfile.open(shard) as t:
        info = t.getmember(member)
    data = bytearray(shard.read_bytes())
    mid = info.offset_data + info.size // 2
    data[mid : mid + 16] = bytes(b ^ 0xFF for b in data[mid : mid + 16])
    shard.write_bytes(bytes(data))


def test_a_damaged_sample_is_skipped_and_counted(packed, tmp_path, cache, caplog):
    local = shutil.copytree(packed, tmp_path / "pack")
    _damage(local / "shard-000000.tar", "talk_b.landmarks.npy")
    with caplog.at_level(logging.WARNING, logger="infp.data.shards"):
        load = read_shards(local, progress=False)
    assert [c.meta.id for c in load.clips] == ["talk_a", "talk_c"] and load.skipped == 1
    assert "damaged: landmarks.npy" in load.reads[0].skipped["talk_b"] and not load.reads[0].intact
    stamp = {f.name: f.stat().st_mtime_ns for f in load.clips[0].path.iterdir()}
    assert any("shard-000000.tar: skipped 1 of 2 sample(s)" in r.message for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="infp.data.shards"):
        again = read_shards(local, progress=False)
    assert again.skipped == 1  # said again on every run
    assert any("skipped 1 of 3 sample(s) in 1 of 2 shard(s)" in r.message for r in caplog.records)
    # rewritten with the pack's time stamps: stage 2's cache keys (path, size, mtime) still hold
    assert {f.name: f.stat().st_mtime_ns for f in again.clips[0].path.iterdir()} == stamp
    assert again.clips[0].path == load.clips[0].path


@pytest.mark.parametrize("where", ["file", "memory"])
def test_a_truncated_or_missing_shard_is_skipped_and_counted(packed, tmp_path, cache, caplog, where):
    local = shutil.copytree(packed, tmp_path / "pack")
    with tarfile.open(local / "shard-000000.tar") as t:
        cut = t.getmember("talk_b.landmarks.npy").offset_data + 1000  # mid-file, in the second sample
    shard = local / "shard-000000.tar"
    shard.write_bytes(shard.read_bytes()[:cut])
    source = str(local) if where == "file" else _memory_copy(local)
    with caplog.at_level(logging.WARNING, logger="infp.data.shards"):
        load = read_shards(source, progress=False)
    assert [c.meta.id for c in load.clips] == ["talk_a", "talk_c"] and load.skipped == 1
    assert load.reads[0].errors and not load.reads[0].intact and load.reads[1].intact
    assert any("shard-000000.tar: skipped 1 of 2" in r.message for r in caplog.records)
    # a shard that is gone (and not cached): its samples are skipped; with nothing left, one clear error
    (local / "shard-000001.tar").unlink()
    load = read_shards(local, tmp_path / "fresh", progress=False)
    assert [c.meta.id for c in load.clips] == ["talk_a"] and load.skipped == 2
    (local / "shard-000000.tar").unlink()
    with pytest.raises(InfpError, match=r"no usable clip in this pack \(3 of 3 skipped\)"):
        read_shards(local, tmp_path / "fresh", progress=False)


def test_bad_input_is_refused_and_nothing_is_lost(packed, clips, tmp_path, cache):
    with pytest.raises(InfpError, match="no clips here"):
        pack([tmp_path], tmp_path / "out", progress=False)
    broken = shutil.copytree(clips, tmp_path / "broken")
    (broken / "talk_b" / "agent.wav").unlink()
    with pytest.raises(InfpError, match=r"1 clip\(s\) cannot be packed; nothing was written: .*talk_b: agent.wav missing"):
        pack([broken], tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    with pytest.raises(InfpError, match="clip id talk_a is in both"):
        pack([clips, clips], tmp_path / "out", progress=False)
    before = {p.name: p.read_bytes() for p in packed.iterdir()}
    with pytest.raises(InfpError, match="already holds a pack"):
        pack([clips], packed, progress=False)
    assert {p.name: p.read_bytes() for p in packed.iterdir()} == before
    with pytest.raises(InfpError, match="no shard index here"):
        read_shards(tmp_path / "nothing" / INDEX, progress=False)
    (tmp_path / "junk.json").write_text('{"format": "something else"}')
    with pytest.raises(InfpError, match="not an infp shard index"):
        read_shards(tmp_path / "junk.json", progress=False)
    # the CLI: one line, exit status 2
    assert main(["-q", "pack", str(clips), "--out", str(packed)]) == 2
    assert main(["-q", "pack", str(clips), "--out", str(tmp_path / "o"), "--exclude", "video.mp4"]) == 2


def test_a_failed_pack_leaves_nothing(clips, tmp_path, monkeypatch):
    import infp.data.shard_writer as writer

    calls, real = [], writer._tar_bytes

    def failing(key, sample):
        calls.append(key)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as Ctrl-C (or SIGTERM) in the middle of the second shard
        return real(key, sample)

    monkeypatch.setattr(writer, "_tar_bytes", failing)
    with pytest.raises(KeyboardInterrupt):
        pack([clips], tmp_path / "out", max_size=MAX_SIZE, progress=False)
    assert list((tmp_path / "out").iterdir()) == []


def test_processes_materialise_a_shard_once(packed, cache):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:  # flock: a second reader waits, then finds the shard done
        a, b = pool.map(lambda _: read_shards(packed, progress=False), range(2))
    assert [c.path for c in a.clips] == [c.path for c in b.clips] and len(a.clips) == 3


def test_data_source_keeps_urls():
    assert data_source("memory://a/b") == "memory://a/b"
    assert data_source(Path("memory://a/b")) == "memory://a/b"  # what a run.json holds after Path()
    assert data_source(Path("file:///tmp/x")) == "file:///tmp/x"
    assert data_source("s3://bucket/pack") == "s3://bucket/pack"
    assert data_source("runs/data") == Path("runs/data")


def test_cli_pack_with_bench(clips, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="infp"):
        assert main(["pack", str(clips), "--out", str(tmp_path / "p"), "--max-size", "2.5MB", "--max-count", "2",
                     "--exclude", "contact.png", "--bench"]) == 0
    index = ShardIndex.load(tmp_path / "p")
    assert [s.keys for s in index.shards] == [IDS[:2], IDS[2:]]  # by count: without their contact sheets all fit
    with tarfile.open(tmp_path / "p" / index.shards[0].name) as t:
        assert "talk_a.video.mp4" in t.getnames() and "talk_a.contact.png" not in t.getnames()
    text = caplog.text
    assert "clip folders: read every file" in text and "shards: materialise (first run)" in text


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoint" / "model.safetensors"))


def test_train_motion_from_a_shard_url(packed, clips, tiny_models, tmp_path, cache):
    url = _memory_copy(packed)
    args = ["-q", "train", "motion", "--imitator", str(tiny_models / "imi"), "--preset", "tiny", "--steps", "2",
            "--batch-size", "2", "--one-sided-steps", "1", "--device", "cpu", "--cache", str(tmp_path / "latents")]
    assert main([*args, "--data", url, "--out", str(tmp_path / "shards")]) == 0
    assert main([*args, "--data", str(clips), "--out", str(tmp_path / "folders")]) == 0
    a, b = _weights(tmp_path / "shards"), _weights(tmp_path / "folders")
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)  # the same clips, the same draws
    assert json.loads((tmp_path / "shards" / "run.json").read_text())["data"] == [url]
    # a resumed run finds its pack by the URL in run.json
    assert main(["-q", "train", "motion", "--out", str(tmp_path / "shards"), "--steps", "3", "--resume",
                 "--device", "cpu"]) == 0


def test_train_imitation_from_a_shard_url(packed, tmp_path, cache):
    assert main(["-q", "train", "imitation", "--data", f"file://{packed}", "--out", str(tmp_path / "run"),
                 "--preset", "tiny", "--steps", "1", "--batch-size", "2", "--device", "cpu", "--no-gan"]) == 0
    assert (tmp_path / "run" / "checkpoint" / "model.safetensors").is_file()
