"""Options: one home for defaults and validation, flat CLI-style options, string paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dcm2tfrec.config import Columns, ConvertConfig, ImageSpec, Window, default
from dcm2tfrec.convert import convert
from dcm2tfrec.errors import ConfigError


def test_flat_options_are_parsed_as_the_command_line_parses_them() -> None:
    config = ConvertConfig.from_options(
        labels=Path("l.csv"),
        images="img",
        out="out",
        size="64x48",
        window="40,400",
        channels="3",
        split="train=0.75,val=0.25",
        target_col="cancer",
        extra_cols=["age"],
        dicom_tags=("ViewPosition",),
        path_template=None,
        records_per_shard=5,
    )
    assert (config.labels, config.images, config.out) == ("l.csv", "img", "out")
    assert config.image == ImageSpec(width=64, height=48, window=Window("fixed", 40.0, 400.0), channels=3)
    assert config.columns == Columns(target_col="cancer", extra_cols=("age",))
    assert config.split == (("train", 0.75), ("val", 0.25)) and config.dicom_tags == ("ViewPosition",)
    assert config.records_per_shard == 5 and config.worker_memory == default(ConvertConfig, "worker_memory")


def test_the_command_lines_singular_names_and_a_dict_class_map_work() -> None:
    config = ConvertConfig.from_options(
        labels="l.csv",
        images="img",
        out="out",
        dicom_tag="ViewPosition",
        extra_col=["age", "site"],
        storage_option="anon=true",
        class_map={"benign": 0, "malignant": 1},
    )
    assert config.dicom_tags == ("ViewPosition",) and config.columns.extra_cols == ("age", "site")
    assert config.storage_options == (("anon", "true"),)
    assert json.loads(config.columns.class_map or "") == {"benign": 0, "malignant": 1}
    pairs = ConvertConfig.from_options(
        labels="l.csv", images="img", out="out", storage_options={"anon": True, "endpoint_url": "http://x"}
    )
    assert pairs.storage == {"anon": True, "endpoint_url": "http://x"}


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"sizes": "64"}, r"unknown option\(s\) sizes \(did you mean size\?\)"),
        ({"record_per_shard": 5}, "did you mean records_per_shard"),
        ({"zzz": 1}, r"unknown option\(s\) zzz$"),
        ({"size": "0"}, "--size"),
        ({"bits": 12}, "--bits"),
        ({"window": "40"}, "--window"),
        ({"timeout": 0}, "--timeout"),
        ({"worker_memory": -1}, "--worker-memory"),
    ],
)
def test_bad_options_are_refused_when_the_config_is_built(options: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        ConvertConfig.from_options(labels="l.csv", images="img", out="out", **options)


def test_an_object_store_url_is_refused_not_turned_into_a_local_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "img").mkdir()
    (tmp_path / "l.csv").write_text("image_id,path,target\na,a.dcm,0\n")
    with pytest.raises(ConfigError, match="gs://bucket/x"):
        convert(ConvertConfig("l.csv", "img", "gs://bucket/x"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img", "l.csv"]
