"""The model zoo: every registered model's shape, gradients, size and learning on its default preprocessing;
ResMaskingNet's authors' checkpoints; the train stage's model file, which carries the architecture and the
preprocessing that every loader applies, and refuses an old file by name; ImageNet weights from the torch hub
cache and the error without them; bf16 autocast agreeing with fp32 on models that have learned a task."""

from __future__ import annotations

import copy

import cv2
import numpy as np
import pytest
import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF

from annotation.server import free_port
from datasets.batched import PREPROCESSING_VERSION, Preprocessing, to_model_input
from models import infer, predict, zoo
from models.resmasking import load_authors_checkpoint
from pipeline.common import StageError
from pipeline.emotions import EMOTIONS

# ResMaskingNet takes any side that is a multiple of 32; 64 is 12 times cheaper than 224, 32 four times
# cheaper again (but its 1x1 maps in layer4 leave logits too close to compare bf16 with fp32).
SMALL = 64
TINY = 32

# torchvision's counts (11,689,512 and 21,797,672) less the 1000-way head (512 * 1000 + 1000) plus a
# 7-way one (512 * 7 + 7).
PARAMETERS = {"resmasking": 137_796_423, "resnet18": 11_180_103, "resnet34": 21_288_263}


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {name: zoo.create_model(name) for name in zoo.MODELS}


def images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def faces(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """uint8 grey faces (n, size, size), as the datasets store them."""
    return (torch.rand(n, size, size, generator=torch.Generator().manual_seed(seed)) * 255).round().to(torch.uint8)


@pytest.mark.parametrize("name", list(zoo.MODELS))
def test_forward_and_backward_on_the_default_preprocessing(models, name):
    # the model takes what its default preprocessing makes (a config with the wrong channels or size fails here)
    preprocessing = zoo.default_preprocessing(name)
    model = models[name].train()
    model.zero_grad(set_to_none=True)
    size = preprocessing.input_size
    logits = model(to_model_input(faces(2, size), preprocessing))
    assert logits.shape == (2, 7)
    logits.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.isfinite().all()]
    assert not missing
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", list(zoo.MODELS))
def test_parameter_count(models, name):
    assert sum(p.numel() for p in models[name].parameters()) == PARAMETERS[name]


def test_resmasking_counts_137_8m_unique_and_142_9m_with_shared_projections_twice(models):
    model = models["resmasking"]
    unique = sum(p.numel() for p in model.parameters())
    counted_twice = sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))
    assert abs(unique - 137.8e6) < 0.05e6  # the number
    assert abs(counted_twice - 142.9e6) < 0.05e6  # the paper's number


@pytest.mark.parametrize("name", list(zoo.MODELS))
def test_a_few_sgd_steps_lower_the_loss_on_a_fixed_batch(models, name):
    torch.manual_seed(0)
    model = copy.deepcopy(models[name]).train()
    batch, labels = images(4, TINY, seed=1), torch.tensor([0, 3, 5, 6])
    # SGD, not Adam: Adam's state for ResMaskingNet's 138M parameters would make this the slowest test.
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = []
    for _ in range(3):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(batch), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def save_as_the_authors_did(state_dict: dict, path) -> None:
    """Their trainer's format, from a DataParallel model: the state_dict under "net", keys with "module."."""
    torch.save({"net": {f"module.{k}": v for k, v in state_dict.items()}, "best_val_acc": 73.1,
                "arch": "resmasking_dropout1"}, path)


def test_an_authors_checkpoint_loads_strictly(models, tmp_path):
    trained = models["resmasking"].eval()
    path = tmp_path / "resmasking_dropout1_rot30_2019Nov17_14.33"
    save_as_the_authors_did(trained.state_dict(), path)
    blank = copy.deepcopy(trained)
    with torch.no_grad():
        for tensor in blank.state_dict().values():
            tensor.zero_()
    loaded = load_authors_checkpoint(blank, path).eval()
    batch = images(2, SMALL)
    with torch.inference_mode():
        assert torch.equal(loaded(batch), trained(batch))
    # The masking blocks' projections stay shared, as in the authors' model.
    assert loaded.mask1.downsample1 is loaded.mask1.conv1.downsample


def test_the_train_stages_model_file_loads_too(models, tmp_path):
    trained = models["resmasking"].eval()
    predict.save_trained(tmp_path / "model.pt", trained, "resmasking", {"mask_depths": None},
                         zoo.default_preprocessing("resmasking"), dataset="fer2013", epoch=3, val_accuracy=0.7)
    blank = zoo.create_model("resmasking").eval()
    loaded = load_authors_checkpoint(blank, tmp_path / "model.pt")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), trained.state_dict().values()))


