"""The real Omniglot and mini-ImageNet in ../shared/data (skipped when absent)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from episodes import EpisodeSampler, image_folder, omniglot

from .conftest import SHARED_DATA

OMNIGLOT = SHARED_DATA / "omniglot"
MINI = SHARED_DATA / "miniimagenet"

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def omniglot_root(tmp_path_factory):
    if not (OMNIGLOT / "materialize.py").is_file():
        pytest.skip("Omniglot not in ../shared/data")
    dest = tmp_path_factory.mktemp("omniglot")
    subprocess.run([sys.executable, str(OMNIGLOT / "materialize.py"), str(dest)], check=True,
                   capture_output=True)
    return dest


def test_omniglot_vinyals_val_split(omniglot_root):
    ds = omniglot(omniglot_root, "val")
    assert ds.num_classes == 688 and len(ds) == 688 * 20 and ds.image_shape == (1, 28, 28)
    # Against an independent computation from the npz: invert, then exact area averaging
    # (each 105-pixel side split into 28 cells of 3.75 pixels: repeat 4x, average 15x15 blocks).
    rows = [ln.split("\t") for ln in (OMNIGLOT / "characters.tsv").read_text().splitlines()[1:]]
    first = ds.class_names[0].rsplit("/", 1)[0]
    cid, split, idx, *_ = next(r for r in rows if f"{r[3]}/{r[4]}" == first)
    raw = np.load(OMNIGLOT / f"images_{split}.npz")["images"][int(idx)]
    ink = torch.from_numpy(~raw).float().unsqueeze(1) * 255
    fine = ink.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)
    ref = F.avg_pool2d(fine, 15).round()
    ours = ds.images[ds.targets == 0].float()
    assert (ours - ref).abs().max() <= 1
    ep = EpisodeSampler(ds, 20, 5, 5, episodes_per_batch=2).sample()
    assert ep.support_x.shape == (2, 100, 1, 28, 28)


def test_miniimagenet_folder():
    if not (MINI / "images").is_dir():
        pytest.skip("mini-ImageNet not in ../shared/data")
    ds = image_folder(MINI / "images", "val", split_dir=MINI / "splits" / "ravi", image_size=84)
    assert ds.num_classes == 16 and len(ds) == 1600 and ds.image_shape == (3, 84, 84)
