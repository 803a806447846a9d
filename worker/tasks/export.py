"""The export job (``/hps admin export``, ``hps jobs submit export``): the community's choices
as Pick-a-Pic parquet and HPD JSON with a dataset card, in ``EXPORTS_DIR/export-<job id>``.

Parameters (all optional; ``jobqueue.contracts.ExportParams``): ``formats`` (list or
comma-separated: pickapic, hpd), ``license`` (or ``licence``), ``name``, ``cutoff`` (ISO time;
default: when the job runs), ``guild_id`` (for a job queued without a guild, by the operators:
only that guild's generations; a guild's job always exports its own guild, whatever it says),
``rows_per_shard``, ``jpeg_quality``. A redelivered job writes the same folder again from
scratch (the export is assembled in a hidden folder and renamed into place), so it finishes
once with one result.
"""

from __future__ import annotations

from typing import Any

from discord_text import quote_user_text
from exchange import export as exchange_export
from exchange.export import ExportOptions
from exchange.ids import resolve_user_salt
from jobqueue.contracts import (
    ExportParams,
    ExportPost,
    ExportResult,
    OutboxKind,
    PostedFile,
)
from worker.lifecycle import JobContext, JobOutcome


def _export_guild(context: JobContext[ExportParams]) -> int | None:
    """The guild an export holds: a guild's job exports that guild, whatever its params say;
    the operators' (no guild, or queued for the pooled scope) export the guild their params
    name, else every pooled guild (None)."""
    if not context.scope.is_pooled:
        return context.scope.guild_id
    return context.params.guild_id


def _options(
    params: ExportParams, split_salt: str, user_salt: str, guild_id: int | None
) -> ExportOptions:
    options = ExportOptions(
        split_salt=split_salt,
        user_salt=user_salt,
        formats=params.formats,
        cutoff=params.cutoff,
        guild_id=guild_id,
    )
    if params.chosen_licence:
        options.license = params.chosen_licence
    if params.name:
        options.name = params.name
    if params.rows_per_shard:
        options.rows_per_shard = params.rows_per_shard
    if params.jpeg_quality:
        options.jpeg_quality = params.jpeg_quality
    return options


def export_dataset(context: JobContext[ExportParams]) -> JobOutcome:
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
    payload = ExportPost(
        text=_summary_text(summary),
        files=[PostedFile(sha256=histogram_sha, filename="histogram.png")],
        export_path=str(summary.path),
        counts=summary.counts,
        splits=summary.splits,
        formats=list(summary.formats),
        license=summary.license,
    )
    return JobOutcome(
        ExportResult.model_validate(summary.as_dict()),
        outbox_kind=OutboxKind.export_result,
        outbox_payload=payload,
    )


def _summary_text(summary: Any) -> str:
    """What Discord shows of an export (``exchange.export.ExportSummary``)."""
    counts, splits = summary.counts, summary.splits
    return (
        f"Dataset exported: {counts['choices']:,} choices by {counts['users']:,} users on "
        f"{counts['prompts']:,} prompts ({counts['generations']:,} image sets, "
        f"{counts['images']:,} images); splits by prompt train/validation/test "
        f"{splits['train']['choices']:,}/{splits['validation']['choices']:,}/"
        f"{splits['test']['choices']:,} choices; formats {', '.join(summary.formats)}; "
        f"licence {quote_user_text(summary.license, 100)}. Folder: `{summary.path.name}` on "
        "the worker."
    )
