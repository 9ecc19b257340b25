"""What pipeline/common.py gives every stage: the face_id format (``format_face_id`` makes it in the faces stage,
``media_of_face`` reads the media back in push, to delete the tasks of taken-down media) and the metrics writer."""

from __future__ import annotations

import json

import pytest

from pipeline.common import StageError, format_face_id, media_of_face, write_metrics

# media ids as the download stage makes them (source, then the source's own id or a hash), and the odd ones:
# YouTube ids hold '-' and '_' anywhere, even first and last; a photo's name may end in digits
MEDIA_IDS = ["youtube-dQw4w9WgXcQ", "youtube--x_Y-9a", "youtube-_-_-_-__-0", "flickr-53212346187",
             "url-3f2a9c0d1e4b5a6f", "file-00ff00ff00ff00ff", "london_001_03", "photo-2024-05-01-123", "x"]


@pytest.mark.parametrize("media_id", MEDIA_IDS)
@pytest.mark.parametrize("timestamp, index", [(0.0, 0), (0.2, 1), (3599.9994, 12), (86400.0, 3)])
def test_the_media_read_back_is_the_media_the_id_was_made_from(media_id, timestamp, index):
    face = format_face_id(media_id, timestamp, index)
    assert face.startswith(f"{media_id}-")
    assert media_of_face(face) == media_id


def test_the_id_is_stable_and_names_the_sample_in_milliseconds():
    assert format_face_id("youtube-a_b-c", 1.2344, 2) == "youtube-a_b-c-00001234-2"
    assert format_face_id("youtube-a_b-c", 1.2344, 2) == format_face_id("youtube-a_b-c", 1.2344000001, 2)
    # two faces of one frame, and the same face 1 ms later, get different ids
    assert len({format_face_id("m", 1.0, 0), format_face_id("m", 1.0, 1), format_face_id("m", 1.001, 0)}) == 3


@pytest.mark.parametrize("face", ["fer0000001", "youtube-abc", "youtube-abc-12", "youtube-abc-1x-0", "-00000200-0",
                                  "youtube-abc-00000200-"])
def test_an_id_not_in_the_format_is_refused_by_name(face):
    with pytest.raises(StageError, match=f"face_id '{face}' is not <media_id>-<milliseconds>-<index>"):
        media_of_face(face)


def test_metrics_are_written_the_same_whatever_the_order_they_were_made_in(tmp_path):
    one = {"faces": {"media": 3, "faces": 120, "speed": 2.5}, "extra": {"b": [1, 0.25], "a": None}}
    other = {"extra": {"a": None, "b": [1, 0.25]}, "faces": {"speed": 2.5, "faces": 120, "media": 3}}
    write_metrics(one, tmp_path / "one.json")
    write_metrics(other, tmp_path / "other.json")
    text = (tmp_path / "one.json").read_text()
    assert text == (tmp_path / "other.json").read_text()
    assert json.loads(text) == one
    assert text.endswith("}\n") and text.index('"extra"') < text.index('"faces"') and '\n  "extra": {' in text


@pytest.mark.parametrize("bad, key", [(float("nan"), "faces.speed.1"), (float("inf"), "faces.speed.1")])
def test_a_metric_json_cannot_hold_is_refused_by_its_key_and_the_old_file_stays(tmp_path, bad, key):
    path = tmp_path / "faces.json"
    write_metrics({"faces": {"faces": 1}}, path)
    with pytest.raises(StageError, match=f"faces.json: metric {key} is {bad}; metrics must be finite numbers"):
        write_metrics({"faces": {"faces": 2, "speed": [1.0, bad]}}, path)
    with pytest.raises(TypeError):
        write_metrics({"faces": {"faces": object()}}, path)
    assert json.loads(path.read_text()) == {"faces": {"faces": 1}}
    assert [p.name for p in tmp_path.iterdir()] == ["faces.json"]  # no temporary file left beside it
