"""Natural-image few-shot datasets in the layouts users download, each with its standard split.

- Stanford Dogs: ``root/Images/<wnid>-<Breed>/*.jpg`` with optional bounding-box crops from
  ``root/Annotation/<wnid>-<Breed>/<image stem>`` (VOC-style XML); the 70/20/30 breed split of
  the fine-grained few-shot papers (CovaMNet, DN4; Li et al. 2019), shipped as package data.
- CUB-200-2011: ``root/images/<NNN.Class_name>/*.jpg`` (or ``root/CUB_200_2011/images``); the
  100/50/50 split of Chen et al. 2019 (sorted classes; index mod 2 == 0 train, mod 4 == 1 val,
  mod 4 == 3 test).
- mini-ImageNet: Ravi & Larochelle's ``train.csv``/``val.csv``/``test.csv`` (``filename,label``)
  with a flat ``images/`` folder, or the class-folder layout ``root/images/<wnid>/*.jpg`` with
  ``root/splits/ravi/<split>.txt`` (the reduced copy in ``shared/data/miniimagenet``).

Every loader decodes once into a cache keyed by the files' content (see
:func:`episodes.cache.cached_class_dataset`) and returns a :class:`TensorClassDataset` carrying its
:class:`~episodes.pipeline.ImagePipeline` (3 channels, bilinear resize, no inversion; Stanford Dogs
with ``crop`` records ``crop="boxes"``).
"""

from __future__ import annotations

import csv
import os
import xml.etree.ElementTree as ET
from importlib import resources
from pathlib import Path

from .dataset import TensorClassDataset
from .folder import SPLITS, cached_class_dataset, resolve_split, scan_class_folders
from .images import Box, ImageFileError, image_size, is_image_file, warn_list
from .pipeline import ImagePipeline


class AnnotationError(ValueError):
    """A bounding-box annotation that is missing, unreadable or does not match its image."""


def packaged_split_dir(name: str) -> Path:
    """Folder of a class split shipped with the package (``episodes/splits/<name>``)."""
    return Path(str(resources.files("episodes") / "splits" / name))


def _check_split(split: str) -> None:
    if split not in SPLITS and split != "all":
        raise ValueError(f"split must be one of {SPLITS} or 'all', got {split!r}")


def read_voc_box(xml_path: Path, image_path: Path) -> Box:
    """The first object's box ``(left, top, right, bottom)`` of a VOC-style annotation file.

    Raises:
        AnnotationError: the file is missing or not XML, has no object box, its image size or
        file name disagree with ``image_path``, or the box is empty or outside the image.
    """
    fix = "fix or remove the annotation, or load the images uncropped (crop=False)"
    if not xml_path.is_file():
        raise AnnotationError(f"{xml_path}: annotation file missing for image {image_path}: {fix}")
    try:
        tree = ET.parse(xml_path).getroot()
    except ET.ParseError as e:
        raise AnnotationError(f"{xml_path}: not a readable annotation XML ({e}): {fix}") from e
    width, height = image_size(image_path)
    filename = (tree.findtext("filename") or "%s").strip()
    if filename not in ("%s", image_path.stem, image_path.name):
        raise AnnotationError(f"{xml_path}: annotates file {filename!r}, not {image_path.name}: "
                              f"{fix}")
    size = tree.find("size")
    if size is not None and size.findtext("width") and size.findtext("height"):
        w, h = int(size.findtext("width")), int(size.findtext("height"))
        if (w, h) != (width, height):
            raise AnnotationError(f"{xml_path}: says its image is {w}x{h} but {image_path} is "
                                  f"{width}x{height}: the annotation does not match the image; "
                                  f"{fix}")
    box = tree.find("object/bndbox")
    if box is None:
        raise AnnotationError(f"{xml_path}: no <object><bndbox> in the annotation: {fix}")
    try:
        left, top, right, bottom = (int(float(box.findtext(k))) for k in
                                    ("xmin", "ymin", "xmax", "ymax"))
    except (TypeError, ValueError) as e:
        raise AnnotationError(f"{xml_path}: box coordinates are not numbers ({e}): {fix}") from e
    right, bottom = min(right, width), min(bottom, height)
    if not (0 <= left < right and 0 <= top < bottom):
        raise AnnotationError(f"{xml_path}: box ({left}, {top}, {right}, {bottom}) is empty or "
                              f"outside the {width}x{height} image {image_path}: {fix}")
    return left, top, right, bottom


