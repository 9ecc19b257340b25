"""The schema of ``params.yaml``: every key of every section, with its type and its range or choices.

``pipeline.common.load_params`` checks a stage's section here before the stage reads or writes anything, so
that a wrong value or a misspelt key stops the stage with a line that names the file, the dotted key, the
value and what is allowed, instead of a traceback, a hang or a silent default half-way through a run.

Types are checked strictly: YAML already gives numbers, booleans and strings their types, so a quoted ``"5"``
or a ``true`` where a number belongs is a mistake to report, not a value to coerce. A key has a default only
where the stages have always run without it.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin
from urllib.parse import urlparse

from annotated_types import Ge, Gt, Le, Len, Lt, MinLen, MultipleOf
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError, WrapValidator, create_model,
                      model_serializer, model_validator)

from pipeline.common import StageError


def _as_written(value: Any, handler: Any) -> Any:
    # a whole number stays an int where a float is allowed: messages that echo a value ("over
    # download.youtube.max_duration = 5 s") then read as params.yaml does, not "5.0 s"
    checked = handler(value)
    return value if type(value) is int else checked


Number = Annotated[float, WrapValidator(_as_written)]
PositiveNumber = Annotated[Number, Gt(0)]
NonNegativeNumber = Annotated[Number, Ge(0)]
Share = Annotated[Number, Ge(0), Le(1)]
PositiveInt = Annotated[int, Gt(0)]
NonNegativeInt = Annotated[int, Ge(0)]
Bits64 = Annotated[int, Ge(0), Le(64)]  # a Hamming distance between 64-bit dHashes
Text = Annotated[str, MinLen(1)]


def _device(name: str) -> str:
    kind, _, index = name.partition(":")
    if name == "auto" or (kind in ("cpu", "cuda") and not index) or (kind == "cuda" and index.isdigit()):
        return name
    raise ValueError("should be auto (CUDA when present, else the CPU), cpu, cuda or cuda:N")


def _http_url(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https") and parsed.netloc:
        return url
    raise ValueError("should be an http:// or https:// URL")


Device = Annotated[str, AfterValidator(_device)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]


class ReadsPath:
    """Marks a key whose value is a file or folder a stage reads. dvc.yaml lists the value among that stage's
    deps through templating (``- ${fer2013.ferplus}``), so that a change to the file, or the key pointed at
    another, reruns the stage; tests/test_dvc_deps.py finds the keys by this mark."""


READS_PATH = ReadsPath()
# "none" in a path key: no file. Not null: DVC cannot depend on null (its templating gives a dep with no path,
# and every dvc command then fails with "unexpected error"), so the project has a small file named none that
# such a key's templated dep points at.
NO_FILE = "none"


def _no_file(path: str | None) -> str | None:
    return None if path == NO_FILE else path


def _existing_file(path: str) -> str:
    if not Path(path).is_file():
        raise ValueError(f"should name an existing file (relative to the project root); there is no "
                         f"{Path(path).absolute()}")
    return path


InputFile = Annotated[Text, AfterValidator(_existing_file), READS_PATH]
# a file or folder, or none (null is taken too, for a stage run without DVC)
OptionalInput = Annotated[Text | None, AfterValidator(_no_file), READS_PATH]


# Choices that other modules define as well; tests/test_params.py checks that they agree. Written out here so
# that checking one section imports no module of another stage (dvc.yaml's deps stay each stage's own).
FlickrSize = Literal["url_o", "url_k", "url_h", "url_l", "url_c", "url_z"]  # pipeline.flickr.EXTRAS
Contempt = Literal["drop", "angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]  # labels.EMOTIONS
Usage = Literal["Training", "PublicTest", "PrivateTest"]  # datasets.fer2013_read.USAGES
ModelName = Literal["resmasking", "resnet18", "resnet34"]  # models.zoo.MODELS
Precision = Literal["fp32", "bf16", "auto"]  # models.zoo.PRECISIONS
TtaProtocol = Literal["fixed", "random"]  # models.evaluate.TTA_PROTOCOLS


def _cascade(name: str) -> str:
    import cv2

    if not (Path(cv2.data.haarcascades) / name).is_file():
        raise ValueError(f"should name a cascade file in OpenCV's {cv2.data.haarcascades}, "
                         f"e.g. haarcascade_frontalface_default.xml")
    return name


def _split_pattern(pattern: str) -> str:
    try:
        formats = "{split}" in pattern and bool(pattern.format(split="test"))
    except (KeyError, IndexError, ValueError):  # other braces: str.format would fail on them in the stage
        formats = False
    if not formats:
        raise ValueError("should be a path with {split} where the split's name goes, and no other braces, "
                         "e.g. data/evaluate/fer2013/predictions_{split}.csv")
    return pattern


class Section(BaseModel):
    """A section of params.yaml, or a mapping inside one: its keys typed, and no key beyond them."""

    model_config = ConfigDict(strict=True, extra="forbid")


class Given(Section):
    """A section whose omitted keys stay omitted when it is dumped: an override says only what it changes, and
    the code it goes to supplies the rest."""

    @model_serializer(mode="plain")
    def _given_only(self) -> dict[str, Any]:
        given = {key: getattr(self, key) for key in type(self).model_fields if key in self.model_fields_set}
        return {key: value.model_dump() if isinstance(value, BaseModel) else value for key, value in given.items()}


def _optional(name: str, *models: type[Section], required: type[Section] | None = None) -> type[Given]:
    """A ``Given`` model with the keys of ``models``, checked as there, each optional but those of ``required``.
    An omitted key's default (None) is never validated nor dumped."""
    fields: dict[str, Any] = {}
    for model in models:
        for key, field in model.model_fields.items():
            annotation = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
            fields[key] = (annotation, ... if model is required else None)
    return create_model(name, __base__=Given, **fields)


