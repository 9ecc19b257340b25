"""params.yaml's schema: every wrong value and unknown key is refused, naming the file, the key, the value and
what is allowed, before a stage touches its outputs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, get_args

import pandas as pd
import pytest
import yaml

from pipeline import faces
from pipeline.common import StageError, load_params
from pipeline.params import NO_FILE, SECTIONS
from tests.conftest import REPO, SAMPLE

DROP = object()  # as a value in ``changed``: the key is removed


def changed(tmp_path: Path, changes: dict[str, Any], base: dict[str, Any] | None = None) -> Path:
    """A copy of the repository's params.yaml (or ``base``) with ``changes`` by dotted key."""
    params = base if base is not None else yaml.safe_load((REPO / "params.yaml").read_text())
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        section = params
        for parent in parents:
            section = section.setdefault(parent, {})
        if value is DROP:
            del section[leaf]
        else:
            section[leaf] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


# (changes, the section loaded, the message after "<file>: "), the first ones from issue 15
REFUSED = [
    ({"faces.fps": -5}, "faces", "faces.fps = -5: should be greater than 0"),
    ({"faces.fps": 0}, "faces", "faces.fps = 0: should be greater than 0"),
    ({"faces.fps": "fast"}, "faces", 'faces.fps = "fast": should be a valid number'),
    ({"faces.crop_size": 0}, "faces", "faces.crop_size = 0: should be greater than 0"),
    ({"download.youtube.max_height": "tall"}, "download",
     'download.youtube.max_height = "tall": should be a valid integer'),
    ({"download.timeout": -1}, "download", "download.timeout = -1: should be greater than 0"),
    ({"annotation.votes": "ten"}, "annotation", 'annotation.votes = "ten": should be a valid integer'),
    ({"annotation.aggregation": "majority"}, "annotation",
     "annotation.aggregation = \"majority\": should be 'ferplus', 'plurality' or 'dawid_skene'"),
    ({"annotation.votes": 0}, "annotation", "annotation.votes = 0: should be greater than 0"),
    ({"annotation.votes": 11}, "annotation",
     "annotation.votes = 11 is more than the 10 simulated annotators (annotation.simulation.annotators) can give a "
     "face"),
    ({"faces.fsp": 5}, "faces", "faces.fsp: unknown key; did you mean faces.fps?"),
    ({"download.youtube.max_hieght": 480}, "download",
     "download.youtube.max_hieght: unknown key; did you mean download.youtube.max_height?"),
    ({"download.max_file_mb": -1}, "download",
     "download.max_file_mb = -1: should be greater than or equal to 0, or null"),
    ({"download.max_file_mb": "big"}, "download", 'download.max_file_mb = "big": should be a valid number, or null'),
    # beyond the list
    ({"faces.fps": True}, "faces", "faces.fps = true: should be a valid number"),
    ({"faces.fps": DROP}, "faces", "faces.fps: missing"),
    ({"faces.thresholds": [0.6, 1.5, 0.7]}, "faces", "faces.thresholds[1] = 1.5: should be less than or equal to 1"),
    ({"faces.thresholds": [0.6, 0.7]}, "faces", "faces.thresholds = [0.6, 0.7]: List should have at least 3 items"),
    ({"faces.device": "gpu"}, "faces", 'faces.device = "gpu": should be auto (CUDA when present, else the CPU), cpu, '
                                       "cuda or cuda:N"),
    ({"faces.square": "yes"}, "faces", 'faces.square = "yes": should be a valid boolean'),
    ({"faces.jpeg_quality": 101}, "faces", "faces.jpeg_quality = 101: should be less than or equal to 100"),
    ({"download.flickr.sizes": ["url_l", "url_xl"]}, "download",
     "download.flickr.sizes[1] = \"url_xl\": should be 'url_o', 'url_k', 'url_h', 'url_l', 'url_c' or 'url_z'"),
    ({"download.flickr.api_url": "api.flickr.com"}, "download",
     'download.flickr.api_url = "api.flickr.com": should be an http:// or https:// URL'),
    ({"annotation.min_votes": 12, "annotation.votes": 10}, "annotation",
     "annotation.min_votes = 12 is more than annotation.votes = 10: no face would get enough votes to be labelled"),
    ({"annotation.crowd": "people"}, "annotation", "annotation.crowd = \"people\": should be 'simulated' or 'none'"),
    ({"annotation.adaptive.rules": ["decided", "majority"]}, "annotation",
     "annotation.adaptive.rules[1] = \"majority\": should be 'decided', 'unanimous' or 'confident'"),
    ({"annotation.adaptive.rules": []}, "annotation", "annotation.adaptive.rules = []: List should have at least 1"),
    ({"annotation.adaptive.enabled": True, "annotation.aggregation": "dawid_skene"}, "annotation",
     "annotation.adaptive.enabled is true with annotation.aggregation: dawid_skene, whose label depends on every "
     "face's votes"),
    ({"annotation.adaptive.initial": 11, "annotation.votes": 10}, "annotation",
     "annotation.adaptive.initial = 11 is more than annotation.votes = 10"),
    ({"annotation.adaptive.k": 12}, "annotation", "annotation.adaptive.k = 12 is more than annotation.votes = 10"),
    ({"splits.ratios": {"train": 0.7, "val": 0.15, "test": 0.05}}, "splits",
     'splits.ratios = {"train": 0.7, "val": 0.15, "test": 0.05}: should sum to 1, not 0.9'),
    ({"splits.ratios": {"train": 0.7, "val": 0.15, "tset": 0.15}}, "splits",
     "splits.ratios.tset: unknown key; did you mean splits.ratios.test?"),
    ({"fer2013.ferplus_relabel.contempt": "smirk"}, "fer2013",
     "fer2013.ferplus_relabel.contempt = \"smirk\": should be 'drop', 'angry', 'disgust', 'fear', 'happy', 'sad', "
     "'surprise' or 'neutral'"),
    ({"fer2013.not_a_face.image_check": "yes"}, "fer2013",
     "fer2013.not_a_face.image_check = \"yes\": should be 'auto' or a valid boolean"),
    ({"fer2013.not_a_face.cascades": ["haarcascade_nose.xml"]}, "fer2013",
     'fer2013.not_a_face.cascades[0] = "haarcascade_nose.xml": should name a cascade file in OpenCV\'s '),
    ({"fer2013.folder_test_usage": "Test"}, "fer2013",
     "fer2013.folder_test_usage = \"Test\": should be 'Training', 'PublicTest' or 'PrivateTest'"),
    ({"card.face_size": 0}, "card", "card.face_size = 0: should be greater than 0"),
    ({"train.input_size": 50}, "train", "train.input_size = 50: should be a multiple of 32, or null"),
    ({"train.batch_size": 0}, "train", "train.batch_size = 0: should be greater than 0"),
    ({"train.epochs": -3}, "train", "train.epochs = -3: should be greater than 0"),
    ({"train.fast.input_size": 100}, "train", "train.fast.input_size = 100: should be a multiple of 32, or null"),
    ({"train.vemo": {"batch_size": 0}}, "train", "train.vemo.batch_size = 0: should be greater than 0"),
    ({"train.vemo": {"lr": None}}, "train", "train.vemo.lr = null: should be a valid number"),
    ({"train.recipe": "slow"}, "train", "train.recipe = \"slow\": should be 'paper' or 'fast'"),
    ({"train.model": "vgg"}, "train", "train.model = \"vgg\": should be 'resmasking', 'resnet18' or 'resnet34'"),
    ({"train.precision": "fp16"}, "train", "train.precision = \"fp16\": should be 'fp32', 'bf16' or 'auto'"),
    ({"train.fast.budget": 5}, "train", "train.fast.budget: unknown key; did you mean train.fast.budget_minutes?"),
    ({"train.fast.ema_decay": 0.9}, "train", "train.fast.ema_decay: unknown key; did you mean train.fast.ema?"),
    ({"train.fast.warmup": DROP}, "train", "train.fast.warmup: missing"),
    ({"train.augment.rotate": 10}, "train", "train.augment.rotate: unknown key; did you mean train.augment.rotation?"),
    ({"train.augment.scale": 1.0}, "train", "train.augment.scale = 1.0: should be less than 1"),
    ({"train.fer2013": {"mixup": 0.2}}, "train",
     "train.fer2013 sets mixup of the fast recipe, but fer2013 trains by the paper recipe"),
    ({"train.vemo": {"recipe": "fast"}, "train.fast": DROP}, "train",
     "train.recipe is fast for vemo, but there is no train.fast section"),
    ({"train.model": "resnet18", "train.recipe": "fast"}, "train",
     "train: fer2013 trains resnet18, which has no masking blocks, with mask_depths [3, 2, 1, 1]; set mask_depths "
     "to null"),
    ({"evaluate.tta": ["fixed", "flip"]}, "evaluate", "evaluate.tta[1] = \"flip\": should be 'fixed' or 'random'"),
    ({"evaluate.tta_draws": 0}, "evaluate", "evaluate.tta_draws = 0: should be greater than 0"),
    ({"ensemble.members": {"fer2013": "data/evaluate/fer2013/predictions_{split}.csv"}}, "ensemble",
     'ensemble.members = {"fer2013": "data/evaluate/fer2013/predictions_{split}.csv"}: Dictionary should have at '
     "least 2 items"),
    ({"ensemble.members.vemo": "data/evaluate/vemo/predictions.csv"}, "ensemble",
     'ensemble.members.vemo = "data/evaluate/vemo/predictions.csv": should be a path with {split} where'),
    ({"fases.fps": 5}, "card", "fases: unknown section; did you mean faces?"),
    ({"download.sources": "my_sources.yaml"}, "download",
     'download.sources = "my_sources.yaml": should name an existing file (relative to the project root); there is '
     f"no {Path('my_sources.yaml').absolute()}"),
    ({"annotation.queue": "random"}, "annotation",
     "annotation.queue = \"random\": should be 'sequential' or 'uncertainty'"),
    ({"annotation.predictions": "none"}, "annotation",
     "annotation.queue is uncertainty, but annotation.predictions is none: the queue orders tasks by the model's "
     "score"),
    ({"predict.batch_size": 0}, "predict", "predict.batch_size = 0: should be greater than 0"),
    ({"predict.device": "gpu"}, "predict", 'predict.device = "gpu": should be auto (CUDA when present, else the CPU)'),
    ({"predict.modle": "x.pt"}, "predict", "predict.modle: unknown key; did you mean predict.model?"),
    ({"annotation.simulation.reference": "none"}, "annotation",
     "annotation.simulation.reference is none, but annotation.crowd is simulated: the simulated annotators vote "
     "around reference labels"),
]


