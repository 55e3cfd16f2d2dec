"""Using a trained run: jaxdann.load_run(DIR).predict and python -m jaxdann.predict."""

import csv
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import jaxdann
from jaxdann import config as config_lib
from jaxdann import predict
from jaxdann.data import pipeline
from jaxdann.data.folder import preprocess_image
from jaxdann.data.image_transforms import ImageTransform
from jaxdann.errors import ConfigError, DamagedFile, DataError
from jaxdann.training import run_folder


def tiny_demo_config():
    """The embedded demo, 40 images per split, 2 epochs on one device: seconds."""
    config = config_lib.demo_config()
    config.epochs = 2
    config.batch_size = 16
    config.data.limit = 40
    config.parallel.num_devices = 1
    config.log_every_epoch = False
    return config


@pytest.fixture(scope="module", name="trained")
def trained_fixture(tmp_path_factory):
    """A finished demo run and the data it was evaluated on."""
    from jaxdann.training.trainer import train_and_evaluate

    config = tiny_demo_config()
    workdir = str(tmp_path_factory.mktemp("predict") / "run")
    train_and_evaluate(config, workdir, progress=False)
    return workdir, pipeline.load_experiment_data(config)


def test_a_run_whose_last_epochs_were_not_saved_is_loaded_with_a_warning(trained, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(trained[0], workdir)
    shutil.rmtree(os.path.join(workdir, "checkpoints", "2"))  # as if epoch 2 was never saved
    with pytest.warns(UserWarning, match="the newest checkpoint is after epoch 1 of 2"):
        run = jaxdann.load_run(workdir, num_devices=1)
    assert run.epoch == 1


def confusion(labels, predictions, classes=10):
    matrix = np.zeros((classes, classes), np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def evaluation_confusion(workdir):
    with open(os.path.join(workdir, "evaluation.json")) as f:
        return np.asarray(json.load(f)["confusion_matrix"])


def test_load_run_predicts_what_the_run_evaluated(trained):
    workdir, data = trained
    run = jaxdann.load_run(workdir)  # every device (4 in the tests); the run trained on 1
    assert run.mesh.size == 4 and run.epoch == 2
    assert run.class_names == data.class_names
    # 3 batches, the last short
    probabilities = run.predict(data.target_eval.images, batch_size=16, preprocessed=True)
    assert probabilities.shape == (40, 10) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert np.all(probabilities >= 0)
    predicted = confusion(data.target_eval.labels, probabilities.argmax(axis=1))
    np.testing.assert_array_equal(predicted, evaluation_confusion(workdir))


def restored_by_the_trainer(workdir, config, network, method, image_shape):
    """The state of the newest checkpoint as the trainer restores it (RunFolder.restore)."""
    import jax
    import jax.numpy as jnp

    from jaxdann.training.model_setup import initial_variables
    from jaxdann.training.optim import optimizer_factories
    from jaxdann.training.step import TrainState, make_course

    optimizer_for, _ = optimizer_factories(config.optimizer)

    def fresh_state():
        params, model_state = initial_variables(network, method, image_shape, jax.random.key(7))
        learning_rate = jnp.asarray(config.optimizer.learning_rate, jnp.float32)
        optimizer = optimizer_for(learning_rate, make_course(3, 6))
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=method.init_optimizer(optimizer, params),
            learning_rate=learning_rate,
            model_state=model_state,
        )

    fresh = jax.eval_shape(fresh_state)  # shapes only: what the restore fills
    folder = run_folder.RunFolder(workdir, config)
    try:
        state, epoch, _ = folder.restore(fresh)
    finally:
        folder.close()
    assert epoch == 2
    return state


def test_probabilities_are_the_checkpoint_networks(trained):
    """The trainer's own restore and network give the same probabilities."""
    import jax

    from jaxdann.data.transforms import normalize
    from jaxdann.training.model_setup import build_from_config

    workdir, data = trained
    config = tiny_demo_config()
    network, method = build_from_config(config, 10, mean=data.mean, std=data.std)
    copy = os.path.join(os.path.dirname(workdir), "restored_by_the_trainer")
    shutil.copytree(workdir, copy, dirs_exist_ok=True)  # orbax's manager may tidy its folder
    state = restored_by_the_trainer(copy, config, network, method, data.source.images.shape[1:])
    images = data.source.images[:7]

    @jax.jit
    def probabilities(params, model_state, images):
        inputs = normalize(images, data.mean, data.std)
        return jax.nn.softmax(network.logits(params, model_state, inputs), axis=-1)

    expected = np.asarray(probabilities(state.params, state.model_state, images))
    got = jaxdann.load_run(workdir, num_devices=1).predict(images, preprocessed=True)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got, got[:1])  # a trained network, not a constant


