"""Face detection with facenet-pytorch's MTCNN (its nets and shipped weights), and the schedule that makes it fast.

MTCNN is a cascade: PNet proposes boxes over an image pyramid, RNet and then ONet judge and refine
them (ONet adds the five landmarks). ``FaceDetector`` runs that cascade as facenet-pytorch's
``detect_face`` does, with its nets and its box arithmetic, but builds the pyramid and cuts the
candidate crops with OpenCV on bytes instead of torch's area interpolation, and keeps the nets in
channels_last; on this project's 2-core CPU that makes a 640x360 detection several times cheaper.
Frames of one size are detected as a batch. Pyramid levels larger than ``detect_max_side`` are
skipped, so very large frames are searched at reduced size; crops always come from the original.

``FaceDetector.track`` looks again only where faces were a moment ago: at 5 samples per second a
face moves little, so the previous boxes, shifted a little, stand in for PNet's proposals, and RNet
and ONet judge and refine them as they would PNet's.

``detect_and_track`` puts them together for a video: a full detection on the first sample, every
``full_detect_every`` samples after it, whenever the picture changes (a cut, a pan) and whenever a
tracked face is lost; tracking in between. ``full_detect_every: 1`` detects every sample in full.
``benchmarks/faces_speed.py`` measures the gain, and the faces it finds, against facenet-pytorch's
own ``MTCNN.detect`` on every sampled frame.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from facenet_pytorch import MTCNN
from facenet_pytorch.models.utils import detect_face as mtcnn_utils
from torchvision.ops import batched_nms

from pipeline.sampling import Sample

PYRAMID_FACTOR = 0.709  # MTCNN's scale step
# Tracking proposals around a previous face: shifts, in face sizes.
TRACK_SHIFTS = np.array([(0, 0), (-0.15, 0), (0.15, 0), (0, -0.15), (0, 0.15)])
THUMBNAIL = (32, 18)  # the picture that scene changes are judged on


@dataclass
class Face:
    box: np.ndarray  # x1, y1, x2, y2 in the original frame's pixels
    probability: float
    landmarks: np.ndarray  # 5 x 2: left eye, right eye, nose, mouth left, mouth right
    how: str  # "full" or "track"

    @property
    def size(self) -> float:
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))


def cpu_threads() -> int:
    """PyTorch threads for detection on the CPU: every core but one, which decodes video beside it.

    MTCNN's operations are small; on a 2-core machine one thread each for decoding and detection beats
    two threads contending.
    """
    return max(1, (os.cpu_count() or 2) - 1)


def thumbnail(image: np.ndarray) -> np.ndarray:
    small = cv2.resize(image, THUMBNAIL, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_BGR2GRAY).astype(np.float32)


class Mipmap:
    """An image and its successive halvings, so that area-resampled views are cut from the nearest one.

    OpenCV's area resampling is fast for whole-number ratios and slow otherwise; halving, then a last
    step by a factor below two, gives the same kind of result several times faster.
    """

    def __init__(self, image: np.ndarray):
        self.levels = [image]

    def _level(self, shrink: float) -> tuple[np.ndarray, float, float]:
        """The smallest level still at least 1/``shrink`` of the original size, with its x and y scales."""
        wanted = max(int(np.log2(max(shrink, 1.0))), 0)
        while len(self.levels) <= wanted and min(self.levels[-1].shape[:2]) >= 4:
            h, w = self.levels[-1].shape[:2]
            self.levels.append(cv2.resize(self.levels[-1], (w // 2, h // 2), interpolation=cv2.INTER_AREA))
        level = self.levels[min(wanted, len(self.levels) - 1)]
        return level, level.shape[1] / self.levels[0].shape[1], level.shape[0] / self.levels[0].shape[0]

    def resized(self, width: int, height: int) -> np.ndarray:
        level, _, _ = self._level(self.levels[0].shape[1] / width)
        return cv2.resize(level, (width, height), interpolation=cv2.INTER_AREA)

    def crop(self, x1: int, y1: int, x2: int, y2: int, size: int) -> np.ndarray:
        """Pixels [x1, x2) x [y1, y2) of the original, area-resampled to size x size."""
        level, fx, fy = self._level((x2 - x1) / size)
        region = level[int(y1 * fy):max(int(y2 * fy), int(y1 * fy) + 1), int(x1 * fx):max(int(x2 * fx), int(x1 * fx) + 1)]
        return cv2.resize(region, (size, size), interpolation=cv2.INTER_AREA)


class FaceDetector:
    def __init__(self, params: dict[str, Any], device: torch.device):
        self.device = device
        self.min_face_size = int(params["min_face_size"])
        self.thresholds = [float(t) for t in params["thresholds"]]
        self.min_probability = float(params["min_probability"])
        self.max_side = int(params["detect_max_side"])
        nets = MTCNN(device=device)  # for its three nets, with the weights facenet-pytorch ships
        self.pnet, self.rnet, self.onet = nets.pnet, nets.rnet, nets.onet
        # channels_last: PyTorch's CPU max-pooling is an order of magnitude faster in it, and
        # MTCNN's nets pool after nearly every convolution
        for net in (self.pnet, self.rnet, self.onet):
            net.eval().to(memory_format=torch.channels_last)

    def _tensor(self, images_bgr: np.ndarray) -> torch.Tensor:
        """N x H x W x 3 BGR bytes -> MTCNN's input: RGB, scaled to [-1, 1], channels_last."""
        rgb = np.ascontiguousarray(images_bgr[..., ::-1])
        return (torch.from_numpy(rgb).to(self.device).permute(0, 3, 1, 2).float() - 127.5) * 0.0078125

    @torch.inference_mode()
    def detect(self, images: list[np.ndarray]) -> list[list[Face]]:
        """Faces in each of ``images`` (BGR, all of one size), by the whole MTCNN cascade."""
        mipmaps = [Mipmap(image) for image in images]
        boxes, owners = self._propose(mipmaps)
        stages = ((self.rnet, 24, self.thresholds[1]), (self.onet, 48, self.thresholds[2]))
        return self._cascade(mipmaps, boxes, owners, stages, "full")

    @torch.inference_mode()
    def track(self, image: np.ndarray, previous: list[Face]) -> list[Face]:
        """Faces of ``image`` near the ``previous`` ones: their boxes, moved a little, as proposals."""
        proposals = []
        for face in previous:
            # a square of the face's mean side: squaring to the longer side, as MTCNN's rerec does,
            # would start each sample from a slightly larger box, and the box would grow sample by sample
            cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
            half = (face.box[2] - face.box[0] + face.box[3] - face.box[1]) / 4
            proposals += [(cx - half + dx, cy - half + dy, cx + half + dx, cy + half + dy)
                          for dx, dy in TRACK_SHIFTS * face.size]
        boxes = torch.cat([torch.tensor(proposals, dtype=torch.float32), torch.ones(len(proposals), 1)], dim=1)
        owners = torch.zeros(len(proposals), dtype=torch.long)
        stages = ((self.rnet, 24, self.thresholds[1]), (self.onet, 48, self.thresholds[2]))
        return self._cascade([Mipmap(image)], boxes.to(self.device), owners.to(self.device), stages, "track")[0]

    def _propose(self, images: list[Mipmap]) -> tuple[torch.Tensor, torch.Tensor]:
        """PNet over the image pyramid: candidate boxes (x1, y1, x2, y2, score) and their image."""
        h, w = images[0].levels[0].shape[:2]
        scale = min(12.0 / self.min_face_size, self.max_side / max(h, w))
        scales = []
        while min(h, w) * scale >= 12:
            scales.append(scale)
            scale *= PYRAMID_FACTOR
        found, owners = [], []
        for scale in scales:
            size = (int(w * scale + 1), int(h * scale + 1))
            level = np.stack([im.resized(*size) for im in images])
            regression, probs = self.pnet(self._tensor(level))
            boxes, image_inds = mtcnn_utils.generateBoundingBox(regression, probs[:, 1], scale, self.thresholds[0])
            keep = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.5)
            found.append(boxes[keep])
            owners.append(image_inds[keep])
        boxes = torch.cat(found) if found else torch.zeros(0, 9, device=self.device)
        owners = torch.cat(owners) if owners else torch.zeros(0, dtype=torch.long, device=self.device)
        keep = batched_nms(boxes[:, :4], boxes[:, 4], owners, 0.7)
        boxes, owners = boxes[keep], owners[keep]
        bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        refined = torch.stack([boxes[:, 0] + boxes[:, 5] * bw, boxes[:, 1] + boxes[:, 6] * bh,
                               boxes[:, 2] + boxes[:, 7] * bw, boxes[:, 3] + boxes[:, 8] * bh, boxes[:, 4]], dim=1)
        return mtcnn_utils.rerec(refined), owners

    def _crops(self, images: list[Mipmap], boxes: torch.Tensor, owners: torch.Tensor,
               size: int) -> tuple[torch.Tensor | None, list[int]]:
        """Each box's part of its image, clipped to the image, resized to size x size (area resampling)."""
        crops, usable = [], []
        for k, ((x1, y1, x2, y2), owner) in enumerate(zip(boxes[:, :4].trunc().int().tolist(), owners.tolist())):
            height, width = images[owner].levels[0].shape[:2]
            # facenet-pytorch's pad(): 1-based box corners, clipped to the image
            x, y = max(x1, 1), max(y1, 1)
            ex, ey = min(x2, width), min(y2, height)
            if ey > y - 1 and ex > x - 1:
                crops.append(images[owner].crop(x - 1, y - 1, ex, ey, size))
                usable.append(k)
        return (self._tensor(np.stack(crops)) if crops else None), usable

    def _cascade(self, images: list[Mipmap], boxes: torch.Tensor, owners: torch.Tensor,
                 stages: tuple, how: str) -> list[list[Face]]:
        """Run the refining stages on proposals; the faces of each image that pass them all."""
        points = None
        for i, (net, size, threshold) in enumerate(stages):
            crops, usable = self._crops(images, boxes, owners, size)
            if crops is None:
                return [[] for _ in images]
            out = net(crops)
            score = out[-1][:, 1]
            passed = torch.zeros(len(boxes), dtype=torch.bool, device=self.device)
            passed[usable] = score > threshold
            regression = out[0][score > threshold]
            boxes = torch.cat([boxes[passed, :4], score[score > threshold, None]], dim=1)
            owners = owners[passed]
            if i < len(stages) - 1:
                keep = batched_nms(boxes[:, :4], boxes[:, 4], owners, 0.7)
                boxes, owners = mtcnn_utils.rerec(mtcnn_utils.bbreg(boxes[keep], regression[keep])), owners[keep]
            else:
                marks = out[1][score > threshold]
                bw, bh = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
                points = torch.stack([bw[:, None] * marks[:, :5] + boxes[:, 0:1] - 1,
                                      bh[:, None] * marks[:, 5:] + boxes[:, 1:2] - 1], dim=2)
                boxes = mtcnn_utils.bbreg(boxes, regression)
                keep = mtcnn_utils.batched_nms_numpy(boxes[:, :4], boxes[:, 4], owners, 0.7, "Min")
                boxes, owners, points = boxes[keep], owners[keep], points[keep]
        faces: list[list[Face]] = [[] for _ in images]
        for box, owner, landmarks in zip(boxes.cpu().numpy(), owners.tolist(), points.cpu().numpy()):
            if box[4] >= self.min_probability:
                faces[owner].append(Face(box[:4].astype(np.float64), float(box[4]), landmarks.astype(np.float64), how))
        return [sorted(f, key=lambda face: (face.box[0], face.box[1])) for f in faces]