@pytest.mark.parametrize(("changes", "section", "message"), REFUSED, ids=[m.split(":")[0] for _, _, m in REFUSED])
def test_a_wrong_value_or_key_is_refused_naming_file_key_value_and_what_is_allowed(tmp_path, changes, section,
                                                                                     message):
    path = changed(tmp_path, changes)
    with pytest.raises(StageError) as refused:
        load_params(section, path)
    assert any(line.startswith(f"{path}: {message}") for line in str(refused.value).splitlines()), str(refused.value)


def test_every_problem_of_a_section_is_listed_one_line_each(tmp_path):
    path = changed(tmp_path, {"faces.fps": -5, "faces.fsp": 5, "faces.crop_size": "big"})
    with pytest.raises(StageError) as refused:
        load_params("faces", path)
    assert sorted(str(refused.value).splitlines()) == sorted([
        f"{path}: faces.fps = -5: should be greater than 0",
        f'{path}: faces.crop_size = "big": should be a valid integer',
        f"{path}: faces.fsp: unknown key; did you mean faces.fps?",
    ])


def test_the_shipped_params_pass_and_come_back_as_written():
    shipped = yaml.safe_load((REPO / "params.yaml").read_text())
    # but for the path keys set to none, which come back as null: the stage reads no file
    no_file = {"annotation.quality.gold", "splits.external", "fer2013.ferplus"}
    for dotted in no_file:
        *parents, key = dotted.split(".")
        holder = shipped
        for parent in parents:
            holder = holder[parent]
        assert holder[key] == NO_FILE
        holder[key] = None
    for section in SECTIONS:
        loaded = load_params(section, REPO / "params.yaml")
        # as written: 5 stays 5, not 5.0 (messages echo values, and the faces parts' keys hash them)
        assert (json.dumps({key: loaded[key] for key in shipped[section]}, sort_keys=True)
                == json.dumps(shipped[section], sort_keys=True))