def test_images_of_other_sizes_are_preprocessed_as_files(trained, tmp_path):
    workdir, data = trained
    run = jaxdann.load_run(workdir, num_devices=1)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (33, 30), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    Image.fromarray(grey).save(tmp_path / "b.png")
    files = np.stack([run.read_image(tmp_path / "a.png"), run.read_image(tmp_path / "b.png")])
    assert files.shape == (2, 28, 28, 3)
    np.testing.assert_array_equal(run.prepare([image, grey]), files)
    np.testing.assert_array_equal(run.predict([image, grey]), run.predict(files, preprocessed=True))
    single = run.predict(data.target_eval.images[0], preprocessed=True)  # one HWC image: one row
    first = run.predict(data.target_eval.images[:1], preprocessed=True)
    np.testing.assert_allclose(single, first, atol=1e-6)
    assert run.predict(data.target_eval.images[:0]).shape == (0, 10)
    assert run.predict([], preprocessed=True).shape == (0, 10)
    with pytest.raises(ValueError, match="uint8"):
        run.predict(data.target_eval.images[:2].astype(np.float32))
    run.config.data.resize_mode = "square"  # a run trained on TLlib's square resize
    squeezed = preprocess_image(tmp_path / "a.png", resize=28, crop=28, resize_mode="square")
    np.testing.assert_array_equal(run.read_image(tmp_path / "a.png"), squeezed)
    assert not np.array_equal(squeezed, files[0])
    # A streamed run that decoded JPEGs at reduced scale: its evaluation's decode.
    photo = rng.integers(0, 256, (8, 9, 3), dtype=np.uint8).repeat(40, 0).repeat(40, 1)
    Image.fromarray(photo).save(tmp_path / "big.jpg", quality=90)
    run.config.data.decode = "reduced"
    reduced = run.read_image(tmp_path / "big.jpg")
    transform = ImageTransform(28, 28, decode="reduced", resize_mode="square")
    np.testing.assert_array_equal(reduced, transform(str(tmp_path / "big.jpg")))
    exact = preprocess_image(tmp_path / "big.jpg", resize=28, crop=28, resize_mode="square")
    assert not np.array_equal(reduced, exact)


