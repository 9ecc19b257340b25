"""Bad inputs at the edges of the annotation and faces stages: each is a clear error or strict output."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from annotation import server
from annotation.pull import annotation_metrics
from pipeline import faces
from pipeline.common import StageError
from pipeline.emotions import VOTE_COLUMNS


def test_metrics_without_enough_votes_for_agreement_are_strict_json_with_null():
    """One vote per face: Fleiss' kappa and Krippendorff's alpha are undefined, not NaN."""
    votes = pd.DataFrame([[1] + [0] * (len(VOTE_COLUMNS) - 1)] * 3, columns=VOTE_COLUMNS)
    votes["n_annotators"] = 1
    labels = pd.DataFrame({"face_id": ["a", "b", "c"], "label": [None] * 3})
    long = pd.DataFrame({"face_id": ["a", "b", "c"], "annotator": ["x"] * 3, "label": ["neutral"] * 3})
    metrics = annotation_metrics(votes, labels, long, {"cancelled": 0}, votes_per_task=10, simulated=False)
    assert metrics["fleiss_kappa"] is None and metrics["krippendorff_alpha"] is None
    assert json.loads(json.dumps(metrics, allow_nan=False))["faces"] == 3


@pytest.mark.parametrize("action", [server.running, server.stop])
def test_a_truncated_server_json_is_named_not_a_traceback(tmp_path, action):
    (tmp_path / server.STATE).write_text('{"url": "http://127.0.0.1:8080", "pi')
    with pytest.raises(StageError, match=rf"{tmp_path / server.STATE}: not readable as the state of a Label Studio "
                                         r"server \(truncated\?\)"):
        action(tmp_path)
    assert (tmp_path / server.STATE).exists()  # kept, for whoever looks into it


def test_a_media_table_without_a_column_is_refused_before_crops_are_removed(tmp_path):
    table = tmp_path / "media.csv"
    pd.DataFrame({"media_id": ["url-1"], "path": ["x.jpg"]}).to_csv(table, index=False)
    crops = tmp_path / "faces"
    (crops / "url-1").mkdir(parents=True)
    with pytest.raises(StageError, match=rf"{table}: has no media_type column \(it has media_id, path\)"):
        faces.main(["--media-table", str(table), "--crops", str(crops), "--table", str(tmp_path / "f.csv"),
                    "--per-media", str(tmp_path / "p.csv"), "--metrics", str(tmp_path / "m.json")])
    assert (crops / "url-1").is_dir()


def test_push_and_pull_name_a_truncated_server_json(tmp_path, monkeypatch):
    from annotation import client

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    state = tmp_path / client.LOCAL_STATE
    state.parent.mkdir()
    state.write_text('{"url": "http://127.0.0.1:8080", "tok')
    with pytest.raises(StageError, match=r"server.json: not readable as the state of a Label Studio server \(truncated\?\); "):
        client.connection()
