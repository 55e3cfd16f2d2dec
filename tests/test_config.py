"""Configs: files, overrides and their errors."""

import os

import pytest

from jaxdann import config as config_lib
from jaxdann import train

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")


def test_config_files_load_and_variants_import_their_base():
    dann = config_lib.load_config(os.path.join(CONFIGS, "pacs_dann.py"))
    source_only = config_lib.load_config(os.path.join(CONFIGS, "pacs_source_only.py"))
    assert (dann.adaptation, source_only.adaptation) == ("dann", "none")
    differing = {
        key
        for key, value in config_lib.flatten(dann).items()
        if config_lib.flatten(source_only)[key] != value
    }
    assert differing == {"adaptation"}
    # The seed's settings.
    assert (dann.batch_size, dann.epochs, dann.optimizer.learning_rate) == (256, 30, 1e-3)
    assert (dann.optimizer.step_size, dann.optimizer.gamma, dann.grl.coefficient) == (20, 0.1, 0.1)
    demo = config_lib.load_config(os.path.join(CONFIGS, "demo.py"))
    assert config_lib.flatten(demo) == config_lib.flatten(config_lib.load_config(None))


def test_overrides_are_parsed_by_the_type_they_replace():
    config = config_lib.apply_overrides(
        config_lib.demo_config(),
        {
            "epochs": "7",
            "optimizer.learning_rate": "3e-4",
            "data.random_flip": "true",
            "optimizer.name": "adam",
        },
    )
    assert config.epochs == 7 and config.optimizer.learning_rate == 3e-4
    assert config.data.random_flip is True and config.optimizer.name == "adam"


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            {"optimzer.name": "adam"},
            r"unknown config key 'optimzer\.name'; valid keys: .*optimizer\.name",
        ),
        ({"epochs": "ten"}, r"--config\.epochs=ten: expected int"),
        ({"data.random_flip": "maybe"}, "expected true or false"),
    ],
)
def test_bad_overrides_name_the_key(overrides, message):
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.apply_overrides(config_lib.demo_config(), overrides)


def _config_file(tmp_path, name: str, body: str) -> str:
    """A config file whose get_config() runs ``body`` on the demo config ``c``."""
    path = tmp_path / name
    path.write_text(
        "import ml_collections\n"
        "from jaxdann.config import demo_config\n"
        f"def get_config():\n    c = demo_config()\n    {body}\n    return c\n"
    )
    return str(path)


@pytest.mark.parametrize(
    "body,message",
    [
        ("c.learning_rat = 1.0", "unknown config keys learning_rat"),
        ("c.epochs = '2'", "bad.py: .*epochs"),  # ConfigDict refuses the type change
        (  # a dict rebuilt from scratch holds whatever it was given
            "c = ml_collections.ConfigDict({**c.to_dict(), 'epochs': '2'})",
            "epochs='2' should be of type int",
        ),
        (  # only some keys: named, with where to start from
            "c = ml_collections.ConfigDict({'epochs': 1})",
            r"lacks config keys adaptation, batch_size, .* and \d+ more; start it "
            r"from jaxdann.config.base_config\(\)",
        ),
    ],
)
def test_config_file_contents_are_checked(tmp_path, body, message):
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.load_config(_config_file(tmp_path, "bad.py", body))


def test_config_file_errors(tmp_path):
    with pytest.raises(config_lib.ConfigError, match="does not exist"):
        config_lib.load_config(str(tmp_path / "missing.py"))
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(config_lib.ConfigError, match="defines no get_config"):
        config_lib.load_config(str(empty))
    with pytest.raises(config_lib.ConfigError, match="is a folder"):
        config_lib.load_config(str(tmp_path))


