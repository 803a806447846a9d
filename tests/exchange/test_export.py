"""Export: Pick-a-Pic parquet + HPD JSON + card, consent enforced, split by prompt, readable
by Hugging Face `datasets` and by the platform's own training readers."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from db.datasets import SPLITS, split_for_prompt
from db.prompts import prompt_hash
from exchange.export import ExportOptions, ExportSummary, export_dataset
from exchange.export_hpd import ranks_from_votes
from exchange.export_pickapic import pairs_for_choice
from exchange.ids import SALT_FILE_NAME, imported_id, pseudonym, resolve_user_salt
from media.store import LocalImageStore
from tests.exchange.conftest import (
    FORGOTTEN,
    OPTED_OUT_REQUESTER,
    OPTED_OUT_VOTER,
    SPLIT_SALT,
    USER_SALT,
    VOTERS,
    Community,
)

ROOT = Path(__file__).resolve().parents[2]


def run_export(
    factory: sessionmaker[Session], store: LocalImageStore, out: Path, **options: Any
) -> ExportSummary:
    return export_dataset(factory, store, out, ExportOptions(SPLIT_SALT, USER_SALT, **options))


def parquet_rows(folder: Path) -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = {}
    for split in SPLITS:
        files = sorted((folder / "data").glob(f"{split}-*-of-*.parquet"))
        assert files, f"no parquet file for {split}"
        rows[split] = [row for path in files for row in pq.read_table(path).to_pylist()]
    return rows


def hpd_records(folder: Path, version: str) -> dict[str, list[dict[str, Any]]]:
    return {
        split: json.loads((folder / "hpd" / f"{version}_{split}.json").read_text())
        for split in SPLITS
    }


@pytest.fixture
def exported(
    pg_factory: sessionmaker[Session],
    store: LocalImageStore,
    community: Community,
    tmp_path: Path,
) -> tuple[ExportSummary, Community]:
    summary = run_export(
        pg_factory, store, tmp_path / "export", row_group_rows=16, rows_per_shard=40
    )
    return summary, community


def test_pairs_and_ranks_rules() -> None:
    assert pairs_for_choice(4, 2) == [
        (0, 2, 0.0, 1.0),
        (1, 2, 0.0, 1.0),
        (2, 3, 1.0, 0.0),
    ]
    assert pairs_for_choice(3, None) == [(0, 1, 0.5, 0.5), (0, 2, 0.5, 0.5), (1, 2, 0.5, 0.5)]
    assert pairs_for_choice(1, 0) == []
    with pytest.raises(ValueError):
        pairs_for_choice(3, 3)
    assert ranks_from_votes([2, 0, 2, 1]) == [1, 4, 1, 3]
    assert ranks_from_votes([1, 0, 0, 0]) == [1, 2, 2, 2]


def test_ids_are_deterministic_negative_and_salted(tmp_path: Path) -> None:
    assert imported_id("user", "hpd", "u1") == imported_id("user", "hpd", "u1") < 0
    assert imported_id("user", "hpd", "u1") != imported_id("user", "pickapic", "u1")
    assert pseudonym("a", "user", 101) != pseudonym("b", "user", 101)
    assert resolve_user_salt("configured", tmp_path) == "configured"
    assert not (tmp_path / SALT_FILE_NAME).exists()
    first = resolve_user_salt(None, tmp_path)
    assert len(first) == 64 and resolve_user_salt(None, tmp_path) == first
    assert oct((tmp_path / SALT_FILE_NAME).stat().st_mode & 0o777) == "0o600"


def test_export_holds_the_community_and_nobody_who_left(
    exported: tuple[ExportSummary, Community],
) -> None:
    summary, community = exported
    folder = summary.path
    assert summary.counts == {
        "prompts": len(community.prompts),
        "generations": community.generations,
        "images": community.images,
        "choices": community.choices,
        "picks": community.picks,
        "skips": community.skips,
        "users": len(community.users),
        "pairs": summary.counts["pairs"],
    }
    rows = [row for split_rows in parquet_rows(folder).values() for row in split_rows]
    assert len(rows) == summary.counts["pairs"]
    allowed_users = {pseudonym(USER_SALT, "user", user) for user in VOTERS}
    assert {row["user_id"] for row in rows} == allowed_users
    for outsider in (OPTED_OUT_VOTER, OPTED_OUT_REQUESTER, FORGOTTEN):
        assert pseudonym(USER_SALT, "user", outsider) not in {row["user_id"] for row in rows}
    assert {row["caption"] for row in rows} == community.prompts
    by_ranking: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_ranking[row["ranking_id"]].append(row)
        assert (row["label_0"], row["label_1"]) in {(1.0, 0.0), (0.0, 1.0), (0.5, 0.5)}
        assert row["has_label"] and row["image_0_position"] < row["image_1_position"]
        assert row["model_0"] == row["model_1"] in {"sdxl-test", "midjourney-test"}
        assert Image.open(io.BytesIO(row["jpg_0"])).format == "JPEG"
    assert len(by_ranking) == community.choices
    ties = [group for group in by_ranking.values() if group[0]["label_0"] == 0.5]
    assert len(ties) == community.skips
    for group in by_ranking.values():
        positions = {p for row in group for p in (row["image_0_position"], row["image_1_position"])}
        size = len(positions)
        if group[0]["best_image_uid"]:
            assert len(group) == size - 1  # chosen vs each other image
            for row in group:
                winner = row["image_0_uid"] if row["label_0"] == 1.0 else row["image_1_uid"]
                assert winner == row["best_image_uid"]
        else:
            assert len(group) == size * (size - 1) // 2
    shards = sorted((folder / "data").glob("train-*.parquet"))
    assert len(shards) > 1 and all(
        p.name.endswith(f"-of-{len(shards):05d}.parquet") for p in shards
    )
    files_of_ranking = defaultdict(set)  # a choice's rows are never split between two files
    for path in (folder / "data").glob("*.parquet"):
        for ranking in pq.read_table(path, columns=["ranking_id"]).column("ranking_id").to_pylist():
            files_of_ranking[ranking].add(path.name)
    assert all(len(names) == 1 for names in files_of_ranking.values())
    per_caption = Counter(row["caption"] for row in rows)
    assert all(row["num_example_per_prompt"] == per_caption[row["caption"]] for row in rows)

    v1 = [record for records in hpd_records(folder, "v1").values() for record in records]
    assert len(v1) == community.picks
    assert {record["user_id"] for record in v1} == allowed_users
    for record in v1:
        assert 0 <= record["human_preference"] < len(record["file_path"])
        assert all((folder / "hpd" / path).is_file() for path in record["file_path"])
    v2 = [record for records in hpd_records(folder, "v2").values() for record in records]
    assert len(v2) == community.generations
    for record in v2:
        assert len(record["rank"]) == len(record["image_path"]) and min(record["rank"]) == 1

    everything = "\n".join(
        path.read_text() for path in folder.rglob("*") if path.suffix in (".json", ".md")
    )
    for hidden in community.hidden_prompts:
        assert hidden not in everything
        assert all(hidden != row["caption"] for row in rows)
    card = (folder / "README.md").read_text()
    assert "license: cc-by-4.0" in card and "opted out" in card
    assert f"| choices | {community.choices:,} |" in card
    assert Image.open(folder / "histogram.png").format == "PNG"
    assert not list(folder.parent.glob(".*partial"))


def test_split_is_by_prompt(exported: tuple[ExportSummary, Community]) -> None:
    summary, _ = exported
    seen: dict[str, set[str]] = defaultdict(set)
    for split, rows in parquet_rows(summary.path).items():
        for row in rows:
            seen[row["caption"]].add(split)
    for version in ("v1", "v2"):
        for split, records in hpd_records(summary.path, version).items():
            for record in records:
                seen[record["prompt"]].add(split)
                paths = record.get("file_path") or record["image_path"]
                assert all(path.startswith(f"images/{split}/") for path in paths)
    assert all(len(splits) == 1 for splits in seen.values())
    for caption, splits in seen.items():
        assert splits == {split_for_prompt(prompt_hash(caption), SPLIT_SALT)}
    assert sum(1 for split in SPLITS if summary.splits[split]["choices"]) >= 2


def test_hugging_face_datasets_loads_the_parquet_offline(
    exported: tuple[ExportSummary, Community], tmp_path: Path
) -> None:
    summary, _ = exported
    code = (
        "import json, sys, datasets\n"
        "folder = sys.argv[1]\n"
        "files = {s: f'{folder}/data/{s}-*.parquet' for s in ('train', 'validation', 'test')}\n"
        "ds = datasets.load_dataset('parquet', data_files=files)\n"
        "by_card = datasets.load_dataset(folder)  # the card's configs name the shards\n"
        "assert {s: by_card[s].num_rows for s in by_card} == {s: ds[s].num_rows for s in ds}\n"
        "print(json.dumps({s: [ds[s].num_rows, ds[s].column_names, str(ds[s].features['jpg_0'])]"
        " for s in ds}))\n"
    )
    env = {
        **os.environ,
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "PYTHONPATH": str(ROOT),
    }
    result = subprocess.run(
        [sys.executable, "-c", code, str(summary.path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    for split in SPLITS:
        rows, columns, jpg_type = loaded[split]
        assert rows == summary.splits[split]["pairs"]
        assert {"caption", "jpg_0", "jpg_1", "label_0", "label_1", "best_image_uid"} <= set(columns)
        assert {"user_id", "model_0", "model_1", "ranking_id", "created_at"} <= set(columns)
        assert {"num_example_per_prompt", "has_label", "image_0_uid", "image_1_uid"} <= set(columns)
        assert "binary" in jpg_type


def test_hps_training_readers_read_both_exports(
    exported: tuple[ExportSummary, Community],
) -> None:
    from hps.training.manifests import load_manifest

    summary, community = exported
    folder = summary.path
    pairs = 0
    for path in sorted((folder / "data").glob("*.parquet")):
        rows = pq.read_table(path).to_pylist()
        sets = load_manifest(path)
        assert len(sets) == len(rows)
        for preference_set, row in zip(sets, rows, strict=True):
            assert preference_set.prompt == row["caption"]
            assert preference_set.target == (row["label_0"], row["label_1"])
            assert preference_set.is_tie == (row["label_0"] == 0.5)
        pairs += len(sets)
    assert pairs == summary.counts["pairs"]
    v1_sets = 0
    for split, records in hpd_records(folder, "v1").items():
        sets = load_manifest(folder / "hpd" / f"v1_{split}.json")
        assert [s.chosen_index for s in sets] == [r["human_preference"] for r in records]
        assert all(Path(str(image)).is_file() for s in sets for image in s.images)
        v1_sets += len(sets)
    assert v1_sets == community.picks
    for split, records in hpd_records(folder, "v2").items():
        sets = load_manifest(folder / "hpd" / f"v2_{split}.json")
        assert [s.ranks for s in sets] == [tuple(r["rank"]) for r in records]


def test_export_is_atomic_and_never_overwrites_by_accident(
    pg_factory: sessionmaker[Session],
    store: LocalImageStore,
    community: Community,
    tmp_path: Path,
) -> None:
    out = tmp_path / "export"
    calls: list[tuple[int, int]] = []

    def stop_midway(done: int, total: int, message: str) -> None:
        calls.append((done, total))
        if done == 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_dataset(
            pg_factory, store, out, ExportOptions(SPLIT_SALT, USER_SALT), progress=stop_midway
        )
    assert not out.exists() and not list(tmp_path.glob(".*partial"))
    assert calls[0] == (0, community.choices)

    first = run_export(pg_factory, store, out, formats=("hpd",))
    assert first.formats == ["hpd"] and not (out / "data").exists()
    assert first.counts["choices"] == community.picks  # HPD cannot say "no preference"
    with pytest.raises(FileExistsError):
        run_export(pg_factory, store, out)
    with pytest.raises(ValueError, match="unknown export format"):
        run_export(pg_factory, store, tmp_path / "other", formats=("csv",))


def test_a_blob_deleted_during_the_export_skips_its_choices(
    pg_factory: sessionmaker[Session],
    store: LocalImageStore,
    community: Community,
    tmp_path: Path,
) -> None:
    with pg_factory() as session:
        from sqlalchemy import select

        from db.models import Choice, Image

        chosen = session.scalar(
            select(Image.sha256).join(Choice, Choice.chosen_image_id == Image.id).limit(1)
        )
    assert chosen is not None
    store.delete(chosen)
    summary = run_export(pg_factory, store, tmp_path / "export")
    assert summary.skipped_missing_images >= 1
    assert summary.counts["choices"] == community.choices - summary.skipped_missing_images


def test_a_guild_export_holds_only_that_guild_and_the_pooled_one_lists_its_guilds(
    pg_factory: sessionmaker[Session],
    store: LocalImageStore,
    community: Community,
    tmp_path: Path,
) -> None:
    from db.ingest import ChoiceIn, GenerationIn, record_choice, record_generation
    from db.models import ChoiceMethod
    from tests.exchange.conftest import GUILD
    from tests.factories import stored_images

    with pg_factory() as session, session.begin():
        other = record_generation(
            session,
            GenerationIn(
                source_message_id=1_400_000_000_000_000_000,
                channel_id=5,
                guild_id=GUILD + 1,
                prompt="a prompt from another server",
                generator="sdxl-test",
                images=stored_images(store, [50_001, 50_002]),
                requester_id=VOTERS[0],
            ),
        )
        record_choice(session, ChoiceIn(VOTERS[1], 0, ChoiceMethod.button, other.generation_id))
    from db.models import Sharing
    from db.scope import set_sharing

    # The other server keeps its data private: the operators' (pooled) export leaves it out.
    pooled = run_export(pg_factory, store, tmp_path / "pooled")
    assert pooled.counts["choices"] == community.choices
    card = (pooled.path / "README.md").read_text()
    assert f"server ids: {GUILD};" in card
    with pg_factory() as session, session.begin():
        set_sharing(session, GUILD + 1, Sharing.pooled)
    everyone = run_export(pg_factory, store, tmp_path / "all")
    assert everyone.counts["choices"] == community.choices + 1
    assert f"server ids: {GUILD}, {GUILD + 1};" in (everyone.path / "README.md").read_text()
    ours = run_export(pg_factory, store, tmp_path / "ours", guild_id=GUILD)
    assert ours.counts["choices"] == community.choices
    assert "a prompt from another server" not in {
        row["caption"] for rows in parquet_rows(ours.path).values() for row in rows
    }
    assert "the generations of one Discord server" in (ours.path / "README.md").read_text()
