"""Manifest formats people have, and the evaluation protocol on hand-computed examples."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from hps.evaluation import (
    Comparison,
    bootstrap_interval,
    metrics_of,
    pairwise_rates,
    top1_hits,
    write_report,
)
from hps.training.manifests import ManifestError, PreferenceSet, load_manifest


def png_bytes(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_hpd_v1_manifest(tmp_path: Path) -> None:
    rows = [{"prompt": "a cat", "file_path": ["a.png", "b.png", "c.png"], "human_preference": 2}]
    (tmp_path / "v1.json").write_text(json.dumps(rows))
    [only] = load_manifest(tmp_path / "v1.json")
    assert only.chosen_index == 2 and only.target == (0.0, 0.0, 1.0)
    assert only.images[0] == str(tmp_path / "a.png")


def test_hpd_v2_train_and_test_manifests(tmp_path: Path) -> None:
    rows = [{"prompt": "p", "image_path": ["x.png", "y.png"], "human_preference": [0, 1]}]
    (tmp_path / "train.json").write_text(json.dumps(rows))
    assert load_manifest(tmp_path / "train.json")[0].chosen_index == 1
    ranked = [{"prompt": "p", "image_path": ["a", "b", "c", "d"], "rank": [3, 1, 4, 2]}]
    (tmp_path / "test.json").write_text(json.dumps(ranked))
    [only] = load_manifest(tmp_path / "test.json", image_root="/data/hpd")
    assert only.ranks == (3, 1, 4, 2) and only.chosen_index == 1
    assert only.images[0] == "/data/hpd/a"


def test_pick_a_pic_parquet_keeps_ties_as_soft_labels(tmp_path: Path) -> None:
    table = pa.table(
        {
            "caption": ["a red car", "a blue boat"],
            "jpg_0": [png_bytes((255, 0, 0)), png_bytes((0, 0, 255))],
            "jpg_1": [png_bytes((0, 255, 0)), png_bytes((9, 9, 9))],
            "label_0": [1.0, 0.5],
            "label_1": [0.0, 0.5],
        }
    )
    pq.write_table(table, tmp_path / "pap.parquet")
    picked, tie = load_manifest(tmp_path / "pap.parquet")
    assert picked.chosen_index == 0 and not picked.is_tie
    assert tie.is_tie and tie.target == (0.5, 0.5)
    assert isinstance(tie.images[0], bytes)


def test_bad_manifests_name_the_record(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text(
        '{"prompt": "a", "images": ["x", "y"], "chosen_index": 0}\n{oops\n'
    )
    with pytest.raises(ManifestError, match=r"bad.jsonl:2: not valid JSON"):
        load_manifest(tmp_path / "bad.jsonl")
    (tmp_path / "bad.json").write_text(
        json.dumps([{"prompt": "a", "file_path": ["x", "y"], "human_preference": 5}])
    )
    with pytest.raises(ManifestError, match=r"record 1: bad record .*chosen index 5 outside 0..1"):
        load_manifest(tmp_path / "bad.json")
    with pytest.raises(ManifestError, match="no such manifest"):
        load_manifest(tmp_path / "absent.json")


def make_set(chosen: int, size: int = 4, ranks: tuple[int, ...] | None = None) -> PreferenceSet:
    target = tuple(1.0 if i == chosen else 0.0 for i in range(size))
    return PreferenceSet("p", tuple(f"{i}.png" for i in range(size)), target, ranks=ranks)


def test_top1_and_pairwise_on_hand_computed_examples() -> None:
    sets = [make_set(0), make_set(2), make_set(1, size=2)]
    scores = [[9.0, 1.0, 2.0, 3.0], [5.0, 1.0, 4.0, 0.0], [1.0, 1.0]]
    assert top1_hits(scores, sets) == [1.0, 0.0, 0.0]
    # set 0: chosen beats all 3; set 1: beats 2 of 3; set 2: equal scores count one half.
    assert pairwise_rates(scores, sets) == pytest.approx([1.0, 2 / 3, 0.5])
    ranked = make_set(1, ranks=(3, 1, 4, 2))  # human order: 1 > 3 > 0 > 2
    # model order 0 > 1 > 3 > 2 gets 4 of the 6 pairs right (misses 1-vs-0 and 3-vs-0).
    assert pairwise_rates([[9.0, 8.0, 1.0, 2.0]], [ranked]) == pytest.approx([4 / 6])


def test_ties_are_left_out_and_intervals_bracket_the_mean() -> None:
    tie = PreferenceSet("p", ("a", "b"), (0.5, 0.5))
    assert top1_hits([[1.0, 2.0]], [tie]) == [] and pairwise_rates([[1.0, 2.0]], [tie]) == []
    values = [1.0] * 60 + [0.0] * 40
    low, high = bootstrap_interval(values)
    assert low < 0.6 < high and high - low < 0.25


def test_report_files(tmp_path: Path) -> None:
    sets = [make_set(0), make_set(1)]
    model = metrics_of([[2.0, 1.0, 0.0, 0.0], [0.0, 3.0, 1.0, 1.0]], sets)
    baseline = metrics_of([[0.0, 1.0, 0.0, 0.0], [3.0, 0.0, 1.0, 1.0]], sets)
    json_path, md_path = write_report(Comparison(model, baseline, "candidate", "clip"), tmp_path)
    document = json.loads(json_path.read_text())
    assert document["top1_accuracy"] == 1.0 and document["baseline"]["top1_accuracy"] == 0.0
    assert "| clip (untuned start) | 0.0%" in md_path.read_text()
