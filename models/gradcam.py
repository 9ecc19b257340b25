"""Grad-CAM heatmaps: where in the face a model looked for the class it predicted (the paper's Figure 6).

Grad-CAM (Selvaraju et al., ICCV 2017) weighs each channel of the last feature map by the mean gradient
of the class score with respect to it, sums, and keeps the positive part. The last feature map is the
input of the model's global average pooling: for ResMaskingNet that is the fourth residual layer after
its masking block (F_R + F_R x M(F_R)), for the ResNet baselines the fourth residual layer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pipeline.common import atomic_write
from pipeline.emotions import EMOTIONS


def gradcam(model: nn.Module, images: torch.Tensor, classes: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps in [0, 1] at the images' size (N x H x W) for ``classes`` (default: the predicted ones),
    and the predicted probabilities (N x classes)."""
    captured: list[torch.Tensor] = []

    def keep(_: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        captured.append(inputs[0])

    handle = model.avgpool.register_forward_pre_hook(keep)
    try:
        with torch.enable_grad():
            images = images.detach().requires_grad_(True)  # so that the graph reaches the feature map
            logits = model(images).float()
            if classes is None:
                classes = logits.argmax(dim=1)
            score = logits.gather(1, classes.view(-1, 1)).sum()
            features = captured[0]
            gradients, = torch.autograd.grad(score, features)
    finally:
        handle.remove()
    weights = gradients.float().mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * features.float()).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).max(dim=1).values.clamp_min(1e-12)
    return (cam / peak[:, None, None]).detach().cpu().numpy(), torch.softmax(logits, 1).detach().cpu().numpy()


def figure(images: np.ndarray, cams: np.ndarray, labels: np.ndarray, probs: np.ndarray, path: Path) -> None:
    """A PNG with one column per image: the face, and the face under its heatmap, titled true / predicted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.6), squeeze=False)
    for i in range(n):
        predicted = int(probs[i].argmax())
        axes[0, i].imshow(images[i], cmap="gray", vmin=0, vmax=1)
        axes[0, i].set_title(f"{EMOTIONS[labels[i]]}\n{EMOTIONS[predicted]} {probs[i, predicted]:.2f}", fontsize=7,
                             color="black" if predicted == labels[i] else "red")
        axes[1, i].imshow(images[i], cmap="gray", vmin=0, vmax=1)
        axes[1, i].imshow(cams[i], cmap="jet", alpha=0.45, vmin=0, vmax=1)
        for ax in axes[:, i]:
            ax.axis("off")
    fig.suptitle("Grad-CAM: true label / predicted (red: wrong)", fontsize=8)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
