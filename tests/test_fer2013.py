"""The fer2013 stage: reading (CSV, .gz, .xz, image folders), refusing bad input, each cleaning rule, the output contract.

Every FER2013-like file here is made up in ``tmp_path`` from synthetic images; FER2013 itself is never
copied into the repository. The last tests read the real FER2013 from ``../shared/data`` and skip when
it is absent.
"""

from __future__ import annotations

import copy
import gzip
import json
import lzma
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from datasets import fer2013 as stage
from datasets.fer2013_clean import ImageFaceCheck, identical_groups, keepers, near_pairs
from datasets.fer2013_read import Fer2013, read_source
from pipeline.common import StageError
from pipeline.emotions import EMOTIONS, VOTE_COLUMNS
from tests.conftest import REPO

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FER2013_CSV = SHARED_DATA / "fer2013" / "fer2013.csv.xz"
FERPLUS_CSV = SHARED_DATA / "ferplus" / "fer2013new.csv"

PARAMS = {
    "constant": {"enabled": True, "max_std": 1.0},
    "duplicates": {"enabled": True, "drop_conflicting": True},
    "near_duplicates": {"enabled": True, "max_bits": 6, "min_correlation": 0.9},
    "not_a_face": {"ferplus": True, "ferplus_min_share": 0.5, "image_check": "auto", "min_mode_share": 0.3,
                   "cascades": ["haarcascade_frontalface_default.xml", "haarcascade_frontalface_alt2.xml"]},
    "ferplus_relabel": {"enabled": False, "contempt": "drop"},
    "folder_test_usage": "PrivateTest",
}


def params(**changes: dict) -> dict:
    """PARAMS with some rules changed: ``params(constant={"enabled": False})``."""
    out = copy.deepcopy(PARAMS)
    for rule, values in changes.items():
        out[rule].update(values)
    return out


