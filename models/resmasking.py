"""ResMaskingNet, the Residual Masking Network for facial expressions, and a loader for its authors' checkpoints.

The design is that of Pham, Vu and Tran, "Facial Expression Recognition using Residual Masking
Network", ICPR 2020, as their code defines it (github.com/phamquiluan/ResidualMaskingNetwork,
``models/resmasking.py``, ``models/masking.py``, ``models/resnet.py``): a ResNet34 backbone
(BasicBlock, [3, 4, 6, 3]); after each residual layer a U-Net-like masking block whose depth shrinks
with the map (4, 3, 2 and 1 levels for the 56, 28, 14 and 7 pixel maps of a 224 x 224 face), its
mask M applied as F + F * M(F); then average pooling, dropout 0.4 and a 7-way linear classifier.

Layer names follow the authors' code, so that their published checkpoints (``torch.save`` of a dict
whose ``"net"`` holds the state_dict, e.g. ``resmasking_dropout1_rot30_2019Nov17_14.33``) load with
``strict=True`` through ``load_authors_checkpoint``. The backbone is torchvision's ResNet, whose names
are those of the authors' ``resnet.py``, so torchvision's ImageNet weights load into it as well.

Two details of the authors' code are kept because their checkpoints depend on them:
- The mask is a softmax over channels (the paper's figure suggests a per-pixel sigmoid).
- In a masking block each residual block's 1x1 projection is also registered a second time, as
  ``downsampleN`` beside ``convN``. The module is shared, so the weights exist once, but the
  state_dict lists them under both names. That is where the paper's 142.9M parameters come from:
  counted with the shared projections twice (``named_parameters(remove_duplicate=False)``, or the
  state_dict without BN running statistics) the model has 142,943,431; ``model.parameters()``
  counts each tensor once: 137,796,423 unique parameters, about 137.8M. ``tests/test_models.py``
  checks both numbers.

The blocks work on any input whose side is a multiple of 32 (each masking block halves its map
``depth - 1`` times and upsamples it back); the authors use 224. ``mask_depths`` sets the four blocks'
depths; shallower blocks at a smaller input are the fast recipe's trade (``params.yaml:train.fast``),
and a map must stay at least ``2 ** (depth - 1)`` pixels wide.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet, conv1x1

from pipeline.common import StageError

NUM_EMOTIONS = 7
DROPOUT = 0.4
MASK_DEPTHS = (4, 3, 2, 1)  # for layer1..layer4: 56, 28, 14 and 7 pixel maps at 224 x 224


def projection(in_channels: int, out_channels: int) -> nn.Sequential:
    """The 1x1 convolution and BN that match a residual block's shortcut to its new width."""
    return nn.Sequential(conv1x1(in_channels, out_channels), nn.BatchNorm2d(out_channels))


def up_pooling(in_channels: int, out_channels: int) -> nn.Sequential:
    """Twice the map size through a learnt 2x2 transposed convolution, as in U-Net's decoder."""
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class MaskingBlock(nn.Module):
    """A U-Net of residual blocks that maps features F to a soft mask M(F) of the same shape.

    With width w and depth d, the encoder ``conv1..conv{d}`` doubles the width at each level
    (w -> 2w -> ... -> 2^d w) and max-pools between levels; the decoder ``up_pool{i}`` and ``conv{i}``
    (i = d+1 .. 2d-1) upsamples, concatenates the encoder's map of the same size and halves the width;
    ``conv{2d}`` projects back to w channels; a softmax over channels makes the mask.
    """

    def __init__(self, channels: int, depth: int) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"a masking block needs depth >= 1, got {depth}")
        self.depth = depth
        widths = [channels * 2**level for level in range(depth + 1)]
        for index in range(1, depth + 1):
            self._add_residual_block(index, widths[index - 1], widths[index])
        self.down_pooling = nn.MaxPool2d(kernel_size=2)
        for index in range(depth + 1, 2 * depth):
            level = 2 * depth - index  # the encoder level whose map this decoder step restores
            self.add_module(f"up_pool{index}", up_pooling(widths[level + 1], widths[level]))
            # The input is the upsampled map concatenated with the encoder's: 2 x widths[level].
            self._add_residual_block(index, widths[level + 1], widths[level])
        self._add_residual_block(2 * depth, widths[1], widths[0])
        self._init_weights()

    def _add_residual_block(self, index: int, in_channels: int, out_channels: int) -> None:
        shortcut = projection(in_channels, out_channels)
        # Registered under both names, as the authors did: their checkpoints hold both keys.
        self.add_module(f"downsample{index}", shortcut)
        self.add_module(f"conv{index}", BasicBlock(in_channels, out_channels, downsample=shortcut))

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Each residual branch starts at zero, so every block starts as its shortcut (Goyal et al. 2017).
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.conv1(features)
        skips = []
        for index in range(2, self.depth + 1):
            skips.append(x)
            x = getattr(self, f"conv{index}")(self.down_pooling(x))
        for index in range(self.depth + 1, 2 * self.depth):
            x = getattr(self, f"up_pool{index}")(x)
            x = getattr(self, f"conv{index}")(torch.cat([x, skips.pop()], dim=1))
        x = getattr(self, f"conv{2 * self.depth}")(x)
        return torch.softmax(x, dim=1)