def stanford_dogs(root: str | os.PathLike, split: str = "train", image_size: int = 84,
                  crop: bool = False, split_dir: str | os.PathLike | None = None,
                  cache_dir: str | os.PathLike | None = None, convert: bool = True,
                  skip_bad: bool = False, decoder: str = "auto") -> TensorClassDataset:
    """One breed split of Stanford Dogs (120 breeds: 70 train, 20 val, 30 test).

    Args:
        root: folder holding ``Images/`` (and ``Annotation/`` for ``crop``).
        split: "train", "val", "test" or "all".
        crop: crop each image to its annotated box before resizing; an annotation that is missing
            or does not match its image raises :class:`AnnotationError` (with ``skip_bad``, that
            image is left out, with one warning naming it).
        split_dir: another split (``train.txt`` ...); default the packaged 70/20/30 split.
        image_size, cache_dir, convert, skip_bad, decoder: see
            :func:`episodes.folder.cached_class_dataset`.
    Returns:
        Images uint8 ``[M, 3, image_size, image_size]``, one class per breed folder name.
    """
    _check_split(split)
    root = Path(root)
    images = root / "Images"
    if not images.is_dir():
        raise FileNotFoundError(f"Stanford Dogs not found: {images} does not exist; expected "
                                f"{root}/Images/<wnid>-<Breed>/*.jpg (extract images.tar there)")
    found = scan_class_folders(images, skip_bad=skip_bad)
    names = resolve_split(list(found), split, split_dir or packaged_split_dir("stanford_dogs"),
                          None, where=str(images))
    files = {n: list(found[n]) for n in names}
    boxes = dog_boxes(root, files, skip_bad) if crop else None
    pipeline = ImagePipeline(3, image_size, "bilinear", crop="boxes" if crop else "none")
    return cached_class_dataset(files, root, pipeline, f"dogs-{split}{'-crop' * crop}",
                                cache_dir=cache_dir, convert=convert, skip_bad=skip_bad,
                                boxes=boxes, decoder=decoder)


def dog_boxes(root: Path, files: dict[str, list[Path]], skip_bad: bool = False
              ) -> dict[Path, Box]:
    """Box of every image from ``root/Annotation/<breed>/<image stem>``; with ``skip_bad``,
    images with a bad annotation (or an unreadable image header) are removed from ``files`` (in
    place) with one warning."""
    boxes, bad = {}, []
    for breed, paths in files.items():
        for f in list(paths):
            try:
                boxes[f] = read_voc_box(root / "Annotation" / breed / f.stem, f)
            except (AnnotationError, ImageFileError) as e:
                if not skip_bad:
                    raise
                bad.append(str(e))
                paths.remove(f)
    warn_list("left out image(s) with a bad annotation or an unreadable header", bad)
    return boxes


def cub_split(class_names: list[str], split: str) -> list[str]:
    """Chen et al. 2019's CUB split of the sorted classes: index ``i`` is train when
    ``i % 2 == 0``, val when ``i % 4 == 1``, test when ``i % 4 == 3`` (100/50/50 of 200)."""
    _check_split(split)
    names = sorted(class_names)
    if split == "all":
        return names
    rule = {"train": lambda i: i % 2 == 0, "val": lambda i: i % 4 == 1,
            "test": lambda i: i % 4 == 3}[split]
    return [n for i, n in enumerate(names) if rule(i)]