def smooth(seed: int) -> np.ndarray:
    """A 48x48 picture with structure at several scales (blurred noise), different for each seed."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(48, 48)).astype(np.float32)
    blurred = cv2.GaussianBlur(noise, (0, 0), 3) + 0.3 * cv2.GaussianBlur(noise, (0, 0), 1)
    blurred = (blurred - blurred.min()) / (blurred.max() - blurred.min())
    return (30 + 190 * blurred).astype(np.uint8)


def pixels(image: np.ndarray) -> str:
    return " ".join(map(str, image.ravel().tolist()))


def write_csv(path: Path, rows: list[tuple], header: str = "emotion,pixels,Usage") -> Path:
    """A FER2013-format CSV; each row (label, image or pixel text, usage)."""
    lines = [header] + [f"{label},{image if isinstance(image, str) else pixels(image)},{usage}"
                        for label, image, usage in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def good_rows(n: int = 6) -> list[tuple]:
    usages = ["Training", "Training", "Training", "PublicTest", "PrivateTest", "PrivateTest"]
    return [(i % 7, smooth(i), usages[i % len(usages)]) for i in range(n)]


def data_of(rows: list[tuple]) -> Fer2013:
    return Fer2013(np.stack([r[1] for r in rows]), np.array([r[0] for r in rows]), np.array([r[2] for r in rows]))


def run(tmp_path: Path, source: Path, ferplus: Path | None = None, **changes) -> dict:
    out = tmp_path / "out"
    argv = ["--source", str(source), "--out-dir", str(out), "--metrics", str(tmp_path / "metrics.json")]
    if ferplus is not None:
        argv += ["--ferplus", str(ferplus)]
    assert stage.main(argv, params=params(**changes)) == 0
    tables = {name: pd.read_csv(out / f"{name}.csv") for name in ("manifest", "private_test", "removed", "duplicates")}
    return {**tables, "images": np.load(out / "images.npy"),
            "metrics": json.loads((out / "report.json").read_text()),
            "headline": json.loads((tmp_path / "metrics.json").read_text())["fer2013"]}


# --- reading -----------------------------------------------------------------------------------------


def test_csv_gz_and_xz_read_the_same(tmp_path):
    plain = write_csv(tmp_path / "fer.csv", good_rows())
    (tmp_path / "fer.csv.gz").write_bytes(gzip.compress(plain.read_bytes()))
    (tmp_path / "fer.csv.xz").write_bytes(lzma.compress(plain.read_bytes()))
    read = [read_source(tmp_path / name) for name in ("fer.csv", "fer.csv.gz", "fer.csv.xz")]
    for other in read[1:]:
        assert np.array_equal(other.images, read[0].images)
        assert np.array_equal(other.labels, read[0].labels)
        assert list(other.usages) == list(read[0].usages)
    assert np.array_equal(read[0].images, np.stack([r[1] for r in good_rows()]))


def test_irregular_whitespace_is_read(tmp_path):
    image = smooth(1)
    text = "  " + pixels(image).replace(" ", "  ", 5) + " "
    data = read_source(write_csv(tmp_path / "fer.csv", [(3, text, "Training")]))
    assert np.array_equal(data.images[0], image)


BAD_ROWS = {
    "wrong pixel count": ((0, " ".join(["1"] * 2303), "Training"), "2303 pixels, expected 2304"),
    "label outside 0-6": ((7, smooth(9), "Training"), "emotion '7' is not a label 0-6"),
    "label not a number": (("x", smooth(9), "Training"), "emotion 'x' is not a label 0-6"),
    "unknown Usage": ((0, smooth(9), "Validation"), "unknown Usage 'Validation'"),
    "non-numeric pixel": ((0, "12 abc " + " ".join(["1"] * 2302), "Training"), "pixel 2 is 'abc'"),
    "negative pixel": ((0, "12 -3 " + " ".join(["1"] * 2302), "Training"), "pixel 2 is '-3'"),
    "pixel over 255": ((0, "12 256 " + " ".join(["1"] * 2302), "Training"), "pixel 2 is 256"),
    "empty pixels": ((0, "", "Training"), "0 pixels"),
}


@pytest.mark.parametrize("case", BAD_ROWS)
def test_bad_rows_are_refused_with_file_line_and_reason(tmp_path, case):
    bad_row, reason = BAD_ROWS[case]
    rows = good_rows(3)
    rows.insert(2, bad_row)  # the third data row: line 4
    path = write_csv(tmp_path / "fer.csv", rows)
    with pytest.raises(StageError) as error:
        read_source(path)
    message = str(error.value)
    assert str(path) in message and "line 4" in message and reason in message, message


def test_missing_columns_are_refused(tmp_path):
    path = tmp_path / "fer.csv"
    path.write_text("emotion,pixels\n0," + pixels(smooth(1)) + "\n")
    with pytest.raises(StageError, match=r"fer\.csv: line 1: missing column\(s\) Usage"):
        read_source(path)


def test_damaged_compressed_file_is_refused(tmp_path):
    path = tmp_path / "fer.csv.xz"
    path.write_bytes(lzma.compress(b"emotion,pixels,Usage\n" * 100)[:40])
    with pytest.raises(StageError, match="fer.csv.xz: compressed data is damaged"):
        read_source(path)


def make_folders(root: Path) -> dict[str, np.ndarray]:
    """Kaggle's layout, PNG so pixels survive: name -> image."""
    files = {"train/happy/Training_2.png": smooth(1), "train/angry/Training_9.png": smooth(2),
             "test/sad/PublicTest_4.png": smooth(3), "test/sad/PrivateTest_1.png": smooth(4),
             "test/neutral/plain.png": smooth(5)}
    for name, image in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / name), image)
    return files


def test_folder_layout_is_read_with_usage_from_names_then_folders(tmp_path):
    files = make_folders(tmp_path / "fer")
    data = read_source(tmp_path / "fer")
    order = ["train/angry/Training_9.png", "train/happy/Training_2.png", "test/sad/PrivateTest_1.png",
             "test/sad/PublicTest_4.png", "test/neutral/plain.png"]
    assert np.array_equal(data.images, np.stack([files[name] for name in order]))
    assert [EMOTIONS[k] for k in data.labels] == ["angry", "happy", "sad", "sad", "neutral"]
    assert list(data.usages) == ["Training", "Training", "PrivateTest", "PublicTest", "PrivateTest"]
    assert list(read_source(tmp_path / "fer", test_usage="PublicTest").usages)[-1] == "PublicTest"


