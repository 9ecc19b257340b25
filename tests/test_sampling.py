"""Sampling by timestamp: every common frame rate, variable frame rate, and the real 19.7 s video."""

import cv2
import numpy as np
import pytest

from pipeline.sampling import SampleClock, Timeline, UnreadableMedia, prefetch, read_photo, read_samples
from tests.conftest import SAMPLE


def write_video(path, fps, seconds, size=(64, 48)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for i in range(int(round(seconds * fps))):
        writer.write(np.full((size[1], size[0], 3), i % 250, np.uint8))
    writer.release()


@pytest.mark.parametrize("fps", [23.976, 25, 29.97, 30, 60])
def test_every_frame_rate_gives_samples_200_ms_apart(tmp_path, fps):
    path = tmp_path / f"clip_{fps}.mp4"
    write_video(path, fps, 3.0)
    samples = list(read_samples(path, 5))
    assert [s.index for s in samples] == list(range(15))
    timestamps = np.array([s.timestamp for s in samples])
    # each sample is the first frame at or after its due time: late by less than one frame
    lateness = timestamps - np.arange(15) * 0.2
    assert (lateness > -1e-3).all() and (lateness < 1 / fps).all()
    assert all(s.image.shape == (48, 64, 3) for s in samples)


def test_the_pexels_video_gives_99_samples():
    samples = list(read_samples(SAMPLE / "videos" / "WolfgangLanger_Pexels.mp4", 5))
    assert len(samples) == 99
    gaps = np.diff([s.timestamp for s in samples])
    frame = 1 / 23.976
    assert (np.abs(gaps - 0.2) <= frame).all()
    # frames not kept are skipped: every 4th to 5th frame of 23.976 fps is kept
    assert samples[1].frame_index == 5 and samples[-1].frame_index == 470


def test_variable_frame_rate():
    # frames every 33 ms, then a 0.5 s freeze, then every 50 ms
    timestamps = [i * 0.033 for i in range(10)] + [0.297 + 0.5 + i * 0.05 for i in range(10)]
    clock = SampleClock(5)
    kept = [(i, k) for i, t in enumerate(timestamps) if (k := clock.take(t)) is not None]
    kept_times = [timestamps[i] for i, _ in kept]
    samples = [k for _, k in kept]
    # the first frame after the freeze (0.797 s) covers the samples due at 0.4 and 0.6 s, kept once
    assert samples == [0, 1, 2, 4, 5, 6]
    assert kept_times == pytest.approx([0.0, 0.231, 0.797, 0.847, 1.047, 1.247])
    for k, t in zip(samples, kept_times):
        assert t >= k * 0.2 - 1e-3


def test_clock_rounding_does_not_drop_a_sample():
    clock = SampleClock(5)
    # millisecond timestamps land a hair before the due time
    assert [clock.take(t) for t in (0.0, 0.19995, 0.4, 0.6)] == [0, 1, 2, 3]


def test_unreadable_files_are_refused(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(UnreadableMedia):
        list(read_samples(bad, 5))
    with pytest.raises(UnreadableMedia):
        read_photo(bad)


def test_prefetch_passes_items_and_errors_through():
    assert list(prefetch(iter(range(50)), size=3)) == list(range(50))

    def broken():
        yield 1
        raise UnreadableMedia("mid-way")

    with pytest.raises(UnreadableMedia, match="mid-way"):
        list(prefetch(broken()))


def test_timestamps_that_restart_keep_running_forward():
    # two 1 s streams glued together: the second restarts at 0
    raw = [i * 0.1 for i in range(10)] + [i * 0.1 for i in range(10)]
    timeline = Timeline(frame_time=0.1, slack=0.2)
    placed = [timeline.place(t) for t in raw]
    assert placed == pytest.approx([i * 0.1 for i in range(20)])
    clock = SampleClock(5)
    assert [k for t in placed if (k := clock.take(t)) is not None] == list(range(10))
