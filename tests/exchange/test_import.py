"""Import: Pick-a-Pic parquet and HPD JSON into the database, idempotent, with clear errors."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Choice, ChoiceMethod, DiscordUser, Generation, Prompt
from exchange.export import ExportOptions, export_dataset
from exchange.export_pickapic import pickapic_schema
from exchange.importer import ImportOptions, ImportSummary, import_files
from exchange.readers import ImportFormatError
from media.store import LocalImageStore
from tests.exchange.conftest import (
    SPLIT_SALT,
    USER_SALT,
    Community,
    counts,
    empty_database,
)
from tests.factories import noise_image, solid_png

ROOT = Path(__file__).resolve().parents[2]
LIMITS = {"max_image_bytes": 5_000_000, "max_image_pixels": 4_000_000}


def run_import(
    factory: sessionmaker[Session], store: LocalImageStore, paths: list[Path], **options: Any
) -> ImportSummary:
    return import_files(factory, store, paths, ImportOptions(**LIMITS, **options))


def blob_count(store: LocalImageStore) -> int:
    return sum(1 for path in store.root.rglob("*.png"))


def picks_by_prompt(factory: sessionmaker[Session]) -> Counter[tuple[str, int, int | None]]:
    """(prompt, set size, chosen position) of every choice: what an import must keep."""
    from db.models import Image

    with factory() as session:
        sizes = dict(
            session.execute(
                select(Image.generation_id, Image.position).order_by(Image.position)
            ).all()
        )
        positions = dict(session.execute(select(Image.id, Image.position)).all())
        found: Counter[tuple[str, int, int | None]] = Counter()
        for prompt, generation_id, chosen in session.execute(
            select(Prompt.text, Choice.generation_id, Choice.chosen_image_id)
            .join(Generation, Choice.generation_id == Generation.id)
            .join(Prompt, Generation.prompt_id == Prompt.id)
        ):
            found[(prompt, sizes[generation_id] + 1, positions.get(chosen))] += 1
        return found


def test_export_then_import_reproduces_the_counts_and_is_idempotent(
    pg_factory: sessionmaker[Session], store: LocalImageStore, community: Community, tmp_path: Path
) -> None:
    summary = export_dataset(
        pg_factory,
        store,
        tmp_path / "export",
        ExportOptions(SPLIT_SALT, USER_SALT, rows_per_shard=7),
    )
    # What the export holds, before the database is emptied.
    expected = {key: summary.counts[key] for key in ("prompts", "generations", "images")}
    expected |= {"choices": summary.counts["choices"], "users": summary.counts["users"]}
    empty_database(pg_factory)
    imported_store = LocalImageStore(tmp_path / "imported-images")
    parquet = sorted((summary.path / "data").glob("*.parquet"))
    first = run_import(pg_factory, imported_store, parquet)
    assert counts(pg_factory) == expected
    assert first.choices_added == summary.counts["choices"] and first.choices_present == 0
    assert first.generations_added == summary.counts["generations"]
    assert first.ties == summary.counts["skips"] and not first.invalid
    with pg_factory() as session:
        methods = set(session.scalars(select(Choice.method)))
        assert methods == {ChoiceMethod.import_}
        assert all(user_id < 0 for user_id in session.scalars(select(DiscordUser.id)))
        assert all(g < 0 for g in session.scalars(select(Generation.source_message_id)))
        skips = session.scalar(select(Choice.id).where(Choice.chosen_image_id.is_(None)).limit(1))
        assert (skips is not None) == bool(summary.counts["skips"])
    snapshot = picks_by_prompt(pg_factory)
    blobs = blob_count(imported_store)
    assert blobs == summary.counts["images"]

    again = run_import(pg_factory, imported_store, parquet)
    assert again.choices_added == 0 and again.generations_added == 0
    assert again.choices_present == summary.counts["choices"]
    assert again.images_checked == 0  # known generations are not decoded again
    assert counts(pg_factory) == expected
    assert picks_by_prompt(pg_factory) == snapshot
    assert blob_count(imported_store) == blobs

    # Exporting the imported data again gives the same data set.
    second = export_dataset(
        pg_factory, imported_store, tmp_path / "export-2", ExportOptions(SPLIT_SALT, "other")
    )
    assert {k: second.counts[k] for k in summary.counts} == summary.counts
    assert second.splits == summary.splits


def test_hpd_exports_import_too(
    pg_factory: sessionmaker[Session], store: LocalImageStore, community: Community, tmp_path: Path
) -> None:
    summary = export_dataset(
        pg_factory, store, tmp_path / "export", ExportOptions(SPLIT_SALT, USER_SALT)
    )
    empty_database(pg_factory)
    v1 = sorted((summary.path / "hpd").glob("v1_*.json"))
    result = run_import(pg_factory, store, v1)
    assert counts(pg_factory) == {
        "prompts": summary.counts["prompts"],
        "generations": summary.counts["generations"],
        "images": summary.counts["images"],
        "choices": community.picks,
        "users": summary.counts["users"],
    }
    assert result.choices_added == community.picks
    assert run_import(pg_factory, store, v1).choices_added == 0

    empty_database(pg_factory)
    v2 = sorted((summary.path / "hpd").glob("v2_*.json"))
    result = run_import(pg_factory, store, v2)
    assert counts(pg_factory)["generations"] == summary.counts["generations"]
    assert result.records == summary.counts["generations"]  # one ranking per generation


def write_png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    noise_image(seed).save(path, format="PNG")


def test_a_malformed_hpd_record_is_named_and_nothing_of_it_is_imported(
    pg_factory: sessionmaker[Session], store: LocalImageStore, tmp_path: Path
) -> None:
    for seed in range(6):
        write_png(tmp_path / "images" / f"{seed}.png", seed)
    records = [
        {"prompt": "first good", "file_path": ["images/0.png", "images/1.png"],
         "human_preference": 1},
        {"prompt": "the bad one", "file_path": ["images/2.png", "images/3.png"],
         "human_preference": 7},
        {"prompt": "last good", "image_path": ["images/4.png", "images/5.png"],
         "rank": [2, 1]},
    ]  # fmt: skip
    manifest = tmp_path / "hpd.json"
    manifest.write_text(json.dumps(records))
    with pytest.raises(ImportFormatError) as caught:
        run_import(pg_factory, store, [manifest])
    message = str(caught.value)
    assert "hpd.json: record 2" in message and "the bad one" in message
    assert "human_preference 7 is outside 0..1" in message
    with pg_factory() as session:
        assert set(session.scalars(select(Prompt.text))) == {"first good"}
    result = run_import(pg_factory, store, [manifest], skip_invalid=True)
    assert len(result.invalid) == 1 and "record 2" in result.invalid[0]
    assert result.choices_added == 1 and result.choices_present == 1
    with pg_factory() as session:
        assert set(session.scalars(select(Prompt.text))) == {"first good", "last good"}
        chosen = session.execute(
            select(Prompt.text, Choice.chosen_image_id.is_not(None))
            .join(Generation, Generation.prompt_id == Prompt.id)
            .join(Choice, Choice.generation_id == Generation.id)
        ).all()
        assert sorted(chosen) == [("first good", True), ("last good", True)]


def test_bad_images_and_paths_are_refused_naming_the_record(
    pg_factory: sessionmaker[Session], store: LocalImageStore, tmp_path: Path
) -> None:
    folder = tmp_path / "set"
    write_png(folder / "ok.png", 1)
    (folder / "broken.png").write_bytes(solid_png((1, 2, 3))[:40])
    (tmp_path / "outside.png").write_bytes(solid_png((4, 5, 6)))
    cases = {
        "corrupt": ({"prompt": "p", "file_path": ["ok.png", "broken.png"], "human_preference": 0},
                    "image 2 (broken.png) refused"),
        "escape": ({"prompt": "p", "file_path": ["ok.png", "../outside.png"],
                    "human_preference": 0}, "leaves the folder"),
        "missing": ({"prompt": "p", "file_path": ["ok.png", "nope.png"], "human_preference": 0},
                    "not found"),
        "no-label": ({"prompt": "p", "file_path": ["ok.png", "ok.png"]},
                     "needs 'human_preference'"),
        "one-image": ({"prompt": "p", "file_path": ["ok.png"], "human_preference": 0},
                      "2 to 16 images"),
    }  # fmt: skip
    for name, (record, expected) in cases.items():
        manifest = folder / f"{name}.json"
        manifest.write_text(json.dumps([record]))
        with pytest.raises(ImportFormatError, match="record 1") as caught:
            run_import(pg_factory, store, [manifest])
        assert expected in str(caught.value), name
    assert counts(pg_factory)["generations"] == 0
    assert blob_count(store) == 0  # nothing of a refused record is stored
    (folder / "garbage.json").write_text("[{")
    with pytest.raises(ImportFormatError, match=r"garbage\.json: not valid JSON"):
        run_import(pg_factory, store, [folder / "garbage.json"])


def jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    noise_image(seed).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_plain_pick_a_pic_rows_ties_and_bad_labels(
    pg_factory: sessionmaker[Session], store: LocalImageStore, tmp_path: Path
) -> None:
    """Rows as the public Pick-a-Pic has them: one pair per row, no positions."""
    rows = [
        {"caption": "a cat", "jpg_0": jpeg(1), "jpg_1": jpeg(2), "label_0": 1.0, "label_1": 0.0,
         "user_id": 5, "ranking_id": 1, "model_0": "sd-a", "model_1": "sd-b", "has_label": True},
        {"caption": "a dog", "jpg_0": jpeg(3), "jpg_1": jpeg(4), "label_0": 0.5, "label_1": 0.5,
         "user_id": 5, "ranking_id": 2, "model_0": "sd-a", "model_1": "sd-a", "has_label": True},
        {"caption": "unlabeled", "jpg_0": jpeg(5), "jpg_1": jpeg(6), "label_0": 0.0,
         "label_1": 0.0, "user_id": 6, "ranking_id": 3, "model_0": "x", "model_1": "y",
         "has_label": False},
        {"caption": "a cat", "jpg_0": jpeg(1), "jpg_1": jpeg(2), "label_0": 0.0, "label_1": 1.0,
         "user_id": 6, "ranking_id": 4, "model_0": "sd-a", "model_1": "sd-b", "has_label": True},
    ]  # fmt: skip
    path = tmp_path / "train-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    result = run_import(pg_factory, store, [path])
    assert result.unlabeled_rows == 1 and result.ties == 1 and result.choices_added == 3
    assert counts(pg_factory) == {
        "prompts": 2, "generations": 2, "images": 4, "choices": 3, "users": 2,
    }  # fmt: skip
    with pg_factory() as session:
        mixed = session.execute(
            select(Generation.generator, Generation.params).where(Generation.generator != "sd-a")
        ).one()
        assert mixed.generator == "sd-a vs sd-b" and mixed.params["models"] == ["sd-a", "sd-b"]

    bad = tmp_path / "bad.parquet"
    pq.write_table(
        pa.Table.from_pylist([{**rows[0], "ranking_id": 9, "label_0": 0.7, "label_1": 0.3}]), bad
    )
    with pytest.raises(ImportFormatError, match=r"bad.parquet: row 1 \(ranking_id 9\).*0.7"):
        run_import(pg_factory, store, [bad])
    (tmp_path / "columns.parquet").write_bytes(b"")
    pq.write_table(pa.table({"caption": ["x"]}), tmp_path / "columns.parquet")
    with pytest.raises(ImportFormatError, match="missing column"):
        run_import(pg_factory, store, [tmp_path / "columns.parquet"])
    assert pickapic_schema().names[:5] == ["caption", "jpg_0", "jpg_1", "label_0", "label_1"]


def test_dry_run_checks_and_writes_nothing(
    pg_factory: sessionmaker[Session], store: LocalImageStore, tmp_path: Path
) -> None:
    write_png(tmp_path / "a.png", 1)
    write_png(tmp_path / "b.png", 2)
    manifest = tmp_path / "m.json"
    manifest.write_text(
        json.dumps([{"prompt": "p", "file_path": ["a.png", "b.png"], "human_preference": 0}])
    )
    result = run_import(pg_factory, store, [manifest], dry_run=True)
    assert result.records == 1 and result.images_checked == 2 and result.dry_run
    assert counts(pg_factory)["generations"] == 0 and blob_count(store) == 0


def hps_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "STORAGE_URL")}
    environment.update(env)
    environment["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_import_and_export_on_the_embedded_sqlite_defaults(
    pg_factory: sessionmaker[Session], store: LocalImageStore, community: Community, tmp_path: Path
) -> None:
    source = export_dataset(
        pg_factory, store, tmp_path / "source", ExportOptions(SPLIT_SALT, USER_SALT)
    )
    env = {"HPS_DATA_DIR": str(tmp_path / "data"), "SPLIT_SALT": SPLIT_SALT}
    assert hps_cli("db", "upgrade", env=env, cwd=tmp_path).returncode == 0
    imported = hps_cli("import", str(source.path), env=env, cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["choices_added"] == source.counts["choices"]
    out = tmp_path / "again"
    exported = hps_cli(
        "export", "--out", str(out), "--license", "cc0-1.0", "--name", "Test set",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    result = json.loads(exported.stdout)
    assert result["counts"] == source.counts and result["license"] == "cc0-1.0"
    assert "license: cc0-1.0" in (out / "README.md").read_text()
    assert (tmp_path / "data" / "export_user_salt").is_file()  # no EXPORT_USER_SALT: a file
    refused = hps_cli("export", "--out", str(out), env=env, cwd=tmp_path)
    assert refused.returncode == 2 and "exists and is not empty" in refused.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"prompt": "x", "file_path": 3, "human_preference": 0}]))
    failed = hps_cli("import", str(bad), env=env, cwd=tmp_path)
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    assert "bad.json: record 1" in failed.stderr and failed.stderr.strip().count("\n") == 0


def test_image_intake_normalises_imported_images(
    pg_factory: sessionmaker[Session], store: LocalImageStore, tmp_path: Path
) -> None:
    """An RGBA WEBP goes through the intake like any upload: stored as canonical RGB PNG."""
    image = Image.new("RGBA", (20, 10), (10, 200, 30, 128))
    image.save(tmp_path / "a.webp", format="WEBP")
    write_png(tmp_path / "b.png", 3)
    manifest = tmp_path / "m.json"
    manifest.write_text(
        json.dumps([{"prompt": "p", "file_path": ["a.webp", "b.png"], "human_preference": 0}])
    )
    run_import(pg_factory, store, [manifest])
    with pg_factory() as session:
        from db.models import Image as ImageRow

        row = session.scalars(select(ImageRow).where(ImageRow.position == 0)).one()
    stored = Image.open(io.BytesIO(store.get(row.sha256)))
    assert stored.format == "PNG" and stored.mode == "RGB" and (row.width, row.height) == (20, 10)


def test_an_imported_user_who_opted_out_is_not_imported_again(
    pg_factory: sessionmaker[Session], store: LocalImageStore, tmp_path: Path
) -> None:
    """A domain refusal inside a batch: the batch is written again record by record and only
    the refused record is left out (strict mode stops there, naming it)."""
    from db.privacy import opt_out
    from exchange.ids import imported_id

    for seed in range(12):
        write_png(tmp_path / f"{seed}.png", seed)

    def record(n: int, user: str) -> dict[str, Any]:
        return {"prompt": f"prompt {n}", "file_path": [f"{2 * n}.png", f"{2 * n + 1}.png"],
                "human_preference": n % 2, "user_id": user}  # fmt: skip

    first = tmp_path / "first.json"
    first.write_text(json.dumps([record(0, "alice"), record(1, "bob")]))
    run_import(pg_factory, store, [first])
    with pg_factory() as session, session.begin():
        opt_out(session, imported_id("user", "hpd", "bob"))
    second = tmp_path / "second.json"
    second.write_text(
        json.dumps([record(2, "alice"), record(3, "bob"), record(4, "alice"), record(5, "carol")])
    )
    with pytest.raises(ImportFormatError, match=r"second\.json: record 2 .*opted out"):
        run_import(pg_factory, store, [second])
    with pg_factory() as session:
        assert set(session.scalars(select(Prompt.text))) == {"prompt 0", "prompt 1", "prompt 2"}
    result = run_import(pg_factory, store, [second], skip_invalid=True)
    assert len(result.invalid) == 1 and "record 2" in result.invalid[0]
    assert result.choices_added == 2 and result.choices_present == 1
    with pg_factory() as session:
        prompts = set(session.scalars(select(Prompt.text)))
    assert prompts == {"prompt 0", "prompt 1", "prompt 2", "prompt 4", "prompt 5"}
    assert blob_count(store) == 2 * len(prompts)  # the refused record's images were removed