def test_cleaning_the_folder_layout_says_it_differs_from_the_csv(tmp_path, caplog):
    make_folders(tmp_path / "fer")
    with caplog.at_level("WARNING"):
        kept = run(tmp_path, tmp_path / "fer")["manifest"]
    assert len(kept) >= 1
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("JPEG folders" in m and "differs slightly from fer2013.csv" in m for m in warned), warned
    caplog.clear()
    with caplog.at_level("WARNING"):
        run(tmp_path, write_csv(tmp_path / "fer2013.csv", good_rows()))
    assert not any("JPEG folders" in r.getMessage() for r in caplog.records)


def test_unreadable_image_in_folder_layout_is_refused(tmp_path):
    make_folders(tmp_path / "fer")
    bad = tmp_path / "fer" / "train" / "fear" / "Training_7.jpg"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(StageError, match=r"Training_7\.jpg: image \d+ of the folder layout: OpenCV cannot read it"):
        read_source(tmp_path / "fer")


def test_ferplus_with_the_folder_layout_is_refused(tmp_path):
    make_folders(tmp_path / "fer")
    ferplus = votes_file(tmp_path / "fer2013new.csv", [{"neutral": 10}] * 5, ["Training"] * 5)
    with pytest.raises(StageError, match="FER\\+ joins fer2013.csv by row position"):
        run(tmp_path, tmp_path / "fer", ferplus)


def test_wrong_size_image_and_unknown_class_in_folder_layout_are_refused(tmp_path):
    make_folders(tmp_path / "fer")
    cv2.imwrite(str(tmp_path / "fer" / "train" / "happy" / "big.png"), np.zeros((64, 64), np.uint8))
    with pytest.raises(StageError, match=r"big\.png: .*64x64 pixels, expected 48x48"):
        read_source(tmp_path / "fer")
    (tmp_path / "fer" / "train" / "happy" / "big.png").unlink()
    (tmp_path / "fer" / "train" / "contempt").mkdir()
    with pytest.raises(StageError, match="contempt: not a class folder"):
        read_source(tmp_path / "fer")


# --- cleaning rules ----------------------------------------------------------------------------------


def test_constant_images_are_removed(tmp_path):
    rows = good_rows(3) + [(6, np.full((48, 48), 128, np.uint8), "Training"),
                           (6, (128 + (np.indices((48, 48)).sum(0) % 2)).astype(np.uint8), "PublicTest")]
    result = stage.clean(data_of(rows), params())
    removed = result["removed"].set_index("row_id")
    assert list(removed.index) == [3, 4] and set(removed.reason) == {"constant"}
    assert result["metrics"]["constant_images"] == 1  # exactly one grey level; the other is near-constant
    off = params(constant={"enabled": False}, not_a_face={"image_check": False})  # blank is no face either
    assert stage.clean(data_of(rows), off)["removed"].empty


def test_exact_duplicates_keep_one_within_a_split_and_the_test_copy_across(tmp_path):
    a, b = smooth(10), smooth(11)
    rows = [(3, a, "Training"), (3, a, "Training"), (4, b, "Training"), (4, b, "PublicTest"), (4, b, "PrivateTest"),
            (5, smooth(12), "Training")]
    result = run(tmp_path, write_csv(tmp_path / "fer.csv", rows))
    assert list(result["manifest"].row_id) == [0, 4, 5]
    removed = result["removed"].set_index("row_id")
    assert removed.reason.to_dict() == {1: "duplicate", 2: "duplicate", 3: "duplicate"}
    assert removed.detail[2] == "copy of row 4"
    duplicates = result["duplicates"]
    assert list(duplicates.columns) == ["group", "row_id", "usage", "label", "kept", "conflicting_labels"]
    assert duplicates.set_index("row_id").kept.to_dict() == {0: True, 1: False, 2: False, 3: False, 4: True}
    assert not duplicates.conflicting_labels.any()
    metrics = result["metrics"]
    assert (metrics["duplicate_groups"], metrics["duplicate_groups_across_usages"]) == (2, 1)


