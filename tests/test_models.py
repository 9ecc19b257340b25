"""The model zoo: every registered model's shape, gradients, size and learning; ResMaskingNet's authors'
checkpoints; ImageNet weights from the torch hub cache and the error without them; bf16 autocast."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from annotation.server import free_port
from models import zoo
from models.resmasking import load_authors_checkpoint
from pipeline import common
from pipeline.common import StageError

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


def test_every_model_has_a_config():
    assert set(zoo.MODELS) >= {"resmasking", "resnet18", "resnet34"}
    for name in zoo.MODELS:
        assert zoo.model_config(name) == {"input_size": 224, "grey": True, "mean": (0.0, 0.0, 0.0),
                                          "std": (1.0, 1.0, 1.0), "num_classes": 7}


@pytest.mark.parametrize("name", list(zoo.MODELS))
def test_forward_and_backward_at_224(models, name):
    model = models[name].train()
    model.zero_grad(set_to_none=True)
    logits = model(images(2, 224))
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
    from models.predict import save_trained

    trained = models["resmasking"].eval()
    save_trained(tmp_path / "model.pt", "resmasking", trained, 224, dataset="fer2013", epoch=3, val_accuracy=0.7)
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
        zoo.model_config("vgg")


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
    assert zoo.pick_device is common.pick_device
    assert zoo.pick_device("cpu") == cpu
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


@pytest.mark.parametrize("name", list(zoo.MODELS))
def test_bf16_autocast_with_channels_last_agrees_with_fp32_in_top1(models, name):
    model = models[name].eval()
    fast = zoo.prepare(copy.deepcopy(model), torch.device("cpu"))
    assert fast.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    batch = images(8, SMALL, seed=3)
    with torch.inference_mode():
        exact = model(batch)
        with zoo.autocast(torch.device("cpu"), "bf16"):
            rounded = fast(batch.contiguous(memory_format=torch.channels_last))
    assert rounded.dtype == torch.bfloat16
    assert torch.equal(rounded.argmax(1), exact.argmax(1))


def test_mask_depths_make_a_shallower_resmasking_that_saves_and_loads(tmp_path):
    from models.predict import load_trained, save_trained

    torch.manual_seed(0)
    shallow = zoo.create_model("resmasking", mask_depths=[3, 2, 1, 1]).eval()
    assert [shallow.mask1.depth, shallow.mask2.depth, shallow.mask3.depth, shallow.mask4.depth] == [3, 2, 1, 1]
    assert sum(p.numel() for p in shallow.parameters()) < PARAMETERS["resmasking"] / 2
    batch = images(2, 96)
    save_trained(tmp_path / "model.pt", "resmasking", shallow, 96, mask_depths=[3, 2, 1, 1])
    loaded, info = load_trained(tmp_path / "model.pt", torch.device("cpu"))
    with torch.inference_mode():
        assert torch.allclose(loaded(batch), shallow(batch), atol=1e-5)
    with pytest.raises(StageError, match="mask_depths is ResMaskingNet's; model 'resnet18' has no masking blocks"):
        zoo.create_model("resnet18", mask_depths=[3, 2, 1, 1])
    with pytest.raises(StageError, match=r"mask_depths must be four depths of at least 1 \(or null\), got \[3, 2\]"):
        zoo.create_model("resmasking", mask_depths=[3, 2])