class YouTube(Section):
    max_height: PositiveInt
    max_duration: NonNegativeNumber | None = None  # 0 or null: no cap


class Flickr(Section):
    api_url: HttpUrl
    web_url: HttpUrl
    # Flickr's licence ids: 0 is all rights reserved, 1-16 the reusable ones (flickr.photos.licenses.getInfo)
    licenses: Annotated[list[Annotated[int, Ge(1), Le(16)]], MinLen(1)]
    sizes: Annotated[list[FlickrSize], MinLen(1)]
    per_page: Annotated[int, Ge(1), Le(500)]  # the API's most per page


class Download(Section):
    sources: InputFile = Field("sources.yaml", validate_default=True)  # the source list
    max_items_per_source: PositiveInt
    timeout: PositiveNumber
    retries: NonNegativeInt
    rate_limit: PositiveInt | None = None
    sleep_interval: NonNegativeNumber = 0
    max_file_mb: NonNegativeNumber | None = None  # 0 or null: no cap
    youtube: YouTube
    flickr: Flickr


class Faces(Section):
    fps: PositiveNumber
    device: Device
    full_detect_every: PositiveInt
    scene_change: Annotated[Number, Ge(0), Le(255)]
    batch_size: PositiveInt
    min_face_size: PositiveInt
    thresholds: Annotated[list[Share], Len(3, 3)]
    min_probability: Share
    detect_max_side: PositiveInt
    margin: NonNegativeNumber
    square: bool
    crop_size: PositiveInt
    jpeg_quality: Annotated[int, Ge(0), Le(100)]
    near_duplicate_bits: Bits64
    drop_near_duplicates: bool
    engine: Literal["local", "ray"] = "local"  # where the work runs: this process, or a Ray cluster
    ray_address: Text | None = None  # null: RAY_ADDRESS, else a Ray started here
    ray_workers: PositiveInt | None = None  # null: one per GPU of the cluster, else one per CPU


class Simulation(Section):
    annotators: PositiveInt
    accuracy: Share
    seed: NonNegativeInt
    reference: OptionalInput  # none where no crowd is simulated: push then depends on no reference labels


class Quality(Section):
    gold: OptionalInput  # face_id,label of faces whose label is known; none: no gold faces
    min_votes: PositiveInt
    min_balanced_accuracy: Share
    min_gold_votes: PositiveInt
    min_gold_accuracy: Share
    exclude_flagged: bool


