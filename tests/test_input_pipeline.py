"""Data order: each source image once per epoch; the target cycles on its own, by (seed, step)."""

import numpy as np
import pytest

from jaxdann import config as config_lib
from jaxdann.data.pipeline import (
    ExperimentData,
    Split,
    describe_fingerprint,
    load_experiment_data,
    shard_stream_indices,
    source_batch_indices,
    steps_per_epoch,
    target_batch_indices,
)


def test_every_source_image_once_per_epoch_with_a_short_last_batch():
    batches = source_batch_indices(50, 16, seed=0, epoch=3, drop_last=False, multiple=4)
    assert len(batches) == 4
    used = np.concatenate([indices[mask > 0] for indices, mask in batches])
    assert sorted(used) == list(range(50))
    assert [int(mask.sum()) for _, mask in batches] == [16, 16, 16, 2]
    assert all(indices.shape == (16,) for indices, _ in batches)
    odd = source_batch_indices(50, 18, seed=0, epoch=0, drop_last=False, multiple=4)
    assert all(indices.shape == (20,) for indices, _ in odd)  # padded to a multiple of 4
    assert sum(int(mask.sum()) for _, mask in odd) == 50


def test_drop_last_and_epoch_orders():
    dropped = source_batch_indices(50, 16, seed=0, epoch=0, drop_last=True)
    assert len(dropped) == 3 and all(mask.all() for _, mask in dropped)
    first = source_batch_indices(50, 16, seed=0, epoch=0, drop_last=False)
    again = source_batch_indices(50, 16, seed=0, epoch=0, drop_last=False)
    later = source_batch_indices(50, 16, seed=0, epoch=1, drop_last=False)
    other_seed = source_batch_indices(50, 16, seed=1, epoch=0, drop_last=False)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0][0], later[0][0])
    assert not np.array_equal(first[0][0], other_seed[0][0])
    with pytest.raises(ValueError, match="fewer than one batch"):
        steps_per_epoch(10, 16, drop_last=True)


def test_target_cycles_through_every_image_independently_of_source_epochs():
    num_target, batch = 23, 8
    stream = np.concatenate(
        [target_batch_indices(num_target, batch, seed=0, global_step=s)[0] for s in range(6)]
    )
    # 48 positions: two full passes (each a permutation) and the start of a third.
    assert sorted(stream[:23]) == list(range(23))
    assert sorted(stream[23:46]) == list(range(23))
    assert not np.array_equal(stream[:23], stream[23:46])
    # A step's batch depends on (seed, step) only: recomputing step 4 alone gives the same rows.
    np.testing.assert_array_equal(
        target_batch_indices(num_target, batch, seed=0, global_step=4)[0], stream[32:40]
    )
    padded, mask = target_batch_indices(num_target, 6, seed=0, global_step=0, multiple=4)
    assert padded.shape == (8,) and mask.tolist() == [1] * 6 + [0, 0]


def test_each_process_streams_through_its_own_shard():
    def rows(step, process=1, processes=2, stream="source", batch=10):
        return shard_stream_indices(
            11,
            batch,
            processes,
            seed=0,
            stream=stream,
            process=process,
            global_step=step,
            padded_size=6,
        )

    # Process 1 of 2 holds 11 rows and supplies 5 of every 10-row global batch (padded to 6).
    steps = [rows(step) for step in range(5)]
    assert all(idx.shape == (6,) and mask.tolist() == [1] * 5 + [0] for idx, mask in steps)
    stream = np.concatenate([idx[:5] for idx, _ in steps])
    assert sorted(stream[:11]) == list(range(11)) and sorted(stream[11:22]) == list(range(11))
    # A step's rows depend on (seed, process, step) only.
    np.testing.assert_array_equal(rows(3)[0], steps[3][0])
    assert not np.array_equal(rows(0, process=0)[0], steps[0][0])
    assert not np.array_equal(rows(0, stream="target")[0], steps[0][0])
    # 5 rows over 2 processes: the extra row alternates, and the stream stays contiguous.
    odd = [[rows(step, process=p, batch=5) for step in range(4)] for p in range(2)]
    assert [[int(mask.sum()) for _, mask in part] for part in odd] == [[3, 2, 3, 2], [2, 3, 2, 3]]
    joined = np.concatenate([idx[: int(mask.sum())] for idx, mask in odd[1]])
    np.testing.assert_array_equal(joined[:10], np.concatenate([idx[:5] for idx, _ in steps])[:10])


def test_shards_of_the_demo_partition_every_split():
    from jaxdann import config as config_lib

    config = config_lib.demo_config()
    whole = load_experiment_data(config)
    shards = [load_experiment_data(config, shard=(index, 2)) for index in range(2)]
    for name in ("source", "target", "target_eval", "validation"):
        full = getattr(whole, name)
        parts = [getattr(shard, name) for shard in shards]
        assert sum(len(part) for part in parts) == len(full)
        np.testing.assert_array_equal(parts[1].images, full.images[1::2])
        np.testing.assert_array_equal(parts[0].labels, full.labels[0::2])
    config.data.limit = 40  # per shard: ceil(40 / 2)
    assert len(load_experiment_data(config, shard=(1, 2)).source) == 20


def _data(images, labels, validation=None):
    split = Split(images, labels)
    return ExperimentData(split, split, split, validation, ("a", "b"), (0.5,) * 3, (0.5,) * 3)


def test_the_fingerprint_changes_with_any_pixel_or_label_and_only_then():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(6, dtype=np.int32) % 2

    base = _data(images, labels).fingerprint
    assert np.array_equal(base, _data(images.copy(), labels.copy()).fingerprint)
    # Labels of another integer type are the same data.
    assert np.array_equal(base, _data(images, labels.astype(np.int64)).fingerprint)
    pixel = images.copy()
    pixel[3, 4, 5, 1] ^= 1
    assert not np.array_equal(base, _data(pixel, labels).fingerprint)
    assert not np.array_equal(base, _data(images, labels[::-1].copy()).fingerprint)
    assert not np.array_equal(base, _data(images[:5], labels[:5]).fingerprint)
    described = describe_fingerprint(base)
    assert described["source"]["images"] == 6 and len(described["source"]["crc32"]) == 8
    assert described["validation"] is None
    with_validation = describe_fingerprint(_data(images, labels, Split(images, labels)).fingerprint)
    assert with_validation["validation"] == described["source"]
    # An empty split (a shard smaller than the process count) has a fingerprint too.
    empty = describe_fingerprint(_data(images[:0], labels[:0]).fingerprint)
    assert empty["source"] == {"images": 0, "crc32": "00000000"}


def test_the_fingerprint_is_computed_once_per_data_object(monkeypatch):
    import zlib

    data = _data(np.zeros((4, 8, 8, 3), np.uint8), np.zeros(4, np.int32))
    calls = []
    real_crc32 = zlib.crc32
    monkeypatch.setattr(zlib, "crc32", lambda *args: calls.append(1) or real_crc32(*args))
    first = data.fingerprint
    assert len(calls) == 2  # images and labels, once: target and target_eval are one split
    assert data.fingerprint is first and len(calls) == 2


def test_the_demo_fingerprint_is_the_same_in_every_load():
    config = config_lib.apply_overrides(config_lib.demo_config(), {"data.limit": "40"})
    first = load_experiment_data(config).fingerprint
    assert np.array_equal(first, load_experiment_data(config).fingerprint)
    other = config_lib.apply_overrides(config, {"data.limit": "39"})
    assert not np.array_equal(first, load_experiment_data(other).fingerprint)
