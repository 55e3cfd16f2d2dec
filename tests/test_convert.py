"""Conversion errors name the offending keys; the CLI round-trips a saved .pth."""

import os
import re

import jax
import numpy as np
import pytest

from jaxdann import convert
from jaxdann.convert import ConversionError, load_params, torchvision_to_flax

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")


@pytest.fixture(scope="module")
def state_dict():
    torch.manual_seed(0)
    return torchvision.models.alexnet(weights=None).state_dict()


def test_layouts(state_dict):
    params = torchvision_to_flax(state_dict)
    conv = state_dict["features.3.weight"].numpy()  # (192, 64, 5, 5)
    np.testing.assert_array_equal(params["features"]["conv2"]["kernel"], conv.transpose(2, 3, 1, 0))
    linear = state_dict["classifier.4.weight"].numpy()
    np.testing.assert_array_equal(params["classifier"]["hidden_1"]["kernel"], linear.T)
    # First linear layer: torch input index c*36 + h*6 + w  ->  flax input index (h*6 + w)*256 + c.
    first = state_dict["classifier.1.weight"].numpy()
    kernel = params["classifier"]["hidden_0"]["kernel"]
    for c, h, w in [(0, 0, 0), (5, 1, 2), (255, 5, 5), (100, 3, 0)]:
        np.testing.assert_array_equal(kernel[(h * 6 + w) * 256 + c], first[:, c * 36 + h * 6 + w])


def test_accepts_numpy_arrays(state_dict):
    from_numpy = torchvision_to_flax({k: v.numpy() for k, v in state_dict.items()})
    from_torch = torchvision_to_flax(state_dict)
    np.testing.assert_array_equal(
        from_numpy["features"]["conv1"]["kernel"], from_torch["features"]["conv1"]["kernel"]
    )


def test_missing_and_extra_keys_are_named(state_dict):
    broken = dict(state_dict)
    del broken["features.8.bias"]
    broken["classifier.7.weight"] = torch.zeros(3)
    with pytest.raises(ConversionError) as error:
        torchvision_to_flax(broken)
    message = str(error.value)
    assert "missing keys: features.8.bias" in message
    assert "unexpected keys: classifier.7.weight" in message


def test_shape_mismatch_is_named(state_dict):
    broken = dict(state_dict)
    broken["features.6.weight"] = torch.zeros(384, 100, 3, 3)
    expected = r"features\.6\.weight has shape \(384, 100, 3, 3\), expected \(384, 192, 3, 3\)"
    with pytest.raises(ConversionError, match=expected):
        torchvision_to_flax(broken)
    broken = dict(state_dict)  # a chain that fits, with other kernel sizes and widths
    broken["features.0.weight"] = torch.zeros(64, 3, 5, 5)
    broken["classifier.1.weight"], broken["classifier.1.bias"] = (
        torch.zeros(2048, 9216),
        torch.zeros(2048),
    )
    broken["classifier.4.weight"] = torch.zeros(4096, 2048)
    with pytest.raises(
        ConversionError,
        match=r"features\.0\.weight has shape \(64, 3, 5, 5\), "
        r"expected \(64, 3, 11, 11\); classifier\.1\.weight has shape \(2048, 9216\)",
    ):
        torchvision_to_flax(broken)
    broken = dict(state_dict)
    broken["classifier.6.bias"] = torch.zeros(999)
    with pytest.raises(ConversionError, match=r"classifier\.6\.bias has shape \(999,\)"):
        torchvision_to_flax(broken)
    broken = dict(state_dict)
    broken["features.0.weight"] = torch.zeros(64, 3, 11)
    with pytest.raises(ConversionError, match=r"features\.0\.weight has shape \(64, 3, 11\)"):
        torchvision_to_flax(broken)


def test_bfloat16_tensors_convert_and_odd_entries_are_named(state_dict):
    halved = {key: value.to(torch.bfloat16) for key, value in state_dict.items()}
    converted = torchvision_to_flax(halved)
    rounded = torchvision_to_flax({k: v.float() for k, v in halved.items()})
    for got, want in zip(jax.tree.leaves(converted), jax.tree.leaves(rounded), strict=True):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ConversionError, match="unexpected keys: 7"):
        torchvision_to_flax({**state_dict, 7: torch.zeros(1)})
    with pytest.raises(ConversionError, match="features.0.bias holds a str, not an array"):
        torchvision_to_flax({**state_dict, "features.0.bias": "zeros"})


