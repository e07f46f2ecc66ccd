"""dcm2tfrec.torch.ShardDataset: every record once per epoch across DataLoader workers and ranks,
the same pixels as TensorFlow reads, seeded shuffles, 16-bit windows, volumes; no TensorFlow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dcm2tfrec.cli import cli

from .helpers import convert_args, read_shards, write_rows

torch = pytest.importorskip("torch")

from dcm2tfrec.torch import ShardDataset  # noqa: E402


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("torch")
    labels, images = write_rows(root, 14)
    args = convert_args(labels, images, root / "out", "--size", "24x16", "--records-per-shard", "3")
    assert CliRunner().invoke(cli, [*args, "--class-map", "auto"]).exit_code == 0
    return root / "out"


def _ids(loader) -> list[str]:
    return [i for batch in loader for i in batch["image_id"]]


def test_two_loader_workers_read_every_record_once_with_tensorflows_pixels(out: Path) -> None:
    dataset = ShardDataset(out, with_features=True)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=2)
    seen = {}
    for batch in loader:
        for image_id, image in zip(batch["image_id"], batch["image"], strict=True):
            seen[image_id] = image
    reference = {r["image_id"]: r["image"] for r in read_shards(out)}
    assert sorted(seen) == sorted(reference) and len(dataset) == 14
    for image_id, image in seen.items():
        assert image.shape == (1, 16, 24) and image.dtype == torch.uint8
        assert np.array_equal(image.numpy()[0], reference[image_id][..., 0])
    batch = next(iter(torch.utils.data.DataLoader(ShardDataset(out), batch_size=5)))
    images, targets = batch
    assert images.shape == (5, 1, 16, 24) and targets.dtype == torch.int64


def test_ranks_split_the_files_and_shuffles_are_seeded_per_epoch(out: Path) -> None:
    ranks = [ShardDataset(out, rank=r, world_size=2, with_features=True) for r in (0, 1)]
    parts = [_ids(torch.utils.data.DataLoader(d, batch_size=3, num_workers=2)) for d in ranks]
    assert not set(parts[0]) & set(parts[1]) and len(parts[0]) + len(parts[1]) == 14
    assert [len(d) for d in ranks] == [len(p) for p in parts]

    def epoch(seed: int, number: int) -> list[str]:
        dataset = ShardDataset(out, shuffle=True, seed=seed, shuffle_buffer=4, with_features=True)
        dataset.set_epoch(number)
        return _ids(torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2))

    first = epoch(7, 0)
    assert first == epoch(7, 0) and sorted(first) == sorted(parts[0] + parts[1])
    assert first != epoch(7, 1) and first != epoch(8, 0)


def test_features_float_images_and_class_names(out: Path) -> None:
    item = next(iter(ShardDataset(out, with_features=True, image_dtype="float32")))
    assert item["image"].dtype == torch.float32 and 0.0 <= float(item["image"].min()) <= 1.0
    assert item["class_name"] in ("0", "1") and item["target"].dtype == torch.int64
    assert set(item) >= {"image", "image_id", "target", "height", "width", "channels"}


def test_16_bit_records_windowed_and_volumes_channels_first(tmp_path: Path) -> None:
    from .test_volume import _hu_levels, _series
    from .test_windows import _ct

    labels = _ct(tmp_path)
    sixteen = tmp_path / "sixteen"
    args = convert_args(labels, tmp_path / "img", sixteen, "--bits", "16", "--size", "32")
    args += ["--window", "40,80", "--window", "80,200", "--window", "600,2800"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    hu, _ = next(iter(ShardDataset(sixteen, image_dtype="float32")))
    assert hu.dtype == torch.float32 and float(hu.min()) < 0  # modality values, offset removed
    shown, _ = next(iter(ShardDataset(sixteen, window="manifest")))
    assert shown.shape == (3, 32, 32) and shown.dtype == torch.uint8
    import dcm2tfrec

    reference = next(
        iter(dcm2tfrec.make_dataset(sixteen, batch_size=3, window="manifest", with_features=True))
    )
    first = reference["image_id"].numpy().tolist().index(b"c0")
    mine = {
        item["image_id"]: item["image"]
        for item in ShardDataset(sixteen, window="manifest", with_features=True)
    }
    assert np.array_equal(mine["c0"].numpy(), np.moveaxis(reference["image"].numpy()[first], -1, 0))

    _series(tmp_path / "vol" / "img" / "s", count=5)
    from .helpers import write_labels

    vlabels = write_labels(tmp_path / "vol" / "labels.csv", [{"image_id": "s", "path": "s", "target": 1}])
    vargs = convert_args(vlabels, tmp_path / "vol" / "img", tmp_path / "vol" / "out", "--volume")
    assert CliRunner().invoke(cli, [*vargs, "--window", "550.5,1101", "--size", "32"]).exit_code == 0
    volume, target = next(iter(ShardDataset(tmp_path / "vol" / "out")))
    assert volume.shape == (1, 5, 32, 32) and int(target) == 1
    assert [round(float(volume[0, k].float().mean())) for k in range(5)] == _hu_levels(5)


def test_the_torch_reader_needs_no_tensorflow(out: Path) -> None:
    code = (
        "import sys; sys.modules['tensorflow'] = None\n"
        "from dcm2tfrec.torch import ShardDataset\n"
        f"print(sum(1 for _ in ShardDataset({str(out)!r})))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "14", proc.stderr