def test_an_array_is_resized_as_its_file_unless_it_is_preprocessed(trained, tmp_path, capsys):
    """With resize > crop, a crop-sized photo is still resized and cropped, as its file is by
    the command; preprocessed=True takes it as the run's input as it is."""
    workdir, data = trained
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    with open(copy / "config.json") as f:
        stored = json.load(f)
    stored["data"]["resize"] = 36  # crop stays 28: the network is unchanged
    run_folder.write_json(str(copy / "config.json"), stored)
    run = jaxdann.load_run(copy, num_devices=1)
    photos = data.target_eval.images[:4]  # 28 x 28 x 3, the crop size
    paths = []
    for index, photo in enumerate(photos):
        paths.append(str(tmp_path / f"{index}.png"))
        Image.fromarray(photo).save(paths[-1])
    files = np.stack([run.read_image(path) for path in paths])
    assert files.shape == photos.shape and not np.array_equal(files, photos)
    np.testing.assert_array_equal(run.prepare(photos), files)
    probabilities = run.predict(photos)
    np.testing.assert_array_equal(probabilities, run.predict(files, preprocessed=True))
    np.testing.assert_array_equal(run.features(photos), run.features(files, preprocessed=True))
    assert not np.allclose(probabilities, run.predict(photos, preprocessed=True), atol=1e-4)
    output = tmp_path / "rows.json"
    assert predict.main(["--run", str(copy), *paths, "--output", str(output)]) == 0
    with open(output) as f:
        rows = json.load(f)["predictions"]
    for row, expected in zip(rows, probabilities, strict=True):
        assert row["probability"] == pytest.approx(expected.max(), abs=2e-6)
    with pytest.raises(DataError, match=r"preprocessed images must be 28x28x3 .* got shape"):
        run.predict(np.zeros((2, 36, 36, 3), np.uint8), preprocessed=True)


def write_images(folder, images, labels):
    """PNG files in two levels of folders; returns {path: label}."""
    written = {}
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        sub = folder / ("even" if index % 2 == 0 else "odd/deeper")
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / f"{index:03d}.png"
        Image.fromarray(image).save(path)
        written[str(path)] = int(label)
    return written


def test_command_rows_match_evaluation_and_a_bad_file_gets_its_row(trained, tmp_path, capsys):
    workdir, data = trained
    images = tmp_path / "images"
    labels = write_images(images, data.target_eval.images, data.target_eval.labels)
    (images / "odd" / "broken.png").write_bytes(b"not a png")
    (images / "notes.txt").write_text("not an image: not listed")
    output = tmp_path / "rows.csv"
    argv = ["--run", workdir, str(images), "--output", str(output), "--top-k", "3"]
    assert predict.main([*argv, "--batch-size", "16"]) == 1  # one file could not be read
    with open(output) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 41
    bad = [row for row in rows if row["error"]]
    assert [row["path"] for row in bad] == [str(images / "odd" / "broken.png")]
    assert "UnidentifiedImageError" in bad[0]["error"] and bad[0]["class"] == ""
    good = [row for row in rows if not row["error"]]
    truth = np.asarray([labels[row["path"]] for row in good])
    predicted = np.asarray([int(row["class"]) for row in good])
    np.testing.assert_array_equal(confusion(truth, predicted), evaluation_confusion(workdir))
    # Ranked, and the same numbers load_run gives for the decoded files.
    run = jaxdann.load_run(workdir)
    files = np.stack([run.read_image(row["path"]) for row in good])
    expected = run.predict(files, preprocessed=True)
    for row, probabilities in zip(good, expected, strict=True):
        order = np.argsort(-probabilities, kind="stable")
        assert [row["class"], row["class_2"], row["class_3"]] == [str(k) for k in order[:3]]
        assert float(row["probability"]) == pytest.approx(probabilities[order[0]], abs=2e-6)
        assert float(row["probability"]) >= float(row["probability_2"])
    assert "1 of 41 file(s) could not be classified" in capsys.readouterr().err


def test_command_json_table_and_exit_status(trained, tmp_path, capsys):
    workdir, data = trained
    images = tmp_path / "images"
    write_images(images, data.target_eval.images[:5], data.target_eval.labels[:5])
    output = tmp_path / "rows.json"
    assert predict.main(["--run", workdir, str(images), "--output", str(output)]) == 0
    with open(output) as f:
        written = json.load(f)
    assert written["checkpoint_epoch"] == 2 and len(written["predictions"]) == 5
    first = written["predictions"][0]
    assert len(first["top_k"]) == 3 and first["error"] is None
    assert first["class"] == first["top_k"][0]["class"]
    capsys.readouterr()
    missing = str(tmp_path / "missing.png")
    assert predict.main(["--run", workdir, str(images), missing, "--top-k", "2"]) == 1
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 1 + 6 and table[-1].startswith(missing)
    assert "not classified: no such file or folder" in table[-1]