def test_a_checkpoint_of_another_model_gives_a_clear_error(models, tmp_path):
    path = tmp_path / "resnet18_checkpoint"
    save_as_the_authors_did(models["resnet18"].state_dict(), path)
    with pytest.raises(StageError, match=r"resnet18_checkpoint: does not fit ResMaskingNet: keys \d+ missing "
                                         r"\(.*\); \d+ unexpected \(.*fc.bias.*\)"):
        load_authors_checkpoint(models["resmasking"], path)


def test_a_checkpoint_with_other_classes_names_the_shapes(models, tmp_path):
    path = tmp_path / "eight_classes"
    state_dict = dict(models["resmasking"].state_dict(), **{"fc.1.weight": torch.zeros(8, 512),
                                                            "fc.1.bias": torch.zeros(8)})
    save_as_the_authors_did(state_dict, path)
    with pytest.raises(StageError, match=r"eight_classes: does not fit ResMaskingNet: keys 2 of another shape "
                                         r"\(fc.1.bias: \(8,\) for \(7,\), fc.1.weight: \(8, 512\) for \(7, 512\)\)"):
        load_authors_checkpoint(models["resmasking"], path)


def test_an_unknown_model_lists_the_known_ones():
    with pytest.raises(StageError, match="unknown model 'resmasknet'; known models: resmasking, resnet18, resnet34"):
        zoo.create_model("resmasknet")
    with pytest.raises(StageError, match="known models"):
        zoo.default_preprocessing("vgg")


@pytest.mark.parametrize("name", ["resmasking", "resnet18"])
def test_imagenet_weights_load_from_the_torch_hub_cache(name, tmp_path, monkeypatch):
    """A file in the cache is used as torch.hub finds it (no network): the backbone takes it, the head not."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = zoo.IMAGENET_WEIGHTS[name]
    cached = tmp_path / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[1]
    cached.parent.mkdir(parents=True)
    torch.manual_seed(2)
    imagenet = {"resnet18": zoo.torchvision.models.resnet18, "resmasking": zoo.torchvision.models.resnet34}[name]()
    torch.save(imagenet.state_dict(), cached)
    model = zoo.create_model(name, pretrained="imagenet")
    assert torch.equal(model.layer4[-1].conv2.weight, imagenet.layer4[-1].conv2.weight)
    assert torch.equal(model.bn1.running_var, imagenet.bn1.running_var)
    assert model(images(2, SMALL)).shape == (2, 7)


def test_imagenet_weights_that_cannot_be_downloaded_say_where_to_put_them(tmp_path, monkeypatch):
    # An empty cache and a URL on a closed loopback port: the offline failure, without depending on
    # (or waiting for) this machine's network.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = zoo.IMAGENET_WEIGHTS["resnet18"]
    url = f"http://127.0.0.1:{free_port()}/resnet18-f37072fd.pth"
    monkeypatch.setattr(weights.value, "url", url)
    with pytest.raises(StageError) as raised:
        zoo.create_model("resnet18", pretrained="imagenet")
    message = str(raised.value)
    assert url in message
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert "pretrained: null" in message


def test_pretrained_takes_none_or_imagenet():
    with pytest.raises(StageError, match="pretrained must be null or 'imagenet', got 'vggface2'"):
        zoo.create_model("resnet18", pretrained="vggface2")


def test_precision_helpers():
    cpu = torch.device("cpu")
    assert zoo.autocast_dtype(cpu, "fp32") is None
    assert zoo.autocast_dtype(cpu, "bf16") is torch.bfloat16
    expected = torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None
    assert zoo.autocast_dtype(cpu, "auto") is expected
    with pytest.raises(StageError, match="precision must be one of fp32, bf16, auto, got 'fp8'"):
        zoo.autocast_dtype(cpu, "fp8")
    with zoo.autocast(cpu, "bf16"):
        assert torch.get_autocast_dtype("cpu") is torch.bfloat16 and torch.is_autocast_enabled("cpu")
    with zoo.autocast(cpu, "fp32"):
        assert not torch.is_autocast_enabled("cpu")


def separable_faces(per_class: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 faces of a task any model here can learn: class k is a smooth texture at brightness 20 + 30k."""
    labels = torch.arange(len(EMOTIONS)).repeat(per_class)
    noise = torch.rand(len(labels), 1, size, size, generator=torch.Generator().manual_seed(seed))
    texture = TF.gaussian_blur(noise, [5, 5], [1.5, 1.5])[:, 0]
    return (20 + 30 * labels[:, None, None] + 40 * texture).round().to(torch.uint8), labels


def head_of(model: nn.Module) -> nn.Linear:
    return model.fc if isinstance(model.fc, nn.Linear) else model.fc[-1]


