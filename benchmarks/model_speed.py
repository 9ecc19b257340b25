"""How fast ResMaskingNet runs for inference and training, plain fp32 against the project's path, and whether
the faster path predicts the same emotion on real faces.

Baseline: fp32 eager PyTorch, contiguous NCHW, ``torch.inference_mode`` for inference. Optimised: what
training and inference use (``models.zoo``): ``prepare`` (channels_last model and input) and
``autocast`` at bf16 (on CUDA: bf16 where supported, else fp16).

Speeds are images per second, the median of ``--repeats`` timed runs after one warm-up run; baseline and
optimised runs alternate, so that load from other processes falls on both alike. Training is one SGD
step (forward, cross-entropy, backward, update) at batch 8 in train mode.

Top-1 agreement uses real faces: FER2013's PrivateTest rows from ``../shared/data``, read by the fer2013
stage's reader (``datasets.fer2013_read``; skipped with a message when the file is absent), resized and
preprocessed as training and evaluation do (``datasets.batched``) by the model's preprocessing: the one a
train stage's ``model.pt`` carries, else the authors' (``models.zoo.default_preprocessing``: grey, 224 px,
three channels, /255). The fair comparison is a trained model: ``--checkpoint`` loads one (the train
stage's ``model.pt``, or the authors' format, see ``models.resmasking.load_authors_checkpoint``). Without one
the model is random, and a random ResMaskingNet predicts one class for nearly every face, so agreement is
trivially 100%; the benchmark then also fits a classifier (logistic regression on the fp32 pooled features
of as many FER2013 Training faces) on the random backbone and masks, and prints both. That fitted classifier
is a harsh proxy: it separates faces by small differences of random features, which bf16's rounding
can outweigh; a trained model's agreement, which this benchmark cannot measure without a checkpoint,
should be higher, but that is an expectation, not a measurement.

    uv run python benchmarks/model_speed.py [--repeats 3] [--faces 256] [--quick] [--checkpoint PATH]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets.batched import Preprocessing, resize, to_model_input  # noqa: E402
from datasets.fer2013_read import Fer2013, read_source  # noqa: E402
from models import predict, zoo  # noqa: E402
from models.resmasking import load_authors_checkpoint  # noqa: E402

FER2013 = Path(__file__).resolve().parents[2] / "shared" / "data" / "fer2013" / "fer2013.csv.xz"
TRAIN_BATCH = 8


def load_model(checkpoint: Path | None) -> tuple[nn.Module, Preprocessing]:
    """ResMaskingNet, contiguous NCHW on the CPU, and its preprocessing: a train stage's ``model.pt`` as it
    says, an authors' checkpoint or a random model with the authors' preprocessing."""
    if checkpoint is not None and "preprocessing" in torch.load(checkpoint, map_location="cpu", weights_only=False):
        model, info = predict.load_trained(checkpoint, torch.device("cpu"))
        return model.to(memory_format=torch.contiguous_format), info["preprocessing"]
    model = zoo.create_model("resmasking")
    if checkpoint is not None:
        load_authors_checkpoint(model, checkpoint)
    return model, zoo.default_preprocessing("resmasking")


def fer2013_faces(fer2013: Fer2013, usage: str, count: int,
                  preprocessing: Preprocessing) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` rows of one Usage as the model's input (contiguous NCHW), and their labels."""
    rows = np.flatnonzero(fer2013.usages == usage)[:count]
    faces = resize(torch.from_numpy(fer2013.images[rows]), preprocessing.input_size)
    return to_model_input(faces, preprocessing).contiguous(), torch.from_numpy(fer2013.labels[rows])


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_pair(baseline: Callable[[], object], optimised: Callable[[], object], repeats: int,
               device: torch.device) -> tuple[float, float]:
    """Median seconds of each, after one warm-up run each, the timed runs alternating."""
    times: dict[Callable, list[float]] = {baseline: [], optimised: []}
    for run in (baseline, optimised):
        run()
    for _ in range(repeats):
        for run in (baseline, optimised):
            synchronize(device)
            start = time.perf_counter()
            run()
            synchronize(device)
            times[run].append(time.perf_counter() - start)
    return statistics.median(times[baseline]), statistics.median(times[optimised])


def inference_runs(model: nn.Module, fast: nn.Module, images: torch.Tensor, device: torch.device,
                   dtype: torch.dtype) -> tuple[Callable[[], torch.Tensor], Callable[[], torch.Tensor]]:
    plain = images.to(device)
    channels_last = plain.contiguous(memory_format=torch.channels_last)

    def baseline() -> torch.Tensor:
        with torch.inference_mode():
            return model(plain)

    def optimised() -> torch.Tensor:
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype):
            return fast(channels_last)

    return baseline, optimised


def training_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                  dtype: torch.dtype | None) -> Callable[[], None]:
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(images.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()

    return step


def pooled_features(model: nn.Module, images: torch.Tensor, device: torch.device, dtype: torch.dtype | None,
                    batch_size: int = 32) -> torch.Tensor:
    """The classifier's input for every image, through the fp32 path (dtype None) or the optimised one."""
    captured: list[torch.Tensor] = []
    hook = model.fc.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0].detach()))
    try:
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size].to(device)
            if dtype is None:
                with torch.inference_mode():
                    model(batch)
            else:
                with torch.inference_mode(), torch.autocast(device.type, dtype=dtype):
                    model(batch.contiguous(memory_format=torch.channels_last))
    finally:
        hook.remove()
    return torch.cat(captured)