AdaptiveRule = Literal["decided", "unanimous", "confident"]  # annotation/adaptive.py's RULES


class Adaptive(Section):
    enabled: bool
    initial: PositiveInt
    rules: Annotated[list[AdaptiveRule], MinLen(1)]
    k: Annotated[int, Ge(2)]
    threshold: Annotated[Number, Gt(0), Lt(1)]
    classes: PositiveInt


class Annotation(Section):
    project: Text
    votes: PositiveInt
    min_votes: PositiveInt
    aggregation: Literal["ferplus", "plurality", "dawid_skene"]
    ties: Literal["none", "random"]
    image_url_root: HttpUrl | None
    predictions: OptionalInput  # face_id,label,score[,model]: a model's pre-labels (the predict stage's)
    # the annotators' queue: sequential (task order) or uncertainty (the least sure prediction first)
    queue: Literal["sequential", "uncertainty"] = "sequential"
    crowd: Literal["simulated", "none"]
    simulation: Simulation
    quality: Quality
    adaptive: Adaptive

    @model_validator(mode="after")
    def votes_can_be_had(self) -> Annotation:
        if self.min_votes > self.votes:
            raise ValueError(f"annotation.min_votes = {self.min_votes} is more than annotation.votes = {self.votes}: "
                             f"no face would get enough votes to be labelled")
        if self.crowd == "simulated" and self.votes > self.simulation.annotators:
            raise ValueError(f"annotation.votes = {self.votes} is more than the {self.simulation.annotators} "
                             f"simulated annotators (annotation.simulation.annotators) can give a face")
        if self.crowd == "simulated" and self.simulation.reference is None:
            raise ValueError(f"annotation.simulation.reference is {NO_FILE}, but annotation.crowd is simulated: the "
                             f"simulated annotators vote around reference labels (e.g. sample/reference_labels.csv)")
        if self.queue == "uncertainty" and self.predictions is None:
            raise ValueError(f"annotation.queue is uncertainty, but annotation.predictions is {NO_FILE}: the queue "
                             f"orders tasks by the model's score (e.g. data/predict/predictions.csv, the predict "
                             f"stage's)")
        if self.adaptive.enabled and self.aggregation == "dawid_skene":
            raise ValueError("annotation.adaptive.enabled is true with annotation.aggregation: dawid_skene, whose "
                             "label depends on every face's votes, so no face can stop early; use ferplus or "
                             "plurality")
        if self.adaptive.initial > self.votes:
            raise ValueError(f"annotation.adaptive.initial = {self.adaptive.initial} is more than annotation.votes = "
                             f"{self.votes}")
        if "unanimous" in self.adaptive.rules and self.adaptive.k > self.votes:
            raise ValueError(f"annotation.adaptive.k = {self.adaptive.k} is more than annotation.votes = {self.votes}")
        return self


class Ratios(Section):
    train: Share
    val: Share
    test: Share

    @model_validator(mode="after")
    def sum_to_one(self) -> Ratios:
        total = self.train + self.val + self.test
        if abs(total - 1) > 1e-6:
            raise ValueError(f"should sum to 1, not {total:g}")
        return self


class Splits(Section):
    ratios: Ratios
    seed: NonNegativeInt
    external: OptionalInput = None
    min_class_items: NonNegativeInt


class Constant(Section):
    enabled: bool
    max_std: NonNegativeNumber


class Duplicates(Section):
    enabled: bool
    drop_conflicting: bool


class NearDuplicates(Section):
    enabled: bool
    max_bits: Bits64
    min_correlation: Annotated[Number, Ge(-1), Le(1)]


class NotAFace(Section):
    ferplus: bool
    ferplus_min_share: Share
    image_check: Literal["auto"] | bool
    min_mode_share: Share
    cascades: Annotated[list[Annotated[str, AfterValidator(_cascade)]], MinLen(1)]


class FerplusRelabel(Section):
    enabled: bool
    contempt: Contempt


