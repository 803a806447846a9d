"""The export job (``/hps admin export``, ``hps jobs submit export``): the community's choices
as Pick-a-Pic parquet and HPD JSON with a dataset card, in ``EXPORTS_DIR/export-<job id>``.

Parameters (all optional): ``formats`` (list or comma-separated: pickapic, hpd), ``license``
(or ``licence``), ``name``, ``cutoff`` (ISO time; default: when the job runs), ``guild_id``
(for a job queued without a guild, by the operators: only that guild's generations; a guild's
job always exports its own guild, whatever it says), ``rows_per_shard``, ``jpeg_quality``. A
redelivered job writes the same folder again from scratch (the export is assembled in a hidden
folder and renamed into place), so it finishes once with one result.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from discord_text import quote_user_text
from exchange import export as exchange_export
from exchange.card import DEFAULT_LICENSE
from exchange.export import FORMATS, ExportOptions
from exchange.ids import resolve_user_salt
from worker.errors import JobFailure
from worker.lifecycle import JobContext, JobOutcome


def _export_guild(context: JobContext) -> int | None:
    """The guild an export holds: a guild's job exports that guild, whatever its params say;
    the operators' (no guild, or queued for the pooled scope) export the guild their params
    name, else every pooled guild (None)."""
    if not context.scope.is_pooled:
        return context.scope.guild_id
    return int(context.params["guild_id"]) if context.params.get("guild_id") is not None else None


def _options(
    params: dict[str, Any], split_salt: str, user_salt: str, guild_id: int | None
) -> ExportOptions:
    formats = params.get("formats", list(FORMATS))
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise JobFailure(f"unknown export format(s) {unknown or formats}; use pickapic, hpd")
    cutoff = None
    if params.get("cutoff"):
        try:
            cutoff = datetime.fromisoformat(str(params["cutoff"]))
        except ValueError:
            raise JobFailure(f"cutoff {params['cutoff']!r} is not an ISO time") from None
        cutoff = cutoff if cutoff.tzinfo else cutoff.replace(tzinfo=UTC)
    options = ExportOptions(
        split_salt=split_salt,
        user_salt=user_salt,
        formats=tuple(formats),
        license=str(params.get("license") or params.get("licence") or DEFAULT_LICENSE),
        cutoff=cutoff,
        guild_id=guild_id,
    )
    if params.get("name"):
        options.name = str(params["name"])
    if params.get("rows_per_shard"):
        options.rows_per_shard = int(params["rows_per_shard"])
    if params.get("jpeg_quality"):
        options.jpeg_quality = min(max(int(params["jpeg_quality"]), 1), 100)
    return options


def export_dataset(context: JobContext) -> JobOutcome:
    """Run the export job; the outbox payload follows the bot's generic contract (``text``
    and ``files`` stored in the blob store) plus the export path and the counts."""
    rt = context.runtime
    settings = rt.settings
    assert settings.exports_dir is not None
    secret = settings.export_user_salt.get_secret_value() if settings.export_user_salt else None
    options = _options(
        context.params,
        settings.split_salt,
        resolve_user_salt(secret, settings.hps_data_dir),
        _export_guild(context),
    )
    out_dir = settings.exports_dir / f"export-{context.job_id}"
    context.progress(0.0, "starting the export", force=True)

    def progress(done: int, total: int, message: str) -> None:
        context.progress(0.98 * done / total if total else 0.0, f"export: {message}")

    summary = exchange_export.export_dataset(
        rt.factory, rt.store, out_dir, options, progress=progress, overwrite=True
    )
    histogram_sha = rt.store.put(summary.histogram.read_bytes())
    counts = summary.counts
    splits = summary.splits
    text = (
        f"Dataset exported: {counts['choices']:,} choices by {counts['users']:,} users on "
        f"{counts['prompts']:,} prompts ({counts['generations']:,} image sets, "
        f"{counts['images']:,} images); splits by prompt train/validation/test "
        f"{splits['train']['choices']:,}/{splits['validation']['choices']:,}/"
        f"{splits['test']['choices']:,} choices; formats {', '.join(summary.formats)}; "
        f"licence {quote_user_text(summary.license, 100)}. Folder: `{summary.path.name}` on "
        "the worker."
    )
    result = summary.as_dict()
    payload = {
        "text": text,
        "files": [{"sha256": histogram_sha, "filename": "histogram.png"}],
        "export_path": str(summary.path),
        "counts": counts,
        "splits": splits,
        "formats": summary.formats,
        "license": summary.license,
    }
    return JobOutcome(result, outbox_kind="export_result", outbox_payload=payload)