def cub(root: str | os.PathLike, split: str = "train", image_size: int = 84,
        cache_dir: str | os.PathLike | None = None, convert: bool = True, skip_bad: bool = False,
        decoder: str = "auto") -> TensorClassDataset:
    """One split of CUB-200-2011 (Chen et al. 2019's 100/50/50 classes), uint8 ``[M, 3, S, S]``.

    ``root`` holds ``images/<NNN.Class_name>/*.jpg`` (or ``CUB_200_2011/images/...``).
    """
    root = Path(root)
    candidates = [root / "images", root / "CUB_200_2011" / "images"]
    images = next((c for c in candidates if c.is_dir()), None)
    if images is None:
        raise FileNotFoundError(f"CUB-200-2011 not found under {root}: expected "
                                f"{root}/images/<NNN.Class_name>/*.jpg (extract CUB_200_2011.tgz)")
    found = scan_class_folders(images, skip_bad=skip_bad)
    names = cub_split(list(found), split)
    return cached_class_dataset({n: found[n] for n in names}, images,
                                ImagePipeline(3, image_size, "bilinear"), f"cub-{split}",
                                cache_dir=cache_dir, convert=convert, skip_bad=skip_bad,
                                decoder=decoder)


def read_ravi_csv(csv_path: Path, images: Path, skip_bad: bool = False) -> dict[str, list[Path]]:
    """Class (label) -> image files of a Ravi & Larochelle split file (``filename,label`` rows,
    images in the flat folder ``images``), classes sorted, files in file order."""
    files: dict[str, list[Path]] = {}
    skipped: list[str] = []
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or {"filename", "label"} - set(reader.fieldnames):
            raise ValueError(f"{csv_path}: expected a header 'filename,label', got "
                             f"{reader.fieldnames}: is this a Ravi & Larochelle split file?")
        for line, row in enumerate(reader, start=2):
            path = images / row["filename"]
            if not path.is_file():
                raise FileNotFoundError(f"{csv_path} line {line} names {path}, which does not "
                                        f"exist: the images folder is incomplete; re-extract it")
            if not is_image_file(path):
                if skip_bad:
                    skipped.append(f"{path} (line {line})")
                    continue
                raise ImageFileError(f"{path}: not an image file (named in {csv_path} line "
                                     f"{line}): fix the split file, or skip such files "
                                     f"(skip_bad=True / --skip-bad-images)")
            files.setdefault(row["label"], []).append(path)
    warn_list(f"skipped non-image file(s) named in {csv_path}", skipped)
    if not files:
        raise ValueError(f"{csv_path} lists no images")
    return {n: files[n] for n in sorted(files)}


def mini_imagenet(root: str | os.PathLike, split: str = "train", image_size: int = 84,
                  csv_dir: str | os.PathLike | None = None,
                  split_dir: str | os.PathLike | None = None,
                  cache_dir: str | os.PathLike | None = None, convert: bool = True,
                  skip_bad: bool = False, decoder: str = "auto") -> TensorClassDataset:
    """One split of mini-ImageNet (Ravi & Larochelle's 64/16/20 classes), uint8 ``[M, 3, S, S]``.

    Reads ``<csv_dir or root>/<split>.csv`` with images in ``root/images/`` when that file
    exists; otherwise the class folders ``root/images/<wnid>/`` with the class list
    ``<split_dir or root/splits/ravi>/<split>.txt``.
    """
    _check_split(split)
    root = Path(root)
    images = root / "images"
    csv_path = Path(csv_dir or root) / f"{split}.csv"
    if csv_path.is_file():
        files = read_ravi_csv(csv_path, images, skip_bad=skip_bad)
        base = images
    elif images.is_dir():
        found = scan_class_folders(images, skip_bad=skip_bad)
        split_dir = Path(split_dir or root / "splits" / "ravi")
        if split != "all" and not (split_dir / f"{split}.txt").is_file():
            raise FileNotFoundError(f"mini-ImageNet split {split!r}: found neither {csv_path} nor "
                                    f"{split_dir / f'{split}.txt'}; this copy may not hold the "
                                    f"{split} classes (the reduced copy has train and val only)")
        names = resolve_split(list(found), split, split_dir, None, where=str(images))
        files, base = {n: found[n] for n in names}, images
    else:
        raise FileNotFoundError(f"mini-ImageNet not found under {root}: expected {csv_path} with "
                                f"{images}/<file>.jpg, or {images}/<wnid>/*.jpg with split files")
    return cached_class_dataset(files, base, ImagePipeline(3, image_size, "bilinear"),
                                f"miniimagenet-{split}", cache_dir=cache_dir, convert=convert,
                                skip_bad=skip_bad, decoder=decoder)