class Fer2013(Section):
    source: Annotated[Text | None, READS_PATH] = None  # --source stands in for it
    ferplus: OptionalInput = None
    constant: Constant
    duplicates: Duplicates
    near_duplicates: NearDuplicates
    not_a_face: NotAFace
    ferplus_relabel: FerplusRelabel
    folder_test_usage: Usage = "PrivateTest"


class Card(Section):
    faces_per_class: PositiveInt
    face_size: PositiveInt


class TrainAugment(Given):
    """datasets.batched.Augment's keys; an omitted one takes that class's default."""

    hflip: bool = None
    rotation: Annotated[Number, Ge(0), Le(180)] = None  # degrees either way
    scale: Annotated[Number, Ge(0), Lt(1)] = None  # a zoom within 1 +- scale
    shift: Share = None  # of the side
    crop_padding: NonNegativeInt = None
    erasing: Share = None  # the probability of an erased patch


class TrainKeys(Section):
    """The keys both recipes share (models.train.SHARED_KEYS)."""

    recipe: Literal["paper", "fast"]
    model: ModelName
    pretrained: Literal["imagenet"] | None
    # ResMaskingNet's masks, and the baselines' ResNets, halve the input five times
    input_size: Annotated[int, Gt(0), MultipleOf(32)] | None  # null: the model's own (224)
    mask_depths: Annotated[list[PositiveInt], Len(4, 4)] | None
    batch_size: PositiveInt
    optimizer: Literal["radam", "sgd", "adam"]
    lr: PositiveNumber
    weight_decay: NonNegativeNumber
    momentum: Share
    plateau_patience: NonNegativeInt
    early_stop: PositiveInt
    epochs: PositiveInt
    augment: TrainAugment
    seed: NonNegativeInt
    device: Device
    precision: Precision
    resume: bool


class FastKeys(Section):
    """The keys of the fast recipe alone (models.train.FAST_KEYS)."""

    budget_minutes: PositiveNumber
    warmup: Annotated[Number, Ge(0), Lt(1)]  # a share of the steps
    label_smoothing: Annotated[Number, Ge(0), Lt(1)]
    mixup: NonNegativeNumber  # Beta(alpha, alpha)'s alpha; 0: off
    ema: Annotated[Number, Ge(0), Lt(1)] | None  # 0 or null: off


# train.fast: every fast key, and any shared key it changes; train.<dataset>: any key it changes
FastRecipe = _optional("FastRecipe", TrainKeys, FastKeys, required=FastKeys)
DatasetOverrides = _optional("DatasetOverrides", TrainKeys, FastKeys)


class Train(TrainKeys):
    fast: FastRecipe | None = None
    fer2013: DatasetOverrides = Field(default_factory=DatasetOverrides)
    vemo: DatasetOverrides = Field(default_factory=DatasetOverrides)

    @model_validator(mode="after")
    def each_dataset_has_a_whole_recipe(self) -> Train:
        for dataset in ("fer2013", "vemo"):
            own = getattr(self, dataset)
            recipe = own.recipe if "recipe" in own.model_fields_set else self.recipe
            if recipe == "fast" and self.fast is None:
                raise ValueError(f"train.recipe is fast for {dataset}, but there is no train.fast section")
            if recipe == "paper" and (fast_only := sorted(own.model_fields_set & set(FastKeys.model_fields))):
                raise ValueError(f"train.{dataset} sets {', '.join(fast_only)} of the fast recipe, but {dataset} "
                                 f"trains by the paper recipe")
            layers = [self, *([self.fast] if recipe == "fast" else []), own]
            model, depths = (next(getattr(layer, key) for layer in reversed(layers)
                                  if key in layer.model_fields_set) for key in ("model", "mask_depths"))
            if depths is not None and model != "resmasking":
                raise ValueError(f"train: {dataset} trains {model}, which has no masking blocks, with mask_depths "
                                 f"{depths}; set mask_depths to null")
        return self


class Evaluate(Section):
    device: Device
    precision: Precision
    batch_size: PositiveInt
    tta: list[TtaProtocol]  # [] : no test-time augmentation
    tta_draws: PositiveInt
    seed: NonNegativeInt
    gradcam: NonNegativeInt