@pytest.fixture(scope="module")
def learned(models) -> dict[str, nn.Module]:
    """Each model with its classifier fitted in fp32 (logistic regression on its pooled features) to
    ``separable_faces``: models that predict every class, where an untrained one predicts one class for nearly
    every input, so that a bf16 path that changed the features would change the predictions too."""
    fitted = {}
    for name, model in models.items():
        model = copy.deepcopy(model).eval()
        preprocessing = zoo.default_preprocessing(name, SMALL)
        x, y = separable_faces(3, SMALL, seed=1)
        captured = []
        hook = head_of(model).register_forward_hook(lambda module, inputs, output: captured.append(inputs[0]))
        with torch.inference_mode():
            model(to_model_input(x, preprocessing).contiguous())
        hook.remove()
        features = captured[0].clone()
        mean, std = features.mean(0), features.std(0).clamp_min(1e-6)
        linear = nn.Linear(features.shape[1], len(EMOTIONS))
        optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=300, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(linear((features - mean) / std), y) + 1e-3 * linear.weight.square().sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        with torch.no_grad():  # the standardisation folded into the model's own head
            head_of(model).weight.copy_(linear.weight / std)
            head_of(model).bias.copy_(linear.bias - (linear.weight / std) @ mean)
        fitted[name] = model
    return fitted


@pytest.mark.parametrize("name", list(zoo.MODELS))
def test_bf16_autocast_with_channels_last_agrees_with_fp32_in_top1_on_a_learned_task(learned, name):
    model = learned[name]
    fast = zoo.prepare(copy.deepcopy(model), torch.device("cpu"))
    assert fast.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x, y = separable_faces(4, SMALL, seed=2)  # faces the head was not fitted on
    batch = to_model_input(x, zoo.default_preprocessing(name, SMALL))
    with torch.inference_mode():
        exact = model(batch.contiguous())
        with zoo.autocast(torch.device("cpu"), "bf16"):
            rounded = fast(batch)
    assert rounded.dtype == torch.bfloat16
    assert (exact.argmax(1) == y).float().mean() >= 0.9  # it learned the task: it predicts every class
    # measured on this CPU (AVX512-BF16): resnet18 disagrees on 1 of 28, resnet34 and ResMaskingNet on none
    assert (rounded.argmax(1) == exact.argmax(1)).float().mean() >= 0.9


def test_mask_depths_make_a_shallower_resmasking_that_saves_and_loads(tmp_path):
    torch.manual_seed(0)
    shallow = zoo.create_model("resmasking", mask_depths=[3, 2, 1, 1]).eval()
    assert [shallow.mask1.depth, shallow.mask2.depth, shallow.mask3.depth, shallow.mask4.depth] == [3, 2, 1, 1]
    assert sum(p.numel() for p in shallow.parameters()) < PARAMETERS["resmasking"] / 2
    batch = images(2, 96)
    predict.save_trained(tmp_path / "model.pt", shallow, "resmasking", {"mask_depths": [3, 2, 1, 1]},
                         zoo.default_preprocessing("resmasking", 96))
    loaded, info = predict.load_trained(tmp_path / "model.pt", torch.device("cpu"))
    assert [loaded.mask1.depth, loaded.mask4.depth] == [3, 1] and info["preprocessing"].input_size == 96
    with torch.inference_mode():
        assert torch.allclose(loaded(batch), shallow(batch), atol=1e-5)
    with pytest.raises(StageError, match="mask_depths is ResMaskingNet's; model 'resnet18' has no masking blocks"):
        zoo.create_model("resnet18", mask_depths=[3, 2, 1, 1])
    with pytest.raises(StageError, match=r"mask_depths must be four depths of at least 1 \(or null\), got \[3, 2\]"):
        zoo.create_model("resmasking", mask_depths=[3, 2])


# not the authors' 0 and 1, so that a loader that fell back to the zoo's default would predict otherwise
STORED = Preprocessing(input_size=SMALL, channels=3, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))


