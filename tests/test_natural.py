"""Natural-image datasets on small fake trees in each real layout, with each kind of bad input."""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from episodes import AnnotationError, ImageFileError, ImagePipeline, cub, mini_imagenet, stanford_dogs
from episodes.folder import cached_class_dataset, read_split_file
from episodes.images import process_pool
from episodes.natural import packaged_split_dir
from episodes.registry import load_dataset
from fewshot import ModelSpec
from fewshot.engine.predict import check_predict_pipeline

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

SIZE = 8


def write_image(path: Path, color=(200, 30, 30), size=(12, 10), mode="RGB", fmt=None) -> Path:
    """A solid image (left half ``color``, right half blue) written with PIL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, color)
    img.paste((20, 20, 220), (size[0] // 2, 0, size[0], size[1]))
    img.convert(mode).save(path, format=fmt)
    return path


def write_voc(path: Path, box, size=(12, 10), filename="%s") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"<annotation><filename>{filename}</filename><size><width>{size[0]}</width>"
        f"<height>{size[1]}</height><depth>3</depth></size><object><name>dog</name><bndbox>"
        f"<xmin>{box[0]}</xmin><ymin>{box[1]}</ymin><xmax>{box[2]}</xmax><ymax>{box[3]}</ymax>"
        f"</bndbox></object></annotation>")


@pytest.fixture
def dogs_root(tmp_path: Path) -> Path:
    """All 120 breeds of the packaged split, 2 images each, with annotations (right half)."""
    root = tmp_path / "dogs"
    for split in ("train", "val", "test"):
        for breed in read_split_file(packaged_split_dir("stanford_dogs") / f"{split}.txt"):
            for i in range(2):
                img = write_image(root / "Images" / breed / f"{breed.split('-')[0]}_{i}.jpg")
                write_voc(root / "Annotation" / breed / img.stem, (6, 0, 12, 10))
    return root


def test_dogs_packaged_split(dogs_root: Path) -> None:
    sets = {s: stanford_dogs(dogs_root, s, image_size=SIZE) for s in ("train", "val", "test")}
    assert [sets[s].num_classes for s in sets] == [70, 20, 30]
    assert len(set().union(*(d.class_names for d in sets.values()))) == 120
    assert sets["train"].images.shape == (140, 3, SIZE, SIZE)
    assert load_dataset("dogs", "val", root=dogs_root, image_size=SIZE).num_classes == 20


def test_dogs_crops_use_the_box(dogs_root: Path) -> None:
    whole = stanford_dogs(dogs_root, "val", image_size=SIZE).images.float()
    crop = stanford_dogs(dogs_root, "val", image_size=SIZE, crop=True).images.float()
    assert whole[:, 0].mean() > 90  # half red
    assert crop[:, 0].mean() < 40 and crop[:, 2].mean() > 180  # only the blue box
    via_registry = load_dataset("dogs", "val", root=dogs_root, image_size=SIZE, crop=True)
    assert torch.equal(via_registry.images.float(), crop)
    assert via_registry.pipeline == ImagePipeline(3, SIZE, "bilinear", crop="boxes")
    with pytest.warns(UserWarning, match="used whole: crop support and query images"):
        check_predict_pipeline(ModelSpec("protonet", "conv4", 3, SIZE), via_registry.pipeline)


@pytest.mark.parametrize("bad", ["size", "filename", "missing", "not_xml", "outside"])
def test_dogs_annotation_that_does_not_match(dogs_root: Path, bad: str) -> None:
    breed = read_split_file(packaged_split_dir("stanford_dogs") / "val.txt")[0]
    xml = dogs_root / "Annotation" / breed / f"{breed.split('-')[0]}_0"
    if bad == "size":
        write_voc(xml, (0, 0, 5, 5), size=(500, 375))
    elif bad == "filename":
        write_voc(xml, (0, 0, 5, 5), filename="n02000000_99")
    elif bad == "missing":
        xml.unlink()
    elif bad == "not_xml":
        xml.write_text("<annotation><size>")
    else:
        write_voc(xml, (20, 20, 30, 30))
    with pytest.raises(AnnotationError, match=xml.name):
        stanford_dogs(dogs_root, "val", image_size=SIZE, crop=True)
    assert len(stanford_dogs(dogs_root, "val", image_size=SIZE)) == 40  # uncropped still loads
    with pytest.warns(UserWarning, match=xml.name):
        assert len(stanford_dogs(dogs_root, "val", image_size=SIZE, crop=True, skip_bad=True)) == 39


def test_dogs_split_names_a_missing_breed(dogs_root: Path) -> None:
    breed = read_split_file(packaged_split_dir("stanford_dogs") / "test.txt")[3]
    for f in (dogs_root / "Images" / breed).iterdir():
        f.unlink()
    (dogs_root / "Images" / breed).rmdir()
    with pytest.raises(ValueError, match=breed):
        stanford_dogs(dogs_root, "test", image_size=SIZE)


@pytest.fixture
def folder_tree(tmp_path: Path) -> Path:
    """CUB layout: 8 classes ``NNN.Name`` of 3 JPEGs."""
    root = tmp_path / "CUB_200_2011"
    for c in range(8):
        for i in range(3):
            write_image(root / "images" / f"{c + 1:03d}.Bird_{c}" / f"Bird_{c}_{i}.jpg",
                        color=(30 * c, 100, 50))
    return root


def test_cub_chen_split(folder_tree: Path) -> None:
    got = {s: cub(folder_tree, s, image_size=SIZE).class_names for s in ("train", "val", "test")}
    assert [n[:3] for n in got["train"]] == ["001", "003", "005", "007"]
    assert [n[:3] for n in got["val"]] == ["002", "006"]
    assert [n[:3] for n in got["test"]] == ["004", "008"]
    assert cub(folder_tree.parent, "val", image_size=SIZE).class_names == got["val"]
    test = load_dataset("cub", "test", root=folder_tree, image_size=SIZE)
    assert test.class_names == got["test"] and test.pipeline == ImagePipeline(3, SIZE, "bilinear")


def test_non_image_file_named_and_skipped_on_request(folder_tree: Path) -> None:
    notes = folder_tree / "images" / "002.Bird_1" / "notes.txt"
    notes.write_text("not a bird")
    with pytest.raises(ImageFileError, match="notes.txt"):
        cub(folder_tree, "val", image_size=SIZE)
    assert len(cub(folder_tree, "val", image_size=SIZE, skip_bad=True)) == 6


def test_truncated_image_named_and_skipped_on_request(folder_tree: Path) -> None:
    bad = folder_tree / "images" / "002.Bird_1" / "Bird_1_0.jpg"
    bad.write_bytes(bad.read_bytes()[:60])
    with pytest.raises(ImageFileError, match="Bird_1_0.jpg"):
        cub(folder_tree, "val", image_size=SIZE)
    with pytest.warns(UserWarning, match="Bird_1_0.jpg"):
        d = cub(folder_tree, "val", image_size=SIZE, skip_bad=True)
    assert len(d) == 5 and d.class_sizes().tolist() == [2, 3]


def test_cmyk_gray_alpha_converted_with_one_warning(folder_tree: Path) -> None:
    folder = folder_tree / "images" / "002.Bird_1"
    cmyk = Image.new("CMYK", (12, 10), (0, 255, 255, 0))  # pure red in CMYK
    cmyk.save(folder / "Bird_1_0.jpg")
    write_image(folder / "Bird_1_1.jpg", mode="L")
    write_image(folder / "Bird_1_2.png", mode="RGBA")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = cub(folder_tree, "val", image_size=SIZE)
    messages = [str(w.message) for w in caught if "converted" in str(w.message)]
    assert len(messages) == 1 and all(m in messages[0] for m in ("CMYK", "L", "RGBA"))
    red = d.images[(d.targets == 0).nonzero()[0, 0]].float().mean((1, 2))
    assert red[0] > 200 and red[1] < 40 and red[2] < 40
    for name, mode in (("Bird_1_0.jpg", "CMYK"), ("Bird_1_1.jpg", "L"), ("Bird_1_2.png", "RGBA")):
        with pytest.raises(ImageFileError, match=f"{name}: image has mode {mode}"):
            cub(folder_tree, "val", image_size=SIZE, convert=False)
        (folder / name).unlink()


def test_cache_built_from_other_files_is_rebuilt(folder_tree: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = cub(folder_tree, "val", image_size=SIZE, cache_dir=cache)
    again = cub(folder_tree, "val", image_size=SIZE, cache_dir=cache)
    assert torch.equal(first.images, again.images) and len(list(cache.glob("*.pt"))) == 1
    write_image(folder_tree / "images" / "002.Bird_1" / "Bird_1_0.jpg", color=(0, 255, 0))
    changed = cub(folder_tree, "val", image_size=SIZE, cache_dir=cache)
    assert not torch.equal(first.images, changed.images)
    assert len(list(cache.glob("*.pt"))) == 2


def test_process_and_thread_decoders_agree(folder_tree: Path) -> None:
    files = {p.name: sorted(p.glob("*.jpg")) for p in sorted((folder_tree / "images").iterdir())}
    a = cached_class_dataset(files, folder_tree, ImagePipeline(3, SIZE), "t", decoder="threads")
    b = cached_class_dataset(files, folder_tree, ImagePipeline(3, SIZE), "p", decoder="processes")
    assert torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets)


def test_process_decoder_does_not_fork_this_process() -> None:
    """The decoding processes do not inherit torch's threads by fork (a deadlock risk that
    Python 3.12 warns of): their pool starts them from a fresh server process."""
    with process_pool(1) as pool:
        assert pool._mp_context.get_start_method() in ("forkserver", "spawn")
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)  # 3.12+: fork() warns
            assert pool.submit(os.getpid).result() != os.getpid()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_decoder_matches_cpu(folder_tree: Path) -> None:
    folder = folder_tree / "images" / "002.Bird_1"
    Image.new("CMYK", (12, 10), (0, 255, 255, 0)).save(folder / "Bird_1_0.jpg")  # CPU fallback
    files = {p.name: sorted(p.glob("*.jpg")) for p in sorted((folder_tree / "images").iterdir())}
    cpu = cached_class_dataset(files, folder_tree, ImagePipeline(3, SIZE), "c", decoder="threads")
    gpu = cached_class_dataset(files, folder_tree, ImagePipeline(3, SIZE), "g", decoder="cuda")
    assert gpu.images.shape == cpu.images.shape and torch.equal(gpu.targets, cpu.targets)
    assert (gpu.images.float() - cpu.images.float()).abs().mean() < 8


def write_mini_csv(root: Path, split: str, classes: list[str], per_class: int = 3) -> None:
    rows = []
    for c, wnid in enumerate(classes):
        for i in range(per_class):
            name = f"{wnid}{i:08d}.jpg"
            write_image(root / "images" / name, color=(40 * c, 80, 80))
            rows.append((name, wnid))
    with open(root / f"{split}.csv", "w", newline="") as f:
        csv.writer(f).writerows([("filename", "label"), *rows])


def test_mini_imagenet_ravi_csv(tmp_path: Path) -> None:
    root = tmp_path / "mini"
    write_mini_csv(root, "train", ["n01", "n02", "n03"])
    write_mini_csv(root, "val", ["n04", "n05"], per_class=4)
    d = mini_imagenet(root, "val", image_size=SIZE)
    assert d.class_names == ["n04", "n05"] and d.class_sizes().tolist() == [4, 4]
    train = load_dataset("miniimagenet", "train", root=root, image_size=SIZE)
    assert train.num_classes == 3 and train.pipeline == ImagePipeline(3, SIZE, "bilinear")
    (root / "images" / "n0200000001.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="n0200000001.jpg"):
        mini_imagenet(root, "train", image_size=SIZE)
    with pytest.raises(FileNotFoundError, match="test"):
        mini_imagenet(root, "test", image_size=SIZE)


def test_mini_imagenet_class_folders(tmp_path: Path) -> None:
    root = tmp_path / "mini"
    for wnid in ("n01", "n02", "n03"):
        for i in range(3):
            write_image(root / "images" / wnid / f"{wnid}{i:08d}.jpg")
    (root / "splits" / "ravi").mkdir(parents=True)
    (root / "splits" / "ravi" / "train.txt").write_text("n01\nn03\n")
    (root / "splits" / "ravi" / "val.txt").write_text("n02\nn09\n")
    assert mini_imagenet(root, "train", image_size=SIZE).class_names == ["n01", "n03"]
    with pytest.raises(ValueError, match="n09"):
        mini_imagenet(root, "val", image_size=SIZE)
    with pytest.raises(FileNotFoundError, match="test"):
        mini_imagenet(root, "test", image_size=SIZE)


@pytest.mark.data
@pytest.mark.skipif(not (SHARED_DATA / "miniimagenet").is_dir(), reason="no shared data")
def test_real_reduced_mini_imagenet() -> None:
    d = mini_imagenet(SHARED_DATA / "miniimagenet", "val")
    assert d.num_classes == 16 and d.images.shape == (1600, 3, 84, 84)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA")])])
def test_batched_jpeg_decoder_with_bad_files(folder_tree: Path, device: str) -> None:
    """The GPU decoder's code (run on ``device``): batches of JPEGs through torchvision, CMYK and
    truncated files sent to the CPU path, which converts / names / skips them as usual."""
    from episodes.gpu_decode import decode_images_cuda
    from episodes.images import decode_images

    folder = folder_tree / "images" / "002.Bird_1"
    Image.new("CMYK", (12, 10), (0, 255, 255, 0)).save(folder / "Bird_1_0.jpg")
    bad = folder / "Bird_1_1.jpg"
    bad.write_bytes(bad.read_bytes()[:-40])
    files = sorted((folder_tree / "images").glob("*/*.jpg"))
    with pytest.raises(ImageFileError, match="Bird_1_1.jpg"):
        decode_images_cuda(files, 3, SIZE, device=device, batch_size=5)
    with pytest.warns(UserWarning, match="CMYK"):
        got, kept = decode_images_cuda(files, 3, SIZE, skip_bad=True, device=device, batch_size=5)
    want, want_kept = decode_images(files, 3, SIZE, skip_bad=True)
    assert kept == want_kept and len(kept) == len(files) - 1
    assert (got.float() - want.float()).abs().mean() < 8