class Predict(Section):
    # a model file, by default a train stage's output (not checked here: it exists once that stage has run)
    model: Annotated[Text, READS_PATH]
    device: Device
    precision: Precision
    batch_size: PositiveInt


class Ensemble(Section):
    members: Annotated[dict[Text, Annotated[str, AfterValidator(_split_pattern), READS_PATH]], MinLen(2)]


SECTIONS: dict[str, type[Section]] = {
    "download": Download, "faces": Faces, "annotation": Annotation, "splits": Splits, "fer2013": Fer2013,
    "card": Card, "train": Train, "evaluate": Evaluate, "predict": Predict, "ensemble": Ensemble,
}


def checked_section(params: dict[str, Any], section: str, path: Path) -> dict[str, Any]:
    """``params[section]`` (the whole file read from ``path``) checked against its schema, with the defaults
    of the keys it leaves out; a ``StageError`` lists every problem, one line each."""
    problems = [f"{name}: unknown section{_did_you_mean(str(name), SECTIONS, '')}" for name in params
                if name not in SECTIONS]
    if section not in params or not isinstance(params[section], dict):
        problems.append(f"has no '{section}:' section")
    if problems:
        raise StageError("\n".join(f"{path}: {problem}" for problem in problems))
    schema = SECTIONS[section]
    try:
        return schema.model_validate(params[section]).model_dump()
    except ValidationError as e:
        raise StageError("\n".join(f"{path}: {problem}" for problem in _problems(section, schema, e))) from None


def _did_you_mean(name: str, known: Any, prefix: str) -> str:
    # a key cut short or run on (budget, ema_decay) first: difflib alone would pair those with augment and
    # weight_decay
    close = [key for key in known if key.startswith(name) or name.startswith(key)]
    if len(close) != 1:
        close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    if close:
        return f"; did you mean {prefix}{close[0]}?"
    return f"; known: {', '.join(known)}"


def _problems(section: str, schema: type[Section], error: ValidationError) -> list[str]:
    """One line per wrong key: ``faces.fps = -5: should be greater than 0``. The branches of a union (``auto``
    or a boolean) fail apart in pydantic; their messages are joined into one line."""
    lines: dict[str, list[str]] = {}
    for problem in error.errors(include_url=False):
        loc, kind = problem["loc"], problem["type"]
        if kind == "extra_forbidden":
            model, key, _ = _walk(schema, loc[:-1], section)
            lines[f"{key}.{loc[-1]}"] = [f"unknown key{_did_you_mean(str(loc[-1]), model.model_fields, key + '.')}"]
            continue
        model, key, field = _walk(schema, loc, section)
        message = problem["msg"].removeprefix("Value error, ").replace("Input should", "should")
        if kind == "missing":
            lines[key] = ["missing"]
        elif not loc:  # a rule across keys: its message names them
            lines[""] = [message]
        else:
            if field is not None and type(None) in get_args(field.annotation) and key.endswith(f".{loc[-1]}"):
                message += ", or null"
            head = f"{key} = {json.dumps(problem['input'], default=str)}"
            if head in lines:
                message = message.removeprefix("should be ")
            lines.setdefault(head, []).append(message)
    return [": ".join(part for part in (head, " or ".join(messages)) if part) for head, messages in lines.items()]


def _walk(schema: type[Section], loc: tuple[Any, ...], section: str) -> tuple[type[Section], str, Any]:
    """The model that ``loc`` ends in, the dotted key it names and the last field on the way; ``loc``'s items
    past the fields (a union branch's tag) are left out."""
    model, key, field, mapping = schema, section, None, False
    for item in loc:
        if isinstance(item, int):
            key += f"[{item}]"
        elif mapping:  # a key of a mapping the schema leaves open (ensemble.members.<name>)
            key += f".{item}"
            mapping = False
        elif item in model.model_fields:
            field = model.model_fields[item]
            key += f".{item}"
            model = next((t for t in (field.annotation, *get_args(field.annotation))
                          if isinstance(t, type) and issubclass(t, Section)), model)
            mapping = get_origin(field.annotation) is dict
        else:
            break
    return model, key, field
