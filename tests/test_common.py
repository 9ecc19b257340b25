"""The face_id format: ``pipeline.common.format_face_id`` makes it (the faces stage), ``media_of_face`` reads the
media back (push, to delete the tasks of taken-down media)."""

from __future__ import annotations

import pytest

from pipeline.common import StageError, format_face_id, media_of_face

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
