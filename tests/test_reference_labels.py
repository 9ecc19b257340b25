"""The sample's reference labels: one reader for the simulated crowd (push) and the FER2013 stand-in."""

from __future__ import annotations

import re

import pytest

from annotation.reference_labels import label_at, read_reference_labels
from pipeline.common import StageError
from tests.conftest import REPO

HEADER = "# a comment\npath,start,end,label\n"


def test_the_samples_labels_by_path_or_url_and_time():
    labels = read_reference_labels(REPO / "sample" / "reference_labels.csv")
    video = "videos/WolfgangLanger_Pexels.mp4"
    assert [label_at(labels, video, t) for t in (0.0, 8.99, 9.0, 11.49, 11.5, 19.0)] == [
        "sad", "sad", "neutral", "neutral", "happy", "happy"]
    # push finds a face's media by the URL it was downloaded from
    assert label_at(labels, f"http://127.0.0.1:8765/{video}", 10.0) == "neutral"
    assert label_at(labels, "photos/astronaut.jpg", None) == "happy"
    assert label_at(labels, "http://127.0.0.1:8765/photos/astronaut.jpg", 0.0) == "happy"
    # a path is matched whole: another file whose name ends the same is not it
    assert label_at(labels, "http://127.0.0.1:8765/photos/my_astronaut.jpg", 0.0) is None
    assert label_at(labels, video, 100.0) is None


@pytest.mark.parametrize(("rows", "problem"), [
    ("videos/a.mp4,0,9,sadness\n", "line 3: label 'sadness' is not one of angry, disgust,"),
    ("photos/a.jpg,,,happy\nvideos/a.mp4,9,,sad\n", "line 4: a video's range needs a start before its end"),
    ("videos/a.mp4,9,3,sad\n", "line 3: a video's range needs a start before its end"),
])
def test_a_bad_row_is_refused_naming_its_line(tmp_path, rows, problem):
    path = tmp_path / "reference_labels.csv"
    path.write_text(HEADER + rows)
    with pytest.raises(StageError, match=re.escape(f"{path}: {problem}")):
        read_reference_labels(path)


def test_a_missing_column_or_file_is_refused(tmp_path):
    path = tmp_path / "reference_labels.csv"
    path.write_text("path,label\nphotos/a.jpg,happy\n")
    with pytest.raises(StageError, match=re.escape(f"{path}: line 1: missing column(s) start, end")):
        read_reference_labels(path)
    with pytest.raises(StageError, match=re.escape(f"{tmp_path / 'nowhere.csv'}: the reference labels do not")):
        read_reference_labels(tmp_path / "nowhere.csv")