def test_conflicting_labels_are_flagged_and_dropped_by_param(tmp_path):
    a = smooth(20)
    rows = [(3, a, "Training"), (5, a, "PrivateTest"), (1, smooth(21), "Training")]
    dropped = stage.clean(data_of(rows), params())
    assert list(dropped["manifest"].row_id) == [2]
    assert set(dropped["removed"].reason) == {"conflicting_labels"}
    assert dropped["duplicates"].conflicting_labels.all()
    assert dropped["metrics"]["duplicate_groups_conflicting_labels"] == 1
    flagged = stage.clean(data_of(rows), params(duplicates={"drop_conflicting": False}))
    assert list(flagged["manifest"].row_id) == [1, 2]  # the test copy, with its own label
    assert flagged["manifest"].set_index("row_id").label[1] == 5
    assert flagged["duplicates"].conflicting_labels.all()


def near_copy(image: np.ndarray, seed: int) -> np.ndarray:
    """The same picture re-toned and with a little noise, as a re-encoded copy would be."""
    noise = np.random.default_rng(seed).integers(-2, 3, image.shape)
    return np.clip(image.astype(int) * 0.95 + 8 + noise, 0, 255).astype(np.uint8)


def test_near_duplicates_keep_the_test_copy(tmp_path):
    a, b = smooth(30), smooth(31)
    rows = [(3, a, "Training"), (3, near_copy(a, 1), "PrivateTest"), (4, b, "Training"), (4, near_copy(b, 2), "Training"),
            (5, smooth(32), "PublicTest")]
    result = stage.clean(data_of(rows), params())
    assert list(result["manifest"].row_id) == [1, 2, 4]
    removed = result["removed"].set_index("row_id")
    assert removed.reason.to_dict() == {0: "near_duplicate", 3: "near_duplicate"}
    assert removed.detail[0].startswith("near-duplicate group of row 1")
    assert result["metrics"]["near_duplicate_groups"] == 2
    assert len(stage.clean(data_of(rows), params(near_duplicates={"enabled": False}))["manifest"]) == 5


def test_different_pictures_with_close_hashes_are_not_near_duplicates():
    a = smooth(40)
    mirrored = np.ascontiguousarray(a[:, ::-1])
    b = np.clip(a.astype(int) + np.random.default_rng(0).integers(-60, 61, a.shape), 0, 255).astype(np.uint8)
    rows = [(0, a, "Training"), (0, mirrored, "Training"), (0, b, "Training")]
    result = stage.clean(data_of(rows), params(near_duplicates={"max_bits": 64, "min_correlation": 0.95}))
    assert len(result["manifest"]) == 3  # all hashes "close" at 64 bits, none correlated enough


def test_near_pairs_finds_exactly_the_brute_force_pairs():
    rng = np.random.default_rng(0)
    centres = rng.integers(0, 2**63, 40, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, 40, dtype=np.uint64)
    flips = rng.random((300, 64)) < 0.04  # variants a few bits from their centre
    hashes = centres[rng.integers(0, 40, 300)] ^ np.packbits(flips, axis=1).view(">u8").ravel().astype(np.uint64)
    distance = np.bitwise_count(hashes[:, None] ^ hashes[None, :])
    for max_bits in (0, 1, 3, 6):
        i, j = near_pairs(hashes, max_bits)
        expected = {(a, b) for a, b in zip(*np.nonzero(distance <= max_bits)) if a < b}
        assert set(zip(i.tolist(), j.tolist())) == expected and len(i) == len(expected)


def test_group_helpers():
    images = np.stack([smooth(1), smooth(2), smooth(1), smooth(3), smooth(2), smooth(1)])
    groups = identical_groups(images)
    assert list(groups) == [0, 1, 0, -1, 1, 0]
    usages = np.array(["Training", "PublicTest", "PrivateTest", "Training", "Training", "PrivateTest"])
    assert list(keepers(groups, usages)) == [2, 1, 2, 3, 1, 2]


def votes_file(path: Path, rows: list[dict], usages: list[str]) -> Path:
    """A fer2013new.csv: one dict of votes per row (missing columns are 0)."""
    table = pd.DataFrame([{c: row.get(c, 0) for c in VOTE_COLUMNS} for row in rows])
    table.insert(0, "Image name", [f"fer{i:07d}.png" for i in range(len(rows))])
    table.insert(0, "Usage", usages)
    table.to_csv(path, index=False)
    return path


