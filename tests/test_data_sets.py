"""`open_set` / `validate_set`: torch datasets over rendered sets of both recipes, multi-target draws, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from test_data_common import built_set, copy_set

from tse_cli.classes import class_index
from tse_cli.data.sets import SetError, detect_recipe, open_set, validate_set


def test_dpm_set_items(tmp_path_factory):
    root = built_set(tmp_path_factory, "dpm-tse", count=3, stems=True)
    ds = open_set(root, "val")
    assert isinstance(ds, torch.utils.data.Dataset) and len(ds) == 3
    item = ds[1]
    assert item["mixture"].shape == (1, 160000) and item["mixture"].dtype == torch.float32
    assert item["target"].shape == (1, 160000) and item["reference"].shape == (1, 160000)
    spec = json.loads((root / "specs/val/val_2.json").read_text())
    assert item["name"] == "val_2" and item["label"] == spec["target"]["cls"] and item["sample_rate"] == 16000
    assert item["query"].shape == (41,) and item["query"].sum() == 1 and item["query"][item["label"]] == 1
    assert (item["onset"], item["offset"]) == (spec["target"]["onset"], spec["target"]["offset"])
    lab = sf.read(str(root / "val/val_2_lab.wav"), dtype="float32")[0]
    np.testing.assert_array_equal(item["target"][0].numpy(), lab)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert batch["mixture"].shape == (2, 1, 160000) and batch["query"].shape == (2, 41)


def test_scene_set_multi_target_draws(tmp_path_factory):
    root = built_set(tmp_path_factory, "waveformer", count=2)
    ds = open_set(root, "train", max_targets=3, seed=1)
    assert len(ds) == 2
    folder = root / "train" / "00000"
    labels = json.loads((folder / "render.json").read_text())["labels"]
    draws = set()
    for epoch in range(12):
        ds.set_epoch(epoch)
        item = ds[0]
        chosen = [lab for lab in labels if item["query"][class_index(lab)] == 1]
        assert 1 <= len(chosen) <= 3 and item["query"].sum() == len(chosen)
        expected = sum(sf.read(str(folder / f"{lab}.wav"), dtype="float32")[0] for lab in chosen)
        np.testing.assert_allclose(item["target"][0].numpy(), expected, atol=1e-6)
        assert class_index(labels[[labels.index(c) for c in chosen][0]]) == item["label"]
        again = ds[0]
        assert torch.equal(again["query"], item["query"])  # same (epoch, index): same draw
        draws.add(tuple(chosen))
    assert len(draws) > 2 and {len(d) for d in draws} >= {1, 2}
    single = open_set(root, "test", max_targets=1)
    assert all(single[i]["query"].sum() == 1 for i in range(len(single)))
    item = single[0]
    assert item["mixture"].shape == (1, 264600) and item["sample_rate"] == 44100
    events = json.loads((root / "test/00000/render.json").read_text())["events"]
    event = next(e for e in events if class_index(e["label"]) == item["label"])
    assert (item["onset"], item["offset"]) == (event["onset"], event["offset"])


def test_recipe_detected_without_recipe_json(tmp_path_factory, tmp_path):
    for recipe, kw in (("dpm-tse", {"stems": True}), ("waveformer", {})):
        root = copy_set(
            built_set(tmp_path_factory, recipe, count=3 if recipe == "dpm-tse" else 2, **kw), tmp_path / recipe
        )
        (root / "recipe.json").unlink()
        assert detect_recipe(root) == recipe
        assert len(open_set(root, "test")) > 0


@pytest.mark.parametrize(
    ("recipe", "damage", "split", "message"),
    [
        ("dpm-tse", lambda r: (r / "val/val_2_lab.wav").unlink(), "val", r"val_2_lab.wav: missing"),
        ("dpm-tse", lambda r: [p.unlink() for p in r.glob("val/*.wav")], "val", r"val_1.wav: missing \(and 8 more\)"),
        ("dpm-tse", lambda r: (r / "meta.csv").write_text("subset,file\n"), "val", r"meta.csv: missing column\(s\)"),
        ("dpm-tse", lambda r: _meta_row(r, "val,val,val_1.wav,44.0,1,2"), "val", r"meta.csv:2: cls 44.0 is not"),
        ("dpm-tse", lambda r: _meta_row(r, "val,val,val_1.wav,x,1,2"), "val", r"meta.csv:2: malformed row"),
        ("dpm-tse", lambda r: _meta_row(r, "train,train,train_1.wav,1.0,1,2"), "val", r"no rows for split 'val'"),
        ("dpm-tse", lambda r: (r / "recipe.json").write_text("{"), "val", r"recipe.json: malformed"),
        ("dpm-tse", lambda r: None, "dev", r"unknown split 'dev'"),
        ("waveformer", lambda r: (r / "test/00001/mixture.wav").unlink(), "test", r"00001/mixture.wav: missing"),
        ("waveformer", lambda r: _first_label_file(r).unlink(), "test", r"00000/[A-Za-z_-]+.wav: missing"),
        ("waveformer", lambda r: (r / "test/00000/render.json").write_text("[]"), "test", r"render.json: malformed"),
        ("waveformer", lambda r: _rm_split(r, "test"), "test", r"no rendered scenes"),
    ],
)
def test_validation_errors_name_the_problem(tmp_path_factory, tmp_path, recipe, damage, split, message):
    kw = {"stems": True} if recipe == "dpm-tse" else {}
    root = copy_set(built_set(tmp_path_factory, recipe, count=3 if recipe == "dpm-tse" else 2, **kw), tmp_path / "s")
    damage(root)
    with pytest.raises(SetError, match=message):
        validate_set(root, split)
    with pytest.raises(SetError, match=message):
        open_set(root, split)


def test_not_a_set(tmp_path):
    with pytest.raises(SetError, match=r"not a folder"):
        validate_set(tmp_path / "nope", "train")
    with pytest.raises(SetError, match=r"not a `tse mix` set"):
        validate_set(tmp_path, "train")


def _meta_row(root, row: str) -> None:
    (root / "meta.csv").write_text("subset,folder,file,cls,onset,offset\n" + row + "\n")


def _first_label_file(root):
    label = json.loads((root / "test/00000/render.json").read_text())["labels"][0]
    return root / "test/00000" / f"{label}.wav"


def _rm_split(root, split: str) -> None:
    import shutil

    shutil.rmtree(root / split)