def fit_classifier(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> nn.Linear:
    """A linear classifier fitted by logistic regression of ``labels`` on fp32 ``features``."""
    features, labels = features.float(), labels.to(features.device)
    scale = features.std(0).mean()  # random features are small: standardise, then undo it in the weights
    head = nn.Linear(features.shape[1], num_classes).to(features.device)
    optimizer = torch.optim.LBFGS(head.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(head(features / scale), labels) + 1e-3 * head.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        head.weight /= scale
    return head


def agreement(model: nn.Module, fast: nn.Module, preprocessing: Preprocessing, device: torch.device,
              dtype: torch.dtype, faces: int, checkpoint: Path | None) -> None:
    if not FER2013.exists():
        print(f"\ntop-1 agreement: skipped, {FER2013} is absent")
        return
    fer2013 = read_source(FER2013)
    test_images, test_labels = fer2013_faces(fer2013, "PrivateTest", faces, preprocessing)
    exact = pooled_features(model, test_images, device, None)
    fast_features = pooled_features(fast, test_images, device, dtype)
    heads = {f"the checkpoint's ({checkpoint.name})" if checkpoint else "random (untrained)": model.fc[-1]}
    if checkpoint is None:
        train_images, train_labels = fer2013_faces(fer2013, "Training", faces, preprocessing)
        heads[f"fitted on {len(train_images)} Training faces"] = fit_classifier(
            pooled_features(model, train_images, device, None), train_labels, model.fc[-1].out_features)
    print(f"\ntop-1 agreement on {len(test_images)} FER2013 PrivateTest faces, optimised path vs fp32 "
          f"(same weights; {'trained' if checkpoint else 'backbone and masks random'}):")
    print(f"{'classifier':<40} {'agreement':>10} {'fp32 acc':>9} {'opt acc':>8}")
    for name, head in heads.items():
        with torch.inference_mode():
            reference = head(exact).argmax(1).cpu()
            with torch.autocast(device.type, dtype=dtype):
                optimised = head(fast_features).argmax(1).cpu()
        print(f"{name:<40} {100 * (reference == optimised).float().mean():>9.1f}% "
              f"{100 * (reference == test_labels).float().mean():>8.1f}% "
              f"{100 * (optimised == test_labels).float().mean():>7.1f}%")


def benchmark(device: torch.device, args: argparse.Namespace) -> None:
    dtype = zoo.autocast_dtype(device, "auto") or torch.bfloat16
    torch.manual_seed(0)
    model, preprocessing = load_model(args.checkpoint)
    model = model.to(device).eval()
    fast = zoo.prepare(copy.deepcopy(model), device).eval()
    size = preprocessing.input_size
    images = torch.rand(32, preprocessing.channels, size, size, generator=torch.Generator().manual_seed(0))
    print(f"\nResMaskingNet, {size}x{size}")

    print(f"\n{device.type}: baseline fp32 eager NCHW; optimised {str(dtype).removeprefix('torch.')} autocast "
          f"+ channels_last")
    print(f"{'measure':<28} {'baseline':>10} {'optimised':>10} {'speed-up':>9}")
    for batch in (1, 32):
        runs = inference_runs(model, fast, images[:batch], device, dtype)
        base, opt = timed_pair(*runs, args.repeats, device)
        print(f"{f'inference img/s, batch {batch}':<28} {batch / base:>10.2f} {batch / opt:>10.2f} {base / opt:>8.2f}x")

    labels = torch.arange(TRAIN_BATCH, device=device) % 7
    plain = images[:TRAIN_BATCH].to(device)
    base_step = training_step(copy.deepcopy(model).train(), plain, labels, None)
    fast_step = training_step(zoo.prepare(copy.deepcopy(model), device).train(),
                              plain.contiguous(memory_format=torch.channels_last), labels, dtype)
    base, opt = timed_pair(base_step, fast_step, args.repeats, device)
    print(f"{f'training img/s, batch {TRAIN_BATCH}':<28} {TRAIN_BATCH / base:>10.2f} "
          f"{TRAIN_BATCH / opt:>10.2f} {base / opt:>8.2f}x")

    agreement(model, fast, preprocessing, device, dtype, args.faces, args.checkpoint)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median)")
    parser.add_argument("--faces", type=int, default=256, help="FER2013 faces for agreement (and as many to fit)")
    parser.add_argument("--quick", action="store_true", help="2 repeats, 128 faces")
    parser.add_argument("--checkpoint", type=Path,
                        help="a trained ResMaskingNet: the train stage's model.pt or the authors' format")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.faces = 2, 128

    print(f"torch {torch.__version__}, {platform.machine()}, "
          f"{torch.get_num_threads()} threads of {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}; CPU bf16 kernels: {torch.ops.mkldnn._is_mkldnn_bf16_supported()}")
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        if device.type == "cuda":
            print(f"GPU: {torch.cuda.get_device_name(device)}")
        benchmark(device, args)


if __name__ == "__main__":
    main()