def test_the_train_schema_has_the_keys_training_reads():
    from dataclasses import fields

    from datasets.batched import Augment
    from models import train
    from pipeline.params import FastKeys, TrainAugment, TrainKeys

    assert set(TrainKeys.model_fields) == train.SHARED_KEYS and set(FastKeys.model_fields) == train.FAST_KEYS
    assert set(TrainAugment.model_fields) == {f.name for f in fields(Augment)}
    assert set(SECTIONS["train"].model_fields) == train.SHARED_KEYS | {"fast", *train.DATASETS}


def test_the_choices_written_out_in_the_schema_are_those_of_their_modules():
    from annotation import adaptive
    from datasets.fer2013_read import USAGES
    from models import evaluate, zoo
    from pipeline import flickr, params
    from pipeline.emotions import EMOTIONS

    assert list(get_args(params.FlickrSize)) == [s for s in flickr.EXTRAS.split(",") if s.startswith("url_")]
    assert list(get_args(params.Contempt)) == ["drop", *EMOTIONS]
    assert list(get_args(params.Usage)) == USAGES
    assert list(get_args(params.ModelName)) == list(zoo.MODELS)
    assert get_args(params.Precision) == zoo.PRECISIONS
    assert get_args(params.TtaProtocol) == evaluate.TTA_PROTOCOLS
    assert get_args(params.AdaptiveRule) == adaptive.RULES


