"""``fewshot predict``: label query images from a few labelled support images, reading the files
with the image pipeline the checkpoint recorded."""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

from episodes.io import atomic_write_text

from ..engine.checkpoint import load_learner, recorded_pipeline
from ..engine.predict import Prediction, predict
from .args import (
    MAX_MEMORY_HELP,
    add_output_arg,
    add_quiet_arg,
    device,
    memory_size,
    not_an_input,
    output_file,
    pick_device,
    positive_int,
    say_data_note,
)
from .unlabelled import add_predict_unlabelled_args, predict_refiner


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="a trained checkpoint")
    p.add_argument("--support", required=True, help="folder of class folders of support images")
    p.add_argument("--query", required=True, help="folder of images to label")
    add_output_arg(p, "write the predictions to this file (default: print them)")
    p.add_argument("--pipeline", metavar="SETTINGS", help="how to read the image files, for a "
                   "checkpoint that does not record it (e.g. channels=1,size=28,resample=area,"
                   "invert=true); checkpoints written by fewshot train record it")
    p.add_argument("--format", choices=FORMATS, default="tsv", help="output format")
    p.add_argument("--queries-per-pass", type=positive_int, help="query images per forward pass "
                   "(default: as many as fit --max-memory)")
    p.add_argument("--batch-size", dest="queries_per_pass", type=positive_int,
                   help=argparse.SUPPRESS)  # the old name of --queries-per-pass
    p.add_argument("--max-memory", type=memory_size, metavar="SIZE", help=MAX_MEMORY_HELP)
    p.add_argument("--no-convert", action="store_true",
                   help="refuse images whose channels differ from the model's")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="skip unreadable or non-image files (with a warning) instead of failing")
    p.add_argument("--no-temperature", action="store_true", help="the learner's own "
                   "probabilities, not those calibrated by the temperature the checkpoint records")
    add_quiet_arg(p)
    p.add_argument("--device", type=device, default="auto", help="cpu, cuda, cuda:N or auto")
    add_predict_unlabelled_args(p)


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


FORMATS = ("tsv", "csv", "json")


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
