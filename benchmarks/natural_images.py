"""Natural images on the reduced mini-ImageNet: decoding cache, episode throughput, ProtoNet accuracy.

Three parts (``--parts``):

- ``cache``: time to build the decoded uint8 cache of the train and val splits (fresh cache folder,
  for each ``--decoders``), and time to load it again (memory-mapped; includes hashing the files).
- ``speed``: 5-way 1-shot 15-query 84x84 episodes/s, side by side in one run: episodes gathered
  from the cache on the device vs JPEGs decoded per episode through a ``torch.utils.data.DataLoader``
  (``--workers`` processes); data only, then ProtoNet Conv-4 training steps through the library's
  one training loop (``fewshot.train``), also with episode augmentation.
- ``accuracy``: ProtoNet trained on the 64 train classes, tested on the 16 val classes on fixed
  episodes (5-way, 1-shot and 5-shot, 15 queries), Conv-4 and ResNet-12, with and without
  augmentation (``AugmentConfig.standard()`` on support and query); 95% intervals and a paired
  test (with vs without augmentation) on the same episodes.

Full protocol on a GPU::

    python benchmarks/natural_images.py --device cuda --steps 20000 --resnet-steps 20000 \\
        --episodes 1000 --resnet-episodes 1000 --speed-steps 500

The defaults are a reduced CPU run (few steps, few episodes): its accuracies only show that the
pipeline runs, they are not comparable to published figures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import common  # puts this checkout on sys.path
import torch
from torch.utils.data import DataLoader, IterableDataset

from episodes import AugmentConfig, EpisodeAugment, EpisodeSampler, FixedEpisodes, mini_imagenet
from episodes.episode import Episode, class_major_labels
from episodes.folder import scan_class_folders
from episodes.images import decode_image
from episodes.sampler import sample_indices
from fewshot import ModelSpec, TrainConfig, build_learner, evaluate, paired_test, train

ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "miniimagenet"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class JpegEpisodes(IterableDataset):
    """Episodes decoded from JPEG files on every draw (the baseline): yields uint8
    ``[N, K+Q, 3, S, S]`` images and classes ``[N]``; each worker has its own seeded generator."""

    def __init__(self, files: list[list[Path]], n_way: int, per_class: int, size: int, seed: int):
        self.files, self.n_way, self.per_class, self.size, self.seed = (files, n_way, per_class,
                                                                        size, seed)
        sizes = torch.tensor([len(f) for f in files])
        self.table = torch.full((len(files), int(sizes.max())), -1, dtype=torch.long)
        for c, f in enumerate(files):
            self.table[c, :len(f)] = torch.arange(len(f))
        self.sizes = sizes

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        g = torch.Generator().manual_seed(self.seed + (info.id if info else 0))
        while True:
            classes, items = sample_indices(self.table, self.sizes, self.n_way, self.per_class, 1, g)
            images = torch.stack([torch.stack([decode_image(self.files[c][i], 3, self.size)[0]
                                               for i in row.tolist()])
                                  for c, row in zip(classes[0].tolist(), items[0], strict=True)])
            yield images, classes[0]


class LoaderSampler:
    """Makes DataLoader episodes look like an :class:`EpisodeSampler` to :func:`fewshot.train`."""

    def __init__(self, loader: DataLoader, dataset, k_shot: int, device: torch.device):
        self.iterator, self.dataset, self.k_shot, self.device = iter(loader), dataset, k_shot, device
        self.episodes_per_batch = 1

    def sample(self) -> Episode:
        images, classes = next(self.iterator)
        x = images.to(self.device, non_blocking=True).float().div_(255)[None]
        n, q = x.shape[1], x.shape[2] - self.k_shot
        return Episode(x[:, :, :self.k_shot].flatten(1, 2),
                       class_major_labels(1, n, self.k_shot, self.device),
                       x[:, :, self.k_shot:].flatten(1, 2),
                       class_major_labels(1, n, q, self.device), classes[None].to(self.device))

    def state_dict(self) -> dict:
        return {}


def part_cache(args, report: dict) -> None:
    for decoder in args.decoders.split(","):
        tmp = Path(tempfile.mkdtemp(prefix="fewshot-bench-"))
        try:
            t0 = time.perf_counter()
            sets = [mini_imagenet(args.root, s, cache_dir=tmp, decoder=decoder)
                    for s in ("train", "val")]
            build = time.perf_counter() - t0
            t0 = time.perf_counter()
            for s in ("train", "val"):
                mini_imagenet(args.root, s, cache_dir=tmp, decoder=decoder)
            load = time.perf_counter() - t0
        finally:
            shutil.rmtree(tmp)
        n = sum(len(d) for d in sets)
        report[f"cache_{decoder}"] = {"images": n, "build_s": build, "load_s": load,
                                      "images_per_s": n / build}
        print(f"cache [{decoder}]: {n} images, build {build:.1f} s ({n / build:.0f} images/s), "
              f"cached load {load:.2f} s")


def part_speed(args, report: dict, device: torch.device) -> None:
    n, k, q = 5, 1, 15
    data = mini_imagenet(args.root, "train").to(device)
    found = scan_class_folders(Path(args.root) / "images")
    files = [found[c] for c in data.class_names]
    loader = DataLoader(JpegEpisodes(files, n, k + q, 84, args.seed), batch_size=None,
                        num_workers=args.workers, pin_memory=device.type == "cuda",
                        persistent_workers=args.workers > 0, prefetch_factor=4 if args.workers else None)
    sources = {"cache": lambda: EpisodeSampler(data, n, k, q, seed=args.seed, device=device),
               "cache+augment": lambda: EpisodeSampler(
                   data, n, k, q, seed=args.seed, device=device,
                   augment=EpisodeAugment(AugmentConfig.standard(), AugmentConfig.standard())),
               "jpeg DataLoader": lambda: LoaderSampler(loader, data, k, device)}
    rows = {}
    for name, make in sources.items():
        sampler = make()
        for _ in range(3):
            sampler.sample()  # warm up (DataLoader workers start)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(args.data_steps):
            ep = sampler.sample()
        sync(device)
        data_rate = args.data_steps / (time.perf_counter() - t0)
        torch.manual_seed(args.seed)
        spec = ModelSpec("protonet", "conv4", 3, 84)
        result = train(build_learner(spec), spec, sampler,
                       TrainConfig(steps=args.speed_steps, progress=False), device=device)
        sync(device)
        rows[name] = {"data_episodes_per_s": data_rate,
                      "train_episodes_per_s": result.episodes_per_second}
        print(f"speed [{name}]: data only {data_rate:.1f} episodes/s, Conv-4 ProtoNet training "
              f"{result.episodes_per_second:.2f} episodes/s ({args.speed_steps} steps)")
        del ep
    report["speed_5w1s15q_84px"] = rows


def part_accuracy(args, report: dict, device: torch.device) -> None:
    train_set = mini_imagenet(args.root, "train").to(device)
    val_set = mini_imagenet(args.root, "val").to(device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = report.setdefault("accuracy", [])
    for backbone in args.backbones.split(","):
        steps = args.resnet_steps if backbone == "resnet12" else args.steps
        n_eval = args.resnet_episodes if backbone == "resnet12" else args.episodes
        for shot in (int(k) for k in args.shots.split(",")):
            episodes = FixedEpisodes.generate(val_set, 5, shot, 15, n_eval, seed=args.seed)
            episodes.save(out / f"val-5w{shot}s15q-{n_eval}.pt")
            results = {}
            for aug in (False, True):
                torch.manual_seed(args.seed)
                spec = ModelSpec("protonet", backbone, 3, 84)
                augment = (EpisodeAugment(AugmentConfig.standard(), AugmentConfig.standard(),
                                          seed=args.seed) if aug else None)
                sampler = EpisodeSampler(train_set, 5, shot, 15, seed=args.seed, device=device,
                                         augment=augment)
                learner = build_learner(spec)
                t0 = time.perf_counter()
                tr = train(learner, spec, sampler, TrainConfig(
                    steps=steps, lr=1e-3, lr_decay_every=args.lr_decay_every,
                    precision=args.precision, progress=False), device=device)
                res = evaluate(learner, episodes, val_set, batch_size=args.eval_batch,
                               device=device, precision=args.precision)
                results[aug] = res
                row = {"backbone": backbone, "shot": shot, "augment": aug, "steps": tr.steps,
                       "train_s": tr.seconds, "total_s": time.perf_counter() - t0,
                       "episodes": n_eval, "mean": res.mean, "ci95": res.ci95}
                rows.append(row)
                print(f"accuracy [{backbone}, 5-way {shot}-shot, augment={aug}]: "
                      f"{100 * res.mean:.2f} +- {100 * res.ci95:.2f} % on {n_eval} val episodes "
                      f"after {tr.steps} steps ({tr.seconds:.0f} s)")
            p = paired_test(results[True], results[False])
            rows.append({"backbone": backbone, "shot": shot, "paired_aug_minus_plain": p})
            print(f"paired [{backbone}, {shot}-shot] augment - plain: {100 * p['mean_diff']:+.2f} "
                  f"+- {100 * p['ci95']:.2f} %, t-test p={common.p_text(p['t_test_p'], 3)}, "
                  f"Wilcoxon p={common.p_text(p['wilcoxon_p'], 3)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=str(ROOT))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--parts", default="cache,speed,accuracy")
    ap.add_argument("--decoders", default="auto", help="comma list: auto, cuda, threads, processes")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    ap.add_argument("--data-steps", type=int, default=50, help="episodes timed, data only")
    ap.add_argument("--speed-steps", type=int, default=5, help="training steps timed per source")
    ap.add_argument("--backbones", default="conv4,resnet12")
    ap.add_argument("--shots", default="1,5", help="comma list of shots (a model trained for each)")
    ap.add_argument("--steps", type=int, default=15, help="Conv-4 training steps per model")
    ap.add_argument("--resnet-steps", type=int, default=1)
    ap.add_argument("--episodes", type=int, default=40, help="Conv-4 fixed val episodes")
    ap.add_argument("--resnet-episodes", type=int, default=3)
    ap.add_argument("--lr-decay-every", type=int, default=0, help="halve the lr every N steps")
    ap.add_argument("--eval-batch", type=int, default=10)
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/natural-images")
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    report: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda"
                    else f"CPU ({torch.get_num_threads()} threads)", "torch": torch.__version__,
                    "date": time.strftime("%Y-%m-%d %H:%M"), "args": vars(args)}
    print(json.dumps({k: report[k] for k in ("device", "torch", "date")}))
    if device.type == "cpu":
        print("CPU run: reduced protocol (few steps and episodes); accuracies are a pipeline check")
    parts = args.parts.split(",")
    if "cache" in parts:
        part_cache(args, report)
    if "speed" in parts:
        part_speed(args, report, device)
    if "accuracy" in parts:
        part_accuracy(args, report, device)
    report["peak_memory"] = common.peak_memory(device)
    print(json.dumps(report["peak_memory"]))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
