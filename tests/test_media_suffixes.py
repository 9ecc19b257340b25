"""The one list of photo and video suffixes (pipeline.media_store): a file written under each suffix is probed
as what the suffix names."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from pipeline.media_store import PHOTO_EXTENSIONS, VIDEO_EXTENSIONS, probe

# a codec that OpenCV's FFmpeg writes into each container (mp4v where the container takes it)
CODEC = {".webm": "VP90", ".avi": "MJPG", ".mpg": "PIM1", ".mpeg": "PIM1", ".flv": "FLV1"}


@pytest.mark.parametrize("suffix", sorted(VIDEO_EXTENSIONS))
def test_each_video_suffix_is_a_video_opencv_reads(suffix, tmp_path):
    path = tmp_path / f"clip{suffix}"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*CODEC.get(suffix, "mp4v")), 25, (64, 48))
    assert writer.isOpened(), f"OpenCV writes no {suffix}"
    for i in range(10):
        writer.write(np.full((48, 64, 3), 20 * i, dtype=np.uint8))
    writer.release()
    found = probe(path)
    assert (found.media_type, found.width, found.height, found.fps) == ("video", 64, 48, 25.0)


@pytest.mark.parametrize("suffix", sorted(PHOTO_EXTENSIONS))
def test_each_photo_suffix_is_a_photo(suffix, tmp_path):
    path = tmp_path / f"photo{suffix}"
    Image.fromarray(np.full((48, 64, 3), 128, dtype=np.uint8)).save(path)
    found = probe(path)
    assert (found.media_type, found.width, found.height) == ("photo", 64, 48)


def test_no_suffix_names_both():
    assert not PHOTO_EXTENSIONS & VIDEO_EXTENSIONS
