"""The crop helpers of pipeline/crops.py: cutting a face out of a frame at its edge, and, on real pictures, the
64-bit dHash that the faces stage and the fer2013 stage both use to find near duplicates."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from pipeline.crops import crop_face, dhash
from tests.conftest import SAMPLE


@dataclass
class Box:
    box: np.ndarray


def grey(image: np.ndarray, size: int = 48) -> np.ndarray:
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def first_frame(path) -> np.ndarray:
    capture = cv2.VideoCapture(str(path))
    ok, frame = capture.read()
    capture.release()
    assert ok, path
    return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)


@pytest.fixture(scope="module")
def pictures() -> np.ndarray:
    """Six different pictures: three photos and the first frame of each sample video, 96x96 grey."""
    photos = [cv2.imread(str(SAMPLE / "photos" / name), cv2.IMREAD_GRAYSCALE)
              for name in ("astronaut.jpg", "london_001_03.jpg", "london_042_08.jpg")]
    frames = [first_frame(path) for path in sorted((SAMPLE / "videos").glob("*.mp4"))]
    return np.stack([grey(image, 96) for image in photos + frames])


def distance(a: np.uint64, b: np.uint64) -> int:
    return int(np.bitwise_count(a ^ b))


def test_dhash_bits_say_whether_a_cell_is_brighter_than_its_right_neighbour():
    brighter_rightwards = np.tile(np.arange(0, 240, 5, dtype=np.uint8), (48, 1))
    hashes = dhash(np.stack([brighter_rightwards, brighter_rightwards[:, ::-1]]))
    assert hashes.dtype == np.uint64
    assert hashes.tolist() == [0xFFFFFFFFFFFFFFFF, 0]
    one_cell = np.zeros((8, 9), dtype=np.uint8)
    one_cell[0, 1] = 255  # only the first row's first cell has a brighter right neighbour: the top bit
    assert dhash(one_cell[np.newaxis]).tolist() == [1 << 63]


def test_near_duplicates_of_a_picture_are_a_few_bits_from_it(pictures):
    for picture in pictures:
        ok, jpeg = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, 30])
        variants = [
            cv2.imdecode(jpeg, cv2.IMREAD_GRAYSCALE),                              # re-encoded
            np.clip(picture * 0.8 + 20, 0, 255).astype(np.uint8),                  # re-toned
            np.roll(picture, 1, axis=1),                                           # moved by a pixel
        ]
        original, *others = dhash(np.stack([picture, *variants]))
        assert [distance(original, other) <= 6 for other in others] == [True] * 3
        # the hash does not depend on the resolution: the same picture at twice the size
        assert distance(original, dhash(grey(picture, 192)[np.newaxis])[0]) <= 2


def test_different_pictures_are_far_apart(pictures):
    hashes = dhash(pictures)
    pairs = np.triu_indices(len(hashes), 1)
    assert np.bitwise_count(hashes[pairs[0]] ^ hashes[pairs[1]]).min() > 12


def test_each_image_of_a_stack_is_hashed_alone(pictures):
    assert dhash(pictures).tolist() == [int(dhash(picture[np.newaxis])[0]) for picture in pictures]
    assert dhash(pictures[:0]).shape == (0,)


@pytest.mark.parametrize("channels", [(), (3,)])
def test_a_face_at_the_edge_is_padded_black_in_colour_and_grey(channels):
    white = np.full((100, 100, *channels), 255, dtype=np.uint8)
    at_the_edge = crop_face(white, Box(np.array([-50.0, 0.0, 50.0, 100.0])), margin=0, size=32, square=True)
    assert at_the_edge.shape == (32, 32, *channels)
    assert (at_the_edge[:, :15] == 0).all() and (at_the_edge[:, 17:] == 255).all()
    outside = crop_face(white, Box(np.array([200.0, 200.0, 240.0, 240.0])), margin=0.1, size=32, square=True)
    assert outside.shape == (32, 32, *channels) and (outside == 0).all()