def by_hand(model: nn.Module, grey: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """Softmax of ``model`` on uint8 grey faces at the input size, preprocessed step by step."""
    x = grey.float().div(255)[:, None].expand(-1, 3, -1, -1)
    x = (x - torch.tensor(preprocessing.mean)[:, None, None]) / torch.tensor(preprocessing.std)[:, None, None]
    with torch.inference_mode():
        return torch.softmax(model(x.contiguous()), dim=1)


def test_the_model_file_carries_its_preprocessing_and_the_loaders_apply_it(tmp_path):
    torch.manual_seed(0)
    trained = zoo.create_model("resnet18").eval()
    predict.save_trained(tmp_path / "model.pt", trained, "resnet18", {"mask_depths": None}, STORED, epoch=1)
    saved = torch.load(tmp_path / "model.pt", weights_only=False)
    assert saved["preprocessing"] == {"input_size": SMALL, "channels": 3, "mean": (0.5, 0.4, 0.3),
                                      "std": (0.2, 0.25, 0.3), "version": PREPROCESSING_VERSION}
    assert saved["model"] == "resnet18" and saved["model_kwargs"] == {"mask_depths": None}
    assert saved["classes"] == EMOTIONS

    model, info = predict.load_trained(tmp_path / "model.pt", torch.device("cpu"))
    assert info["preprocessing"] == STORED
    grey = faces(6, SMALL, seed=4)
    expected = by_hand(trained, grey, STORED)
    assert not torch.allclose(expected, by_hand(trained, grey, zoo.default_preprocessing("resnet18", SMALL)), atol=1e-3)
    # the inference loop of validation and evaluation, with what the file says
    got = predict.probabilities(model, [(grey, None)], torch.device("cpu"), info["preprocessing"], "fp32")
    assert torch.allclose(got, expected, atol=1e-5)
    # inference on face crops: BGR, of another size, resized to the file's input size
    crops = [cv2.cvtColor(cv2.resize(g.numpy(), (80, 80)), cv2.COLOR_GRAY2BGR) for g in grey]
    resized = torch.stack([TF.resize(torch.from_numpy(cv2.cvtColor(c, cv2.COLOR_BGR2GRAY))[None], [SMALL, SMALL],
                                     antialias=True)[0] for c in crops])
    got = infer.classify(model, crops, info["preprocessing"], torch.device("cpu"), "fp32")
    assert np.allclose(got, by_hand(trained, resized, STORED).numpy(), atol=1e-5)


def test_the_per_image_and_the_batched_path_apply_the_same_preprocessing():
    from datasets.torch_data import transforms

    grey = faces(3, SMALL, seed=5)
    batched = to_model_input(grey, STORED)
    for image, expected in zip(grey, batched):
        assert torch.allclose(transforms(STORED, train=False)(image.numpy()), expected, atol=1e-6)
    one_channel = Preprocessing(input_size=SMALL, channels=1, mean=(0.5,), std=(0.25,))
    assert to_model_input(grey, one_channel).shape == (3, 1, SMALL, SMALL)
    assert transforms(one_channel, train=False)(grey[0].numpy()).shape == (1, SMALL, SMALL)
    with pytest.raises(ValueError, match=r"images of \(32, 32\) pixels for a model that takes 64 x 64"):
        to_model_input(faces(1, 32), STORED)


def test_an_old_model_file_is_refused_naming_the_file_and_the_missing_key(tmp_path):
    # Found: model.pt kept only the input size; inference took the rest from constants that had to agree
    old = tmp_path / "old" / "model.pt"
    old.parent.mkdir()
    torch.save({"model": "resnet18", "state_dict": {}, "input_size": 64, "classes": EMOTIONS, "mask_depths": None}, old)
    with pytest.raises(StageError, match=rf"{old}: no key\(s\) 'model_kwargs', 'preprocessing': a model file from "
                                         "before the architecture and preprocessing were saved"):
        predict.load_trained(old, torch.device("cpu"))
    saved = {"model": "resnet18", "model_kwargs": {}, "classes": EMOTIONS, "state_dict": {}}
    incomplete = {"input_size": 64, "channels": 3, "mean": (0.0, 0.0, 0.0)}
    torch.save({**saved, "preprocessing": incomplete}, old)
    with pytest.raises(StageError, match=rf"{old}: 'preprocessing' lacks key\(s\) std, version"):
        predict.load_trained(old, torch.device("cpu"))
    torch.save({**saved, "preprocessing": {**STORED.to_dict(), "version": PREPROCESSING_VERSION + 1}}, old)
    with pytest.raises(StageError, match=rf"{old}: preprocessing: version {PREPROCESSING_VERSION + 1}, but this code "
                                         rf"applies version {PREPROCESSING_VERSION}"):
        predict.load_trained(old, torch.device("cpu"))
    torch.save({**saved, "preprocessing": {**STORED.to_dict(), "mean": (0.5,)}}, old)
    with pytest.raises(StageError, match=r"mean \(0.5,\) and std .* must have one value per channel \(3\)"):
        predict.load_trained(old, torch.device("cpu"))


def test_the_default_preprocessing_at_another_input_size_keeps_the_rest(monkeypatch):
    monkeypatch.setitem(zoo.CONFIGS, "resnet18", STORED)
    assert zoo.default_preprocessing("resnet18", 96) == Preprocessing(96, 3, STORED.mean, STORED.std)
