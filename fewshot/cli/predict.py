"""``fewshot predict``: label query images from a few labelled support images, reading the files
with the image pipeline the checkpoint recorded. (Its arguments:
:func:`fewshot.cli.flags.predict_arguments`.)"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

from episodes.io import atomic_write_text

from ..engine.checkpoint import load_learner, recorded_pipeline
from ..engine.predict import Prediction, predict
from .args import not_an_input, output_file, say_data_note
from .data import pick_device
from .unlabelled import predict_refiner


def run(args: argparse.Namespace) -> None:
    device = pick_device(args.device)
    output_file("--output", args.output)
    folders = (("--support", args.support), ("--query", args.query), ("--unlabelled", args.unlabelled))
    for flag, folder in folders:
        if folder is not None and not Path(folder).is_dir():
            raise FileNotFoundError(f"{flag} folder {folder} does not exist: check the path")
    not_an_input("--output", args.output, {"--checkpoint": args.checkpoint},
                 {"--support": args.support, "--query": args.query,
                  "--unlabelled": args.unlabelled})
    learner, spec, ckpt = load_learner(args.checkpoint, device, "--checkpoint")
    pipeline = recorded_pipeline(ckpt, args.checkpoint, args.pipeline)
    say_data_note(args)
    refiner = predict_refiner(args, learner)
    preds = predict(learner, spec, args.support, args.query, device, convert=not args.no_convert,
                    batch_size=args.queries_per_pass, pipeline=pipeline,
                    skip_bad=args.skip_bad_images, max_memory=args.max_memory,
                    unlabelled_dir=args.unlabelled, refiner=refiner,
                    temperature=1.0 if args.no_temperature else ckpt["temperature"])
    text = format_predictions(preds, args.format)
    if args.output:
        atomic_write_text(text, args.output)
        print(f"wrote {len(preds)} predictions to {args.output}")
    else:
        print(text, end="")


def format_predictions(preds: list[Prediction], fmt: str) -> str:
    """Predictions as ``tsv`` or ``csv`` (a header ``path,label,probability`` and a row each)
    or ``json`` (a list of objects with those keys)."""
    rows = [{"path": str(p.path), "label": p.label, "probability": round(p.probability, 6)}
            for p in preds]
    if fmt == "json":
        return json.dumps(rows, indent=1) + "\n"
    out = io.StringIO()
    writer = csv.DictWriter(out, ["path", "label", "probability"], lineterminator="\n",
                            delimiter="\t" if fmt == "tsv" else ",")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