def test_overrides_come_back_with_only_what_they_change(tmp_path):
    """train.stage_params lays train.fast and train.<dataset> over the shared keys: an omitted key must stay
    omitted, not come back as null."""
    path = changed(tmp_path, {"train.vemo": {"lr": 0.01, "augment": {"rotation": 10}}})
    loaded = load_params("train", path)
    assert loaded["vemo"] == {"lr": 0.01, "augment": {"rotation": 10}} and loaded["fer2013"] == {}
    assert set(loaded["fast"]) == set(yaml.safe_load(path.read_text())["train"]["fast"])
    assert set(loaded["fast"]["augment"]) == set(yaml.safe_load(path.read_text())["train"]["fast"]["augment"])


def test_keys_the_stages_run_without_get_their_defaults(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    fer2013 = {k: v for k, v in params["fer2013"].items() if k not in ("source", "ferplus", "folder_test_usage")}
    download = {k: v for k, v in params["download"].items() if k not in ("rate_limit", "max_file_mb")}
    path = changed(tmp_path, {}, {"fer2013": fer2013, "download": download})
    assert load_params("fer2013", path) == {**fer2013, "source": None, "ferplus": None,
                                            "folder_test_usage": "PrivateTest"}
    loaded = load_params("download", path)
    assert loaded["max_file_mb"] is None and loaded["rate_limit"] is None
    # a section that another stage reads may be absent; the stage's own may not
    with pytest.raises(StageError, match=re.escape(f"{path}: has no 'faces:' section")):
        load_params("faces", path)


def test_the_faces_stage_given_bad_params_leaves_its_crops_as_they_were(tmp_path):
    """``faces.fps: -5`` looped forever in the sampler, after the stage had deleted its crops folder."""
    crop = tmp_path / "faces" / "single" / "single_0.000_0.jpg"
    crop.parent.mkdir(parents=True)
    crop.write_bytes(b"an earlier run's crop")
    pd.DataFrame([{"media_id": "single", "media_type": "video", "path": str(SAMPLE / "videos" / "single_face.mp4")}]
                 ).to_csv(tmp_path / "media.csv", index=False)
    path = changed(tmp_path, {"faces.fps": "fast"})
    with pytest.raises(StageError, match=re.escape(f'{path}: faces.fps = "fast": should be a valid number')):
        faces.main(["--media-table", str(tmp_path / "media.csv"), "--crops", str(tmp_path / "faces"),
                    "--table", str(tmp_path / "faces.csv"), "--per-media", str(tmp_path / "per_media.csv"),
                    "--metrics", str(tmp_path / "faces.json"), "--params", str(path)])
    assert crop.read_bytes() == b"an earlier run's crop"
    assert not (tmp_path / "faces.csv").exists() and not (tmp_path / "faces.json").exists()


def test_a_path_key_set_to_none_reads_no_file(tmp_path):
    """none, not null, says "no file" where dvc.yaml depends on the key's path (null there breaks every dvc
    command): it comes back as None, as null does for a stage run without DVC."""
    assert (REPO / NO_FILE).is_file()  # what the templated deps point at
    for value in (NO_FILE, None):
        path = changed(tmp_path, {"fer2013.ferplus": value, "splits.external": value, "annotation.predictions": value,
                                  "annotation.queue": "sequential", "annotation.crowd": "none",
                                  "annotation.simulation.reference": value})
        assert load_params("fer2013", path)["ferplus"] is None and load_params("splits", path)["external"] is None
        annotation = load_params("annotation", path)
        assert annotation["predictions"] is None and annotation["simulation"]["reference"] is None
    # a choice named none is not a path: the tie policy stays none
    assert load_params("annotation", REPO / "params.yaml")["ties"] == "none"


def test_the_source_list_is_a_param_with_the_samples_by_default(tmp_path):
    assert load_params("download", REPO / "params.yaml")["sources"] == "sources.yaml"
    mine = tmp_path / "my_sources.yaml"
    mine.write_text("sources: []\n")
    assert load_params("download", changed(tmp_path, {"download.sources": str(mine)}))["sources"] == str(mine)
    assert load_params("download", changed(tmp_path, {"download.sources": DROP}))["sources"] == "sources.yaml"
