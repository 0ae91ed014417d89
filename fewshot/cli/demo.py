"""``fewshot demo``: the whole workflow in a few minutes on the embedded dataset, under
``train``'s rules for its run folder. (Its arguments: :func:`fewshot.cli.flags.demo_arguments`.)"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..demo import SPEC as DEMO_SPEC
from ..demo import run_demo
from ..engine.provenance import provenance
from ..engine.runs import RUN_FILE, RunError, check_run_folder, open_run, read_run, run_record
from .args import output_folder
from .data import pick_device


def run(args: argparse.Namespace) -> None:
    """The demo, under ``train``'s rules for its run folder: a folder holding another run is
    refused unless ``--overwrite`` (an earlier demo's own run is replaced), the folder is locked,
    and ``run.json`` records the demo."""
    output_folder("--out", args.out)
    run_file = Path(args.out) / RUN_FILE
    try:
        own = run_file.is_file() and read_run(run_file).get("command") == "demo"
    except RunError:
        own = False
    replace = args.overwrite or own
    check_run_folder(args.out, resume=False, overwrite=replace)
    settings = {"seconds": args.seconds, "episodes": args.episodes, "out": args.out,
                "device": args.device, "precision": args.precision}
    device = pick_device(args.device)
    record = run_record(settings, DEMO_SPEC.to_dict(), command="demo")
    record["provenance"] = provenance(dataset="embedded", settings={}, split="train", seed=0,
                                      device=device, channels=DEMO_SPEC.in_channels)
    with open_run(args.out, record, resume=False, overwrite=replace):
        run_demo(seconds=args.seconds, out=args.out, device=device,
                 episodes=args.episodes, precision=args.precision)
    sys.stdout.flush()