def detect_and_track(detector: FaceDetector, samples: Iterable[Sample], full_detect_every: int,
                     scene_change: float) -> Iterator[tuple[Sample, list[Face]]]:
    """Each sample of one video with its faces, detecting in full only when tracking cannot be trusted."""
    previous: list[Face] = []
    since_full, key_thumb = 0, None
    for sample in samples:
        thumb = thumbnail(sample.image)
        changed = key_thumb is not None and float(np.abs(thumb - key_thumb).mean()) > scene_change
        faces = None
        if not (key_thumb is None or changed or since_full + 1 >= full_detect_every):
            faces = detector.track(sample.image, previous) if previous else []
            since_full += 1
            if len(faces) < len(previous):  # a face lost: look at the whole frame again, now
                faces = None
        if faces is None:
            faces = detector.detect([sample.image])[0]
            since_full, key_thumb = 0, thumb
        previous = faces
        yield sample, faces


def detect_in_batches(detector: FaceDetector, samples: Iterable[Sample],
                      batch_size: int) -> Iterator[tuple[Sample, list[Face]]]:
    """Each sample with its faces, every sample detected in full, ``batch_size`` frames per MTCNN call."""
    batch: list[Sample] = []
    for sample in samples:
        batch.append(sample)
        if len(batch) == batch_size:
            yield from zip(batch, detector.detect([s.image for s in batch]))
            batch = []
    if batch:
        yield from zip(batch, detector.detect([s.image for s in batch]))


def detect_video(detector: FaceDetector, samples: Iterable[Sample],
                 params: dict[str, Any]) -> Iterator[tuple[Sample, list[Face]]]:
    """Each sample of one video with its faces, on the schedule ``params`` (the faces section) asks for."""
    if params["full_detect_every"] <= 1:
        return detect_in_batches(detector, samples, params["batch_size"])
    return detect_and_track(detector, samples, params["full_detect_every"], params["scene_change"])