def test_bad_arguments_exit_2(trained, tmp_path, capsys):
    workdir, data = trained
    image = tmp_path / "one.png"
    Image.fromarray(data.target_eval.images[0]).save(image)
    not_a_run = tmp_path / "not_a_run"
    not_a_run.mkdir()
    no_checkpoint = tmp_path / "no_checkpoint"
    shutil.copytree(workdir, no_checkpoint, ignore=shutil.ignore_patterns("checkpoints"))
    cases = {
        str(not_a_run): "is not a run folder",
        str(tmp_path / "nowhere"): "no such folder",
        str(no_checkpoint): "holds no checkpoint",
    }
    for run, message in cases.items():
        assert predict.main(["--run", run, str(image)]) == 2
        assert message in capsys.readouterr().err
    assert predict.main(["--run", workdir, str(image), "--output", "rows.txt"]) == 2
    assert ".csv or .json" in capsys.readouterr().err
    nowhere = tmp_path / "nowhere" / "rows.csv"
    assert predict.main(["--run", workdir, str(image), "--output", str(nowhere)]) == 2
    error = capsys.readouterr().err
    assert f"--output {nowhere}: the folder {tmp_path / 'nowhere'} does not exist" in error
    assert error.count("\n") == 1 and not nowhere.parent.exists()
    with pytest.raises(ConfigError, match="no checkpoint"):
        jaxdann.load_run(no_checkpoint)


def test_model_record_names_the_classes(trained, tmp_path, capsys):
    """model.json (the trainer writes it with config.json) gives class names and
    normalisation; a damaged one is refused (exit 1); without it evaluation.json's names."""
    workdir, data = trained
    older = tmp_path / "older"  # a folder from before model.json existed
    shutil.copytree(workdir, older)
    os.remove(older / run_folder.MODEL_RECORD)
    assert jaxdann.load_run(older, num_devices=1).class_names == data.class_names
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    record = copy / run_folder.MODEL_RECORD
    with open(record) as f:
        written = json.load(f)
    assert written == {"class_names": list(data.class_names), "mean": [0.5] * 3, "std": [0.5] * 3}
    names = [f"digit {name}" for name in data.class_names]
    run_folder.write_json(str(record), written | {"class_names": names})
    run = jaxdann.load_run(copy, num_devices=1)
    assert run.class_names == tuple(names)
    image = tmp_path / "one.png"
    Image.fromarray(data.target_eval.images[0]).save(image)
    assert predict.main(["--run", str(copy), str(image), "--top-k", "1"]) == 0
    best = run.predict(data.target_eval.images[:1], preprocessed=True).argmax()
    assert f"digit {best}" in capsys.readouterr().out
    # Other statistics change the probabilities: the record is what normalises.
    run_folder.write_json(str(record), written | {"mean": [0.2] * 3})
    four = data.target_eval.images[:4]
    shifted = jaxdann.load_run(copy, num_devices=1).predict(four, preprocessed=True)
    assert not np.allclose(shifted, run.predict(four, preprocessed=True), atol=1e-3)
    run_folder.write_json(str(record), {"class_names": "0123"})
    with pytest.raises(DamagedFile, match="model record"):
        jaxdann.load_run(copy)
    assert predict.main(["--run", str(copy), str(image)]) == 1


def snapshot(folder):
    return {
        os.path.join(root, name): os.stat(os.path.join(root, name)).st_mtime_ns
        for root, folders, files in os.walk(folder)
        for name in files + folders
    }


def test_loading_reads_only_and_a_held_folder_is_read(trained):
    """A running training holds its folder: loading neither waits for it nor changes a file."""
    workdir, data = trained
    before = snapshot(workdir)
    with run_folder.held(workdir):
        jaxdann.load_run(workdir, num_devices=2).predict(
            data.target_eval.images[:3], preprocessed=True
        )
    assert snapshot(workdir) == before