class ResMaskingNet(ResNet):
    """ResNet34 with a masking block after each residual layer, dropout and a 7-way classifier.

    ``forward`` takes N x 3 x 224 x 224 images (the authors' preprocessing: grey faces replicated to
    three channels, scaled to [0, 1], no mean/std normalisation; see ``models.zoo.default_preprocessing``)
    and returns N x ``num_classes`` logits.
    """

    def __init__(self, num_classes: int = NUM_EMOTIONS, dropout: float = DROPOUT,
                 mask_depths: tuple[int, ...] | list[int] = MASK_DEPTHS) -> None:
        super().__init__(BasicBlock, [3, 4, 6, 3])
        if len(mask_depths) != 4:
            raise ValueError(f"mask_depths needs one depth per residual layer (4), got {list(mask_depths)}")
        # "fc.1" as in the authors' resmasking_dropout1, whose checkpoints were published.
        self.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(512 * BasicBlock.expansion, num_classes))
        self.mask1 = MaskingBlock(64, depth=mask_depths[0])
        self.mask2 = MaskingBlock(128, depth=mask_depths[1])
        self.mask3 = MaskingBlock(256, depth=mask_depths[2])
        self.mask4 = MaskingBlock(512, depth=mask_depths[3])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        for layer, mask in ((self.layer1, self.mask1), (self.layer2, self.mask2),
                            (self.layer3, self.mask3), (self.layer4, self.mask4)):
            x = layer(x)
            x = x * (1 + mask(x))  # F + F * M(F): the mask can only amplify, never erase, a feature
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resmasking(num_classes: int = NUM_EMOTIONS, dropout: float = DROPOUT,
               mask_depths: tuple[int, ...] | list[int] = MASK_DEPTHS) -> ResMaskingNet:
    """The paper's model (the authors' ``resmasking_dropout1``), randomly initialised; ``mask_depths`` other
    than (4, 3, 2, 1) make a variant whose checkpoints are not the authors'."""
    return ResMaskingNet(num_classes=num_classes, dropout=dropout, mask_depths=mask_depths)


def load_authors_checkpoint(model: nn.Module, path: Path | str) -> nn.Module:
    """Load a checkpoint in the authors' format into ``model`` (strictly) and return the model.

    Accepts a dict with the state_dict under ``"net"`` (as their trainer saves it), the train
    stage's ``model.pt`` (under ``"state_dict"``) or a bare state_dict; strips the ``module.`` prefix that (Distributed)DataParallel adds. Raises
    ``StageError`` naming the file and the keys when the checkpoint does not fit the model.
    """
    path = Path(path)
    try:
        # weights_only: a checkpoint from the web may not run code; the authors' holds only
        # tensors, numbers, strings and lists.
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise StageError(f"{path}: checkpoint not found") from None
    except Exception as e:  # torch raises a different type for each way a file can be unreadable
        raise StageError(f"{path}: not a readable PyTorch checkpoint: {e}") from None
    state_dict = checkpoint.get("net", checkpoint.get("state_dict", checkpoint)) if isinstance(checkpoint, dict) else None
    if not isinstance(state_dict, dict):
        raise StageError(f"{path}: expected a state_dict or a dict with one under 'net', "
                         f"found {type(checkpoint).__name__}")
    state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}

    problems = key_mismatches(model.state_dict(), state_dict)
    if problems:
        raise StageError(f"{path}: does not fit {type(model).__name__}: keys {problems}. Is it a checkpoint of "
                         "this architecture (for ResMaskingNet, the authors' resmasking_dropout1) with the "
                         "same number of classes?")
    model.load_state_dict(state_dict, strict=True)
    return model


def key_mismatches(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> str:
    """What keeps ``found`` from loading strictly where ``expected`` is: missing, unexpected and mis-shaped keys."""
    def some(keys: list[str]) -> str:
        return ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")

    missing = sorted(expected.keys() - found.keys())
    unexpected = sorted(found.keys() - expected.keys())
    mis_shaped = sorted(f"{key}: {tuple(found[key].shape)} for {tuple(expected[key].shape)}"
                        for key in expected.keys() & found.keys() if found[key].shape != expected[key].shape)
    problems = [f"{len(missing)} missing ({some(missing)})" if missing else "",
                f"{len(unexpected)} unexpected ({some(unexpected)})" if unexpected else "",
                f"{len(mis_shaped)} of another shape ({some(mis_shaped)})" if mis_shaped else ""]
    return "; ".join(p for p in problems if p)
