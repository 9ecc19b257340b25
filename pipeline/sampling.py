"""Sampling video at a fixed rate by timestamp, decoding only the frames that are kept.

Sample ``k`` is due at ``k / rate`` seconds; it takes the first frame whose presentation time is at or
after that instant. This holds for any frame rate (23.976, 29.97, 60 ...) and for variable frame
rate, since it reads each frame's own timestamp rather than counting frames: a 19.7 s video gives 99
samples at 5 per second, each within one frame of its due time. Frames that are not kept are only
grabbed (demuxed and decoded), never converted to pixels, and decoding runs in a thread beside the
face detector.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np

from pipeline.common import get_logger

T = TypeVar("T")
log = get_logger("sampling")

# Timestamps are read in milliseconds; a frame this close before its due time counts as on time.
TOLERANCE_S = 1e-3


@dataclass
class Sample:
    index: int  # k: the sample was due at k / rate seconds
    frame_index: int  # position of the frame in decoding order
    timestamp: float  # the frame's own presentation time, in seconds
    image: np.ndarray  # BGR


class UnreadableMedia(Exception):
    """OpenCV cannot open the file or decode any frame of it."""


class SampleClock:
    """Says, frame by frame in decoding order, whether a frame is kept and as which sample.

    A frame covers every sample falling due up to its own time; a frame after a gap in a
    variable-frame-rate video thus covers several, and is kept once, under the first.
    """

    def __init__(self, rate: float):
        self.period = 1.0 / rate
        self.next_sample = 0

    def take(self, timestamp: float) -> int | None:
        """The sample index this frame is kept as, or None when it is skipped."""
        if timestamp + TOLERANCE_S < self.next_sample * self.period:
            return None
        sample = self.next_sample
        while self.next_sample * self.period <= timestamp + TOLERANCE_S:
            self.next_sample += 1
        return sample


class Timeline:
    """Frame timestamps made to run forward: where a stream's timestamps restart (concatenated files, a
    reset), later frames continue one frame after the last, instead of all falling before the next sample."""

    def __init__(self, frame_time: float, slack: float):
        self.frame_time, self.slack = frame_time, slack
        self.offset, self.last, self.jumped = 0.0, 0.0, False

    def place(self, raw: float) -> float:
        timestamp = raw + self.offset
        self.jumped = timestamp < self.last - self.slack
        if self.jumped:
            self.offset = self.last + self.frame_time - raw
            timestamp = raw + self.offset
        self.last = timestamp
        return timestamp


def read_samples(path: Path | str, rate: float) -> Iterator[Sample]:
    """Decode ``path`` and yield the frames that ``SampleClock`` keeps."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise UnreadableMedia(f"{path}: OpenCV cannot open it")
    try:
        clock, frame_index = SampleClock(rate), -1
        timeline = Timeline(frame_time=1.0 / max(cap.get(cv2.CAP_PROP_FPS), 1.0), slack=clock.period)
        while cap.grab():
            frame_index += 1
            timestamp = timeline.place(cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0)
            if timeline.jumped:
                log.warning(f"{path}: timestamps jump back at frame {frame_index}; continuing from {timestamp:.3f} s")
            sample = clock.take(timestamp)
            if sample is None:
                continue
            ok, image = cap.retrieve()
            if ok:
                yield Sample(sample, frame_index, round(timestamp, 4), image)
        if frame_index < 0:
            raise UnreadableMedia(f"{path}: no frame could be decoded")
    finally:
        cap.release()


def read_photo(path: Path | str) -> Sample:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise UnreadableMedia(f"{path}: OpenCV cannot read it as an image")
    return Sample(0, 0, 0.0, image)


def prefetch(items: Iterator[T], size: int = 8) -> Iterator[T]:
    """Run ``items`` in a thread, ``size`` ahead of the consumer (OpenCV decodes without the GIL)."""
    buffer: queue.Queue = queue.Queue(maxsize=size)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                buffer.put(item)
        except BaseException as e:  # handed to the consumer, raised there
            buffer.put(e)
        buffer.put(done)

    thread = threading.Thread(target=produce, name="decode", daemon=True)
    thread.start()
    try:
        while (item := buffer.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full buffer
            try:
                buffer.get_nowait()
            except queue.Empty:
                thread.join(0.01)