def ferplus_case(tmp_path: Path) -> tuple[Path, Path]:
    rows = [(0, smooth(50 + i), "Training") for i in range(6)] + [(0, smooth(60), "PrivateTest")]
    votes = [
        {"NF": 10},                               # 0: not a face
        {"NF": 4, "happiness": 6},                # 1: a face, FER+ says happy
        {"contempt": 8, "disgust": 2},            # 2: contempt
        {"unknown": 7, "sadness": 3},             # 3: unknown
        {"neutral": 4, "anger": 3, "fear": 3},    # 4: no majority
        {"anger": 10},                            # 5: angry by both
        {"surprise": 9, "NF": 1},                 # 6: test row, FER+ says surprise
    ]
    source = write_csv(tmp_path / "fer.csv", rows)
    return source, votes_file(tmp_path / "fer2013new.csv", votes, [r[2] for r in rows])


def test_ferplus_not_a_face_votes_remove_rows(tmp_path):
    source, ferplus = ferplus_case(tmp_path)
    result = run(tmp_path, source, ferplus)
    removed = result["removed"].set_index("row_id")
    assert removed.reason.to_dict() == {0: "not_a_face"}
    assert removed.detail[0] == "FER+ NF votes 10 of 10"
    assert set(result["manifest"].label_source) == {"fer2013"}
    assert "image_face_check" not in result["metrics"]  # auto: no image check when FER+ votes are given


def test_ferplus_relabelling_with_contempt_dropped_or_merged(tmp_path):
    source, ferplus = ferplus_case(tmp_path)
    result = run(tmp_path, source, ferplus, ferplus_relabel={"enabled": True})
    manifest = result["manifest"].set_index("row_id")
    assert manifest.emotion.to_dict() == {1: "happy", 5: "angry", 6: "surprise"}
    assert set(manifest.label_source) == {"ferplus"}
    assert result["removed"].set_index("row_id").reason.to_dict() == {
        0: "not_a_face", 2: "contempt", 3: "ferplus_unknown", 4: "ferplus_no_majority"}
    assert result["private_test"].emotion.tolist() == ["angry"]  # the untouched original label

    merged = run(tmp_path, source, ferplus, ferplus_relabel={"enabled": True, "contempt": "disgust"})
    assert merged["manifest"].set_index("row_id").emotion[2] == "disgust"


def test_ferplus_file_must_match_fer2013(tmp_path):
    source, ferplus = ferplus_case(tmp_path)
    short = tmp_path / "short.csv"
    pd.read_csv(ferplus).iloc[:-1].to_csv(short, index=False)
    with pytest.raises(StageError, match="short.csv: 6 rows, but FER2013 has 7"):
        run(tmp_path, source, short)
    swapped = tmp_path / "swapped.csv"
    pd.read_csv(ferplus).assign(Usage="Training").to_csv(swapped, index=False)
    with pytest.raises(StageError, match="swapped.csv: line 8: Usage 'Training' where FER2013's row 6 is 'PrivateTest';"):
        run(tmp_path, source, swapped)


