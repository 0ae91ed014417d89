"""Bad caches, files, temporaries and downloads: each ends in one line naming the input and the
fix, or in a warning naming what was rebuilt or skipped, never in a traceback or stale data."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

from episodes import ImageFileError, image_folder, omniglot
from episodes.io import _host_tag, atomic_torch_save

from .test_datasets import write_tree


def load(root: Path, **kw) -> object:
    return image_folder(root, "all", image_size=8, channels=1, decoder="threads",
                        cache_dir=root.parent / "cache", **kw)


def test_unreadable_file(tmp_path, monkeypatch):
    write_tree(tmp_path / "data", {"a": 3, "b": 2}, mode="L")
    locked = tmp_path / "data" / "a" / "001.png"
    read_bytes = Path.read_bytes

    def no_permission(self: Path) -> bytes:  # chmod 000 does not stop root: simulate it
        if self == locked:
            raise PermissionError(13, "Permission denied")
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", no_permission)
    with pytest.raises(ImageFileError, match=r"001\.png: cannot read this file \(Permission "
                                             r"denied\).*skip"):
        load(tmp_path / "data")
    with pytest.warns(UserWarning, match=r"skipped unreadable file\(s\) \(1\): .*001\.png"):
        ds = load(tmp_path / "data", skip_bad=True)
    assert len(ds) == 4 and ds.class_sizes().tolist() == [2, 2]


def cache_file(root: Path) -> Path:
    (path,) = (root.parent / "cache").glob("*.pt")
    return path


def test_truncated_cache_is_rebuilt(tmp_path):
    write_tree(tmp_path / "data", {"a": 3, "b": 3}, mode="L")
    first = load(tmp_path / "data").images.clone()
    path = cache_file(tmp_path / "data")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a full disk, a kill -9
    with pytest.warns(UserWarning, match=rf"cache file {path} is unreadable .*: rebuilding it"):
        again = load(tmp_path / "data")
    assert torch.equal(again.images, first) and torch.load(path, weights_only=True)


@pytest.mark.parametrize("keep_checksum", [True, False])
def test_cache_content_is_checked_not_just_its_name(tmp_path, keep_checksum):
    write_tree(tmp_path / "data", {"a": 3, "b": 3}, mode="L")
    first = load(tmp_path / "data").images.clone()
    path = cache_file(tmp_path / "data")
    d = torch.load(path, weights_only=True)
    d["images"] = torch.zeros_like(d["images"])  # the right name and key, zeroed images
    if not keep_checksum:
        del d["checksum"]  # a file as older versions wrote it
    torch.save(d, path)
    why = "do not match their checksum" if keep_checksum else "without a checksum"
    with pytest.warns(UserWarning, match=rf"cache file .* {why}.*rebuilding it"):
        again = load(tmp_path / "data")
    assert torch.equal(again.images, first)


def test_orphan_temporary_files_are_cleaned(tmp_path):
    target = tmp_path / "last.pt"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    orphan = tmp_path / f".last.pt.{dead}-{_host_tag()}.ab_12.tmp"  # its writer was killed
    old = tmp_path / ".last.pt.x8y9z0.tmp"  # an older version's name, 7 hours old
    live = tmp_path / f".last.pt.{os.getpid()}-{_host_tag()}.cd34.tmp"  # a write under way
    other = tmp_path / f".last.pt.bak.{dead}-{_host_tag()}.ef56.tmp"  # another target's
    for f in (orphan, old, live, other):
        f.write_bytes(b"half a checkpoint")
    os.utime(old, (time.time() - 7 * 3600,) * 2)
    atomic_torch_save({"x": 1}, target)
    assert not orphan.exists() and not old.exists()
    assert live.exists() and other.exists()
    assert torch.load(target, weights_only=True) == {"x": 1}
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".tmp") == sorted(
        [live.name, other.name])


def test_offline_download_leaves_nothing_behind(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    root = tmp_path / "new" / "omniglot"
    with pytest.raises(FileNotFoundError, match=r"could not download Omniglot's "
                                                r"images_background\.zip .*name resolution.*"
                                                r"extract both into") as e:
        omniglot(root, "val", download=True, cache_dir=tmp_path / "cache")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "mine"
    existing.mkdir()
    with pytest.raises(FileNotFoundError, match="could not download"):
        omniglot(existing, "val", download=True, cache_dir=tmp_path / "cache")
    assert existing.is_dir() and not any(existing.iterdir())
