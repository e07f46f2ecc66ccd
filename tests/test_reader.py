from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from dcm2tfrec import make_dataset
from dcm2tfrec.config import ConvertConfig, ImageSpec, Window
from dcm2tfrec.convert import convert
from dcm2tfrec.reader import ShardError
from dcm2tfrec.testing import anatomy, ramp

from .helpers import read_shards

N = 23


@pytest.fixture(scope="module")
def shards8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _convert(tmp_path_factory.mktemp("r8"), ImageSpec(width=32, height=24))


@pytest.fixture(scope="module")
def shards16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _convert(
        tmp_path_factory.mktemp("r16"),
        ImageSpec(width=64, height=48, bits=16, window=Window("fixed", 40.0, 400.0)),
    )


def _convert(root: Path, spec: ImageSpec) -> Path:
    from dcm2tfrec.testing import write_dicom

    lines = ["image_id,path,target"]
    for i in range(N):
        pixels = anatomy(48, 64, -1024, 1500, np.int16, i) if i % 2 else ramp(48, 64, -1024, 1500, np.int16)
        write_dicom(
            root / "img" / f"{i}.dcm", pixels, rescale=(1.0, 0.0), modality="CT", windows=[(40.0, 400.0)]
        )
        lines.append(f"id{i:03d},{i}.dcm,{i % 3}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    out = root / "out"
    convert(
        ConvertConfig(
            labels=root / "labels.csv",
            images=root / "img",
            out=out,
            image=spec,
            records_per_shard=5,
            workers=1,
        )
    )
    return out


def _by_id(ds: tf.data.Dataset) -> dict[str, dict]:
    got = {}
    for batch in ds:
        for i, image_id in enumerate(batch["image_id"].numpy()):
            got[image_id.decode()] = {k: v[i].numpy() for k, v in batch.items()}
    return got


def test_round_trip_pixels_and_targets_equal_what_convert_wrote(shards8: Path) -> None:
    expected = {r["image_id"]: r for r in read_shards(shards8)}
    got = _by_id(make_dataset(shards8, batch_size=4, with_features=True))
    assert set(got) == set(expected) and len(got) == N
    for image_id, rec in expected.items():
        assert np.array_equal(got[image_id]["image"], rec["image"])
        assert got[image_id]["target"] == rec["target"]
    images, targets = next(iter(make_dataset(shards8, batch_size=4)))
    assert images.shape == (4, 24, 32, 1) and images.dtype == tf.uint8 and targets.dtype == tf.int64


@pytest.mark.parametrize("how", ["folder", "manifest", "glob", "list"])
def test_every_kind_of_source(shards8: Path, how: str) -> None:
    files = sorted(str(p) for p in shards8.glob("*.tfrec"))
    source = {
        "folder": shards8,
        "manifest": shards8 / "manifest.json",
        "glob": str(shards8 / "train-*.tfrec"),
        "list": files,
    }[how]
    ds = make_dataset(source, batch_size=5)
    assert len(ds) == math.ceil(N / 5)
    assert sum(int(t.shape[0]) for _, t in ds) == N


def test_cardinality_drop_remainder_and_repeat(shards8: Path) -> None:
    assert len(make_dataset(shards8, batch_size=4)) == 6
    ds = make_dataset(shards8, batch_size=4, drop_remainder=True)
    assert len(ds) == 5 and sum(1 for _ in ds) == 5
    assert make_dataset(shards8, batch_size=4, repeat=True).cardinality() == tf.data.INFINITE_CARDINALITY


def test_shuffle_is_seeded_and_deterministic_switch(shards8: Path) -> None:
    def order(**kw):
        return [
            i.decode()
            for b in make_dataset(shards8, batch_size=8, with_features=True, **kw)
            for i in b["image_id"].numpy()
        ]

    a, b = order(shuffle=True, seed=3, deterministic=True), order(shuffle=True, seed=3, deterministic=True)
    assert a == b and sorted(a) == sorted(order()) and a != order()


def test_multi_worker_file_sharding(shards8: Path) -> None:
    seen = []
    for index in range(2):
        ds = make_dataset(shards8, batch_size=50, num_shards=2, index=index, with_features=True)
        ids = [i.decode() for b in ds for i in b["image_id"].numpy()]
        assert len(ds) == 1
        seen.append(set(ids))
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == N
    with pytest.raises(ShardError, match="cannot be split across 9 workers"):
        make_dataset(shards8, num_shards=9)


def test_sixteen_bit_values_and_window_at_read_time(shards16: Path) -> None:
    stored = {r["image_id"]: r["image"] for r in read_shards(shards16)}
    raw = _by_id(make_dataset(shards16, batch_size=8, with_features=True))
    hu = _by_id(make_dataset(shards16, batch_size=8, with_features=True, image_dtype="float32"))
    win = _by_id(make_dataset(shards16, batch_size=8, with_features=True, window=(40.0, 400.0)))
    man = _by_id(make_dataset(shards16, batch_size=8, with_features=True, window="manifest"))
    unit = _by_id(
        make_dataset(shards16, batch_size=8, with_features=True, window="manifest", image_dtype="float32")
    )
    for image_id, png in stored.items():
        assert raw[image_id]["image"].dtype == np.uint16 and np.array_equal(raw[image_id]["image"], png)
        values = png.astype(np.float32) - 32768
        assert np.array_equal(hu[image_id]["image"], values)
        expected = np.clip((values - 39.5) / 399.0 + 0.5, 0, 1)
        assert np.allclose(unit[image_id]["image"], expected, atol=1e-6)
        assert np.abs(win[image_id]["image"].astype(int) - np.rint(expected * 255)).max() <= 1
        assert np.array_equal(win[image_id]["image"], man[image_id]["image"])
    ramp_img = win["id000"]["image"][:, :, 0]
    assert ramp_img[:, 0].max() == 0 and ramp_img[:, -1].min() == 255


def test_bad_dtype_and_window_combinations_are_refused(shards8: Path, shards16: Path) -> None:
    with pytest.raises(ValueError, match="8-bit"):
        make_dataset(shards8, window=(40.0, 400.0))
    with pytest.raises(ValueError, match="give a window"):
        make_dataset(shards16, image_dtype="uint8")


def test_damaged_shards_raise_naming_the_file(shards8: Path, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(shards8, out)
    first = sorted(out.glob("*.tfrec"))[0]
    data = bytearray(first.read_bytes())
    data[len(data) // 2] ^= 0xFF
    first.write_bytes(bytes(data))
    make_dataset(out)  # same size: the cheap default check cannot see a flipped byte ...
    with pytest.raises(ShardError, match=first.name):
        make_dataset(out, check="sha256")  # ... the full check can
    with pytest.raises(tf.errors.DataLossError):
        for _ in make_dataset(out, check="none"):  # and TensorFlow's CRC never skips it silently
            pass
    first.write_bytes(bytes(data[:-10]))
    with pytest.raises(ShardError, match=f"{first.name}: .* bytes, the manifest says"):
        make_dataset(out)
    shutil.copy(shards8 / first.name, first)
    second = sorted(out.glob("*.tfrec"))[1]
    shutil.copy(sorted(out.glob("*.tfrec"))[0], second)
    with pytest.raises(ShardError, match=second.name):
        make_dataset(out, check="sha256")


def test_keras_fits_one_epoch_on_converted_shards(shards8: Path) -> None:
    import keras

    ds = make_dataset(shards8, batch_size=8, shuffle=True, seed=0, image_dtype="float32")
    model = keras.Sequential(
        [
            keras.Input((24, 32, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    history = model.fit(ds, epochs=1, verbose=0)
    assert len(history.history["loss"]) == 1 and np.isfinite(history.history["loss"][0])
