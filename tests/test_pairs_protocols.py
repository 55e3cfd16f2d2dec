"""jaxdann.pairs over any dataset with domains: every ordered pair, or leave one domain out."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from jaxdann import config as config_lib
from jaxdann import pairs


def test_the_protocols_list_their_tasks():
    domains = ["photo", "art_painting", "cartoon", "sketch"]
    assert pairs.tasks(domains, "leave_one_out") == [
        (("art_painting", "cartoon", "sketch"), "photo"),
        (("photo", "cartoon", "sketch"), "art_painting"),
        (("photo", "art_painting", "sketch"), "cartoon"),
        (("photo", "art_painting", "cartoon"), "sketch"),
    ]
    assert len(pairs.tasks(domains, "pairs")) == 12
    assert (("sketch",), "photo") in pairs.tasks(domains, "pairs")
    with pytest.raises(config_lib.ConfigError, match="--protocol=loo: choose one of pairs, leave"):
        pairs.tasks(domains, "loo")


def test_leave_one_out_trains_each_target_on_the_union_of_the_others(
    tmp_path, monkeypatch, write_pacs_tree, tiny_pacs_overrides
):
    root = tmp_path / "mine"
    for domain, count in (("day", 2), ("dusk", 3), ("night", 4)):
        write_pacs_tree(root, (domain,), per_class=count)
    trained = []

    def run_cell(config, folder, data, announce, study):
        trained.append((config.data.source, config.data.target, len(data.source), folder))
        return {"final_target_accuracy": 0.1 * len(trained)}, "trained"

    monkeypatch.setattr(pairs, "run_cell", run_cell)
    overrides = tiny_pacs_overrides(root, tmp_path / "cache") | {"data.name": "folder"}
    config = config_lib.apply_overrides(config_lib.base_config(), overrides)
    workdir = str(tmp_path / "loo")
    rows = pairs.run_pairs(
        config, workdir, seeds=[0], adaptations=["none"], protocol="leave_one_out"
    )
    assert [t[:3] for t in trained] == [
        ("dusk,night", "day", 2 * (3 + 4)),
        ("day,night", "dusk", 2 * (2 + 4)),
        ("day,dusk", "night", 2 * (2 + 3)),
    ]
    assert trained[0][3] == os.path.join(workdir, "dusk+night_to_day", "none", "seed0")
    assert [row["source"] for row in rows] == ["dusk,night", "day,night", "day,dusk"]
    with open(os.path.join(workdir, "pairs.md")) as handle:
        table = handle.read()
    assert "| dusk,night -> day | 0.1000 | 1 |" in table
    assert f"| **average** | {np.mean([0.1, 0.2, 0.3]):.4f} |" in table


def test_pairs_refuses_a_dataset_without_domain_pairs(tmp_path, capsys):
    argv = ["--workdir", str(tmp_path / "p"), "--protocol", "leave_one_out"]
    assert pairs.main(argv) == 2  # the default config is the embedded demo
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the digits demo's source is always 'digits'" in err
    assert not os.path.exists(tmp_path / "p" / "pairs.md")
    assert pairs.main([*argv[:2], "--protocol", "all"]) == 2
    assert "--protocol=all: choose one of pairs, leave_one_out" in capsys.readouterr().err


@pytest.mark.slow  # compiles and trains a small CNN: ~30 s on 2 cores
def test_a_run_trains_on_several_sources(tmp_path, write_pacs_tree, tiny_pacs_overrides):
    from jaxdann import train

    root = tmp_path / "mine"
    write_pacs_tree(root, ("photo", "cartoon", "sketch"), per_class=3)
    overrides = tiny_pacs_overrides(root, tmp_path / "cache")
    overrides |= {"data.name": "folder", "data.source": "photo,cartoon", "epochs": "1"}
    workdir = tmp_path / "run"
    argv = ["--workdir", str(workdir), *(f"--config.{k}={v}" for k, v in overrides.items())]
    assert train.main(argv) == 0
    with open(workdir / "data.json") as handle:
        record = json.load(handle)["processes"][0]
    assert record["source"]["images"] == 12 and record["target"]["images"] == 6


def test_the_default_domains_are_those_the_root_holds(tmp_path, write_pacs_tree):
    write_pacs_tree(tmp_path / "pacs", ("photo", "sketch"), per_class=1)
    config = config_lib.apply_overrides(
        config_lib.base_config(), {"data.root": str(tmp_path / "pacs"), "data.validation": "none"}
    )
    assert pairs._study_tasks(config, None, "pairs") == [
        (("photo",), "sketch"),
        (("sketch",), "photo"),
    ]