def test_image_face_check_runs_and_flags_a_drawing_on_a_flat_background():
    drawing = np.full((48, 48), 255, np.uint8)
    cv2.putText(drawing, "FER", (2, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, 0, 2)
    images = np.stack([smooth(1), drawing, np.full((48, 48), 90, np.uint8)])
    check = ImageFaceCheck(PARAMS["not_a_face"])
    flagged, shares = check.not_a_face(images)
    assert flagged.dtype == bool and flagged.shape == (3,)
    assert list(flagged) == [False, True, True]  # the smooth picture is below the mode-share bar
    assert shares[1] > 0.5


def test_image_face_check_is_on_without_ferplus_votes(tmp_path):
    rows = good_rows(3)
    result = stage.clean(data_of(rows), params())
    assert result["metrics"]["image_face_check"]["flagged"] == 0
    off = stage.clean(data_of(rows), params(not_a_face={"image_check": False}))
    assert "image_face_check" not in off["metrics"]


# --- the output contract -----------------------------------------------------------------------------


def test_outputs_follow_the_contract(tmp_path):
    a = smooth(70)
    rows = good_rows(6) + [(2, a, "PrivateTest"), (2, a, "Training"), (6, np.zeros((48, 48), np.uint8), "PrivateTest")]
    result = run(tmp_path, write_csv(tmp_path / "fer.csv", rows))
    images = result["images"]
    assert images.dtype == np.uint8 and images.shape == (len(rows), 48, 48)
    for row_id, (_, image, _) in enumerate(rows):
        assert np.array_equal(images[row_id], image)
    manifest = result["manifest"]
    assert list(manifest.columns) == ["row_id", "usage", "split", "label", "emotion", "label_source"]
    assert (manifest.split == manifest.usage.map({"Training": "train", "PublicTest": "val", "PrivateTest": "test"})).all()
    assert (manifest.emotion == [EMOTIONS[k] for k in manifest.label]).all()
    private = result["private_test"]
    assert list(private.columns) == ["row_id", "label", "emotion"]
    assert private.row_id.tolist() == [i for i, r in enumerate(rows) if r[2] == "PrivateTest"]  # blank one too
    assert private.label.tolist() == [r[0] for r in rows if r[2] == "PrivateTest"]
    removed = result["removed"]
    assert list(removed.columns) == ["row_id", "usage", "label", "reason", "detail"]
    assert set(manifest.row_id).isdisjoint(removed.row_id)
    assert sorted([*manifest.row_id, *removed.row_id]) == list(range(len(rows)))
    metrics = result["metrics"]
    assert metrics["rows_read"] == len(rows)
    assert metrics["kept"] == {"train": 3, "val": 1, "test": 3, "total": 7}
    assert metrics["removed"] == {"constant": 1, "duplicate": 1}
    assert sum(metrics["class_counts"]["test"].values()) == 3
    assert result["headline"]["kept"] == metrics["kept"] and "class_counts" not in result["headline"]


def test_the_stage_reads_its_params_file(tmp_path):
    import yaml

    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"fer2013": PARAMS}))
    source = write_csv(tmp_path / "fer.csv", good_rows(4))
    assert stage.main(["--source", str(source), "--out-dir", str(tmp_path / "out"), "--metrics",
                       str(tmp_path / "m.json"), "--params", str(tmp_path / "params.yaml")]) == 0
    assert len(pd.read_csv(tmp_path / "out" / "manifest.csv")) == 4


def test_the_sample_file_shows_every_dirty_row(tmp_path):
    sample = REPO / "sample" / "fer2013_sample.csv"
    result = run(tmp_path, sample)
    removed = result["removed"]
    assert (removed.reason == "constant").sum() == 1
    duplicates = result["duplicates"]
    assert duplicates.group.nunique() == 2 and duplicates.conflicting_labels.sum() == 2
    across = duplicates[~duplicates.conflicting_labels]
    assert across.set_index("usage").kept.to_dict() == {"Training": False, "PrivateTest": True}
    assert sample.stat().st_size < 1_000_000


def test_sample_generator_adds_the_dirty_rows_and_orders_by_usage():
    from datasets.sample_fer2013 import with_usage_and_dirt

    rows = [{"media": f"m{i}", "time": None, "label": "happy", "image": smooth(i)} for i in range(40)]
    table = with_usage_and_dirt(rows)
    assert len(table) == 43
    order = {u: k for k, u in enumerate(["Training", "PublicTest", "PrivateTest"])}
    assert table.Usage.map(order).is_monotonic_increasing
    assert set(table.dirt) == {"", "constant image", "copy of a PrivateTest image",
                               "copy of a Training image with another label"}
    assert table.equals(with_usage_and_dirt(rows))


# --- the real FER2013 (skipped when ../shared/data is absent) ----------------------------------------


@pytest.mark.skipif(not FER2013_CSV.exists(), reason=f"{FER2013_CSV} is absent")
@pytest.mark.timeout(300)
def test_real_fer2013_counts(tmp_path):
    ferplus = FERPLUS_CSV if FERPLUS_CSV.exists() else None
    metrics = run(tmp_path, FER2013_CSV, ferplus)["metrics"]
    assert metrics["rows_read"] == 35887
    assert metrics["rows_per_usage"] == {"Training": 28709, "PublicTest": 3589, "PrivateTest": 3589}
    assert metrics["duplicate_groups"] == 1516
    assert metrics["duplicate_rows"] == 3369
    assert metrics["duplicate_groups_across_usages"] == 557
    assert metrics["duplicate_groups_conflicting_labels"] == 57
    assert metrics["constant_images"] == 12