def test_cli_round_trips_a_saved_pth(tmp_path, state_dict, capsys):
    pth = tmp_path / "alexnet.pth"
    torch.save(state_dict, pth)
    output = tmp_path / "weights" / "alexnet.msgpack"
    assert convert.main(["--torch-weights", str(pth), "--output", str(output)]) == 0
    assert "61,100,840 parameters" in capsys.readouterr().out
    loaded = load_params(str(output))
    expected = torchvision_to_flax(state_dict)
    for part in ("features", "classifier"):
        for layer in expected[part]:
            for leaf in ("kernel", "bias"):
                np.testing.assert_array_equal(
                    loaded[part][layer][leaf], expected[part][layer][leaf]
                )


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "\x1b" not in err and "weights_only=False" not in err, err  # no colours, no advice
    return err.strip()


def test_cli_rejects_a_wrong_file_in_one_line(tmp_path, capsys):
    pth = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, pth)
    assert convert.main(["--torch-weights", str(pth), "--output", str(tmp_path / "x.msgpack")]) == 1
    assert re.search("resnet.pth: not a torchvision AlexNet.*conv1.weight", _error_line(capsys))
    assert convert.main(["--torch-weights", str(tmp_path / "absent.pth")]) == 2
    assert "absent.pth does not exist" in _error_line(capsys)
    assert convert.main(["--torch-weights", str(tmp_path)]) == 2
    assert "is a folder" in _error_line(capsys)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(os.urandom(256))
    assert convert.main(["--torch-weights", str(corrupt), "--output", str(tmp_path / "y")]) == 1
    assert "corrupt.pth: not a state_dict file torch can read" in _error_line(capsys)
    pickled = tmp_path / "model.pth"
    torch.save(torchvision.models.alexnet(weights=None), pickled)  # a whole pickled model
    assert convert.main(["--torch-weights", str(pickled), "--output", str(tmp_path / "z")]) == 1
    assert "model.pth: not a state_dict file torch can read" in _error_line(capsys)
    assert not (tmp_path / "x.msgpack").exists()