def test_command_line_errors_are_one_line_and_exit_2(capsys):
    assert train.main(["--config.epochs=abc"]) == 2
    assert train.main(["--bogus"]) == 2
    assert train.main(["--config.nope=1"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("error: ") for line in lines)
    assert "unrecognised argument '--bogus'" in lines[1]


def test_alexnet_computation_variants_reach_the_model_and_are_refused_elsewhere():
    from jaxdann.training.model_setup import build_from_config

    config = config_lib.apply_overrides(
        config_lib.base_config(), {"model.stem": "space_to_depth", "model.pool_gradient": "xla"}
    )
    config_lib.validate(config)
    network, _ = build_from_config(config, 7)
    features = dict(network.parts)["features"]
    assert (features.stem, features.pool_gradient) == ("space_to_depth", "xla")
    demo = config_lib.apply_overrides(config_lib.demo_config(), {"model.pool_gradient": "xla"})
    with pytest.raises(config_lib.ConfigError, match="model.pool_gradient"):
        config_lib.validate(demo)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            {"adaptation": "dnn"},
            "adaptation='dnn' is not a registered method; choose one of none, dann, cdan",
        ),
        ({"batch_size": "0"}, "batch_size=0 must be positive"),
        ({"model.stem": "s2d"}, "model.stem='s2d' is not one of conv, space_to_depth"),
        (
            {"model.arch": "resnet"},
            "model.arch='resnet' is not a registered backbone; choose one of",
        ),
        ({"optimizer.name": "lamb"}, "optimizer.name='lamb' is not a registered optimizer; choose"),
        ({"grl.schedule": "CONSTANT"}, "grl.schedule='CONSTANT' is not one of"),
        ({"model.dropout_rate": "1.5"}, r"model.dropout_rate=1.5 must be in \[0, 1\)"),
        ({"checkpoint_every_epochs": "-1"}, "checkpoint_every_epochs=-1 must be 0 or more"),
        ({"seed": "-1"}, "seed=-1 must be 0 or more"),
        ({"optimizer.weight_decay": "-0.1"}, "optimizer.weight_decay=-0.1 must be 0 or more"),
        ({"data.source": "photo"}, "the digits demo's source is always 'digits'"),
        ({"data.validation": "cartoon"}, "validates on 'source_holdout'"),
    ],
)
def test_validate_names_the_key_and_what_is_valid(overrides, message):
    config = config_lib.apply_overrides(config_lib.demo_config(), overrides)
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.validate(config)


def test_an_unusable_run_folder_or_an_interrupt_is_one_line(tmp_path, capsys, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    assert train.main(["--workdir", str(afile), "--config.epochs=1"]) == 2  # a setting
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --workdir {afile} is a file; name a folder."]

    def interrupted(config, workdir):
        raise KeyboardInterrupt

    # Settings that do not fit the data are refused like a bad flag: exit 2.
    small = ["--config.data.limit=8", "--config.batch_size=16", "--config.data.drop_last=true"]
    assert train.main(["--workdir", str(tmp_path / "small"), *small]) == 2
    assert "fewer than one batch of 16" in capsys.readouterr().err
    assert not (tmp_path / "small").exists()  # a refused new run leaves no folder behind
    # Settings the folder's run was not trained with are refused like a bad flag: exit 2.
    run = str(tmp_path / "run")
    assert train.main(["--workdir", run, "--config.epochs=1", "--config.data.limit=40"]) == 0
    capsys.readouterr()
    assert train.main(["--workdir", run, "--config.epochs=1", "--config.data.limit=20"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.limit: 40, now 20" in err[0]

    monkeypatch.setattr("jaxdann.training.trainer.train_and_evaluate", interrupted)
    assert train.main(["--workdir", str(tmp_path / "interrupted")]) == 130
    err = capsys.readouterr().err
    assert f"rerunning with --workdir {tmp_path / 'interrupted'} starts it again" in err
    monkeypatch.setattr("jaxdann.training.run_folder.saved_epochs", lambda workdir: [1])
    (tmp_path / "interrupted").mkdir()
    assert train.main(["--workdir", str(tmp_path / "interrupted")]) == 130
    err = capsys.readouterr().err
    assert "to resume from its last checkpoint" in err