def test_offline_download_fails_with_one_sentence(tmp_path, monkeypatch, capsys):
    from torchvision.models import AlexNet_Weights

    def offline(self, *args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(type(AlexNet_Weights.IMAGENET1K_V1), "get_state_dict", offline)
    assert convert.main(["--output", str(tmp_path / "a.msgpack")]) == 1
    message = _error_line(capsys)
    assert "could not download" in message and "--torch-weights alexnet-owt-7be5be79.pth" in message


def test_a_failed_save_leaves_no_temporary_file(tmp_path):
    (tmp_path / "out").mkdir()  # --output naming a folder: the rename fails
    with pytest.raises(OSError):
        convert.save_params({"kernel": np.ones(3, np.float32)}, str(tmp_path / "out"))
    assert os.listdir(tmp_path) == ["out"] and os.listdir(tmp_path / "out") == []


def test_load_params_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m jaxdann.convert"):
        load_params(str(tmp_path / "missing.msgpack"))
    with pytest.raises(ConversionError, match="is a folder"):
        load_params(str(tmp_path))
    junk = tmp_path / "junk.msgpack"
    junk.write_bytes(b"\x00not msgpack at all")
    with pytest.raises(ConversionError, match="not a jaxdann weights file"):
        load_params(str(junk))
    junk.write_bytes(b"\x01")  # valid msgpack: the number 1
    with pytest.raises(ConversionError, match="not a jaxdann weights file .it holds a int"):
        load_params(str(junk))


def test_converted_params_do_not_alias_torch_tensors():
    torch.manual_seed(0)
    model = torchvision.models.alexnet(weights=None)
    params = torchvision_to_flax(model.state_dict())
    before = params["classifier"]["output"]["bias"].copy()
    with torch.no_grad():
        model.classifier[6].bias.add_(1.0)  # torch trains in place
    np.testing.assert_array_equal(params["classifier"]["output"]["bias"], before)


# -- ResNets -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet18_state_dict():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=7).state_dict()


def test_resnet_layouts_and_statistics(resnet18_state_dict):
    variables = torchvision_to_flax(resnet18_state_dict, "resnet18")
    assert set(variables) == {"params", "batch_stats"}
    params, stats = variables["params"], variables["batch_stats"]
    conv = resnet18_state_dict["layer2.0.downsample.0.weight"].numpy()  # (128, 64, 1, 1)
    np.testing.assert_array_equal(
        params["features"]["layer2_0"]["downsample_conv"]["kernel"], conv.transpose(2, 3, 1, 0)
    )
    norm = "layer3.1.bn2"
    layer = ("layer3_1", "bn2")
    np.testing.assert_array_equal(
        params["features"][layer[0]][layer[1]]["scale"], resnet18_state_dict[f"{norm}.weight"]
    )
    np.testing.assert_array_equal(
        stats["features"][layer[0]][layer[1]]["var"], resnet18_state_dict[f"{norm}.running_var"]
    )
    fc = resnet18_state_dict["fc.weight"].numpy()
    np.testing.assert_array_equal(params["classifier"]["output"]["kernel"], fc.T)
    assert all(leaf.flags.c_contiguous for leaf in jax.tree_util.tree_leaves(variables))
    without_counters = {k: v for k, v in resnet18_state_dict.items() if "num_batches" not in k}
    again = torchvision_to_flax(without_counters, "resnet18")
    jax.tree.map(np.testing.assert_array_equal, again, variables)


def test_resnet_problems_are_listed_at_once(resnet18_state_dict):
    broken = dict(resnet18_state_dict)
    del broken["layer1.0.bn1.running_mean"]
    broken["layer5.0.conv1.weight"] = torch.zeros(3)
    broken["layer2.1.conv2.weight"] = torch.zeros(128, 128, 1, 1)
    with pytest.raises(ConversionError) as error:
        torchvision_to_flax(broken, "resnet18")
    message = str(error.value)
    assert message.startswith("not a torchvision resnet18 state dict")
    assert "missing keys: layer1.0.bn1.running_mean" in message
    assert "unexpected keys: layer5.0.conv1.weight" in message
    assert "layer2.1.conv2.weight has shape (128, 128, 1, 1), expected (128, 128, 3, 3)" in message
    # ResNet-18 weights read as ResNet-50: the bottleneck layers are missing.
    with pytest.raises(ConversionError, match=r"missing keys: .*layer1\.0\.conv3\.weight"):
        torchvision_to_flax(resnet18_state_dict, "resnet50")


def test_resnet_conversion_copies_torch_memory():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    variables = torchvision_to_flax(model.state_dict(), "resnet18")
    bias = variables["params"]["classifier"]["output"]["bias"].copy()
    mean = variables["batch_stats"]["features"]["bn1"]["mean"].copy()
    with torch.no_grad():
        model.fc.bias.add_(1.0)
        model.bn1.running_mean.add_(1.0)
    np.testing.assert_array_equal(variables["params"]["classifier"]["output"]["bias"], bias)
    np.testing.assert_array_equal(variables["batch_stats"]["features"]["bn1"]["mean"], mean)


def test_cli_converts_a_resnet_and_training_reads_it(tmp_path, resnet18_state_dict, capsys):
    from jaxdann.config import base_config
    from jaxdann.training.model_setup import read_pretrained

    pth = tmp_path / "resnet18.pth"
    torch.save(resnet18_state_dict, pth)
    output = tmp_path / "resnet18.msgpack"
    args = ["--arch", "resnet18", "--torch-weights", str(pth), "--output", str(output)]
    assert convert.main(args) == 0
    assert "11,180,103 parameters, 9,600 BatchNorm statistics" in capsys.readouterr().out
    config = base_config()
    config.model.arch, config.model.pretrained = "resnet18", str(output)
    loaded = read_pretrained(config)
    expected = torchvision_to_flax(resnet18_state_dict, "resnet18")
    jax.tree.map(np.testing.assert_array_equal, loaded, expected)
    # A ResNet file given to AlexNet (and the other way round) names what does not fit.
    assert convert.main(["--torch-weights", str(pth), "--output", str(tmp_path / "a")]) == 1
    assert "not a torchvision AlexNet" in _error_line(capsys)


def test_offline_resnet_download_names_the_file_to_fetch(tmp_path, monkeypatch, capsys):
    from torchvision.models import ResNet50_Weights

    def offline(self, *args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(type(ResNet50_Weights.IMAGENET1K_V1), "get_state_dict", offline)
    assert convert.main(["--arch", "resnet50", "--output", str(tmp_path / "r.msgpack")]) == 1
    message = _error_line(capsys)
    assert "could not download https://" in message
    assert "--arch resnet50 --torch-weights resnet50-0676ba61.pth" in message
