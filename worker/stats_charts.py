"""Charts (PNG bytes) and a short text summary of a :class:`db.stats.StatsReport`, for the
``stats`` job (posted in Discord) and ``hps stats --out``.

Matplotlib runs headless (Agg) through ``Figure`` objects, without pyplot's global state, so
rendering is safe in any thread and leaks no figures. User text (prompts) is drawn literally:
``$`` never starts mathtext.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from db.stats import AgreementBucket, DailyCount, StatsReport
from discord_text import quote_user_text

MAX_LABEL_CHARS = 48
SUMMARY_LIMIT = 1800  # a Discord message holds 2000 characters; leave room for the mention


@dataclass(frozen=True)
class Chart:
    """One rendered chart."""

    filename: str
    png: bytes
    title: str


def _figure(width: float = 7.0, height: float = 3.6) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # glyphs missing from the font (emoji in prompts)
        figure.tight_layout()
        figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _literal(text: str, limit: int = MAX_LABEL_CHARS) -> str:
    """A chart label: shortened, and ``$`` shown as is rather than starting mathtext."""
    return _short(text, limit).replace("$", r"\$")


def filled_days(rows: list[DailyCount]) -> tuple[list[date], list[int]]:
    """Every day from the first to the last row, with 0 where nothing was chosen."""
    if not rows:
        return [], []
    by_day = {row.day: row.choices for row in rows}
    days = [rows[0].day + timedelta(days=i) for i in range((rows[-1].day - rows[0].day).days + 1)]
    return days, [by_day.get(day, 0) for day in days]


def choices_per_day_chart(rows: list[DailyCount]) -> Chart:
    days, counts = filled_days(rows)
    figure = _figure()
    axis = figure.add_subplot()
    axis.bar(days, counts, width=0.9, color="tab:blue")
    axis.set_ylabel("choices")
    axis.set_title("Choices per day (UTC)")
    figure.autofmt_xdate()
    return Chart("choices_per_day.png", _png(figure), "Choices per day")


def images_per_generator_chart(report: StatsReport, limit: int = 12) -> Chart:
    rows = report.images_per_generator[:limit][::-1]
    figure = _figure(height=max(2.4, 0.45 * len(rows) + 1.2))
    axis = figure.add_subplot()
    axis.barh(range(len(rows)), [r.images for r in rows], color="tab:green")
    axis.set_yticks(range(len(rows)), [_literal(r.generator, 32) for r in rows])
    axis.set_xlabel("images")
    axis.set_title("Images per generator")
    return Chart("images_per_generator.png", _png(figure), "Images per generator")


def score_distribution_chart(report: StatsReport) -> Chart:
    figure = _figure()
    axis = figure.add_subplot()
    for dist in report.score_distributions:
        label = f"{_literal(dist.name, 32)} ({dist.status}, n={dist.count})"
        if len(dist.counts) == 1:
            axis.bar([dist.minimum], dist.counts, width=0.5, alpha=0.5, label=label)
        else:
            axis.stairs(dist.counts, dist.edges, fill=True, alpha=0.45, label=label)
    axis.set_xlabel("HPS (100 · cos)")
    axis.set_ylabel("images")
    axis.set_title("Score distribution per model version")
    axis.legend(fontsize="small")
    return Chart("score_distribution.png", _png(figure), "Score distribution")


def agreement_chart(buckets: list[AgreementBucket], period: str) -> Chart:
    figure = _figure()
    axis = figure.add_subplot()
    starts = [b.start for b in buckets]
    axis.plot(starts, [b.agreement for b in buckets], marker="o", label="users agree")
    axis.plot(starts, [b.chance for b in buckets], linestyle="--", color="gray", label="chance 1/n")
    axis.set_ylim(0, 1)
    axis.set_ylabel("share of chooser pairs")
    axis.set_title(f"Agreement between users on the same generation (per {period})")
    axis.legend(loc="lower right")
    figure.autofmt_xdate()
    return Chart("agreement.png", _png(figure), "Agreement")


def top_prompts_chart(report: StatsReport) -> Chart:
    rows = report.top_prompts[::-1]
    figure = _figure(height=max(2.4, 0.45 * len(rows) + 1.2))
    axis = figure.add_subplot()
    labels = [_literal(r.text) for r in rows]
    axis.barh(range(len(rows)), [r.choices for r in rows], color="tab:purple")
    axis.set_yticks(range(len(rows)), labels)
    axis.set_xlabel("choices")
    axis.set_title("Most chosen prompts")
    return Chart("top_prompts.png", _png(figure), "Top prompts")


def render_charts(report: StatsReport) -> list[Chart]:
    """The charts that have data (at most 5, within Discord's 10 files per message)."""
    charts = []
    if report.choices_per_day:
        charts.append(choices_per_day_chart(report.choices_per_day))
    if report.images_per_generator:
        charts.append(images_per_generator_chart(report))
    if report.score_distributions:
        charts.append(score_distribution_chart(report))
    weekly = [b for b in report.agreement_per_week if b.pairs]
    daily = [b for b in report.agreement_per_day if b.pairs]
    if len(weekly) >= 2:
        charts.append(agreement_chart(weekly, "week"))
    elif daily:
        charts.append(agreement_chart(daily, "day"))
    if report.top_prompts:
        charts.append(top_prompts_chart(report))
    return charts


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def summary_text(report: StatsReport) -> str:
    """A few lines for Discord (under 1,800 characters)."""
    t = report.totals
    lines = [
        f"**Dataset**: {t.choices} choices by {t.choosers} users on {t.generations} generations "
        f"({t.images} images, {t.prompts} prompts).",
    ]
    if report.choices_per_day:
        days, counts = filled_days(report.choices_per_day)
        recent = sum(counts[-7:])
        lines.append(
            f"**Choices per day**: {sum(counts) / len(days):.1f} on average over {len(days)} days "
            f"since {days[0].isoformat()}; {recent} in the last {min(7, len(days))} days."
        )
    if report.images_per_generator:
        top = ", ".join(
            f"{quote_user_text(g.generator, 32)} {g.images}"
            for g in report.images_per_generator[:3]
        )
        lines.append(f"**Images per generator**: {top}.")
    overall = report.agreement
    if overall is not None and overall.pairs:
        lines.append(
            f"**Agreement**: {_percent(overall.agreement)} of {overall.pairs} chooser pairs on "
            f"{overall.generations} generations picked the same image (chance "
            f"{_percent(overall.chance)})."
        )
    else:
        lines.append("**Agreement**: no generation has two choosers yet.")
    for dist in report.score_distributions[:3]:
        lines.append(
            f"**Scores of {quote_user_text(dist.name, 40)}** ({dist.status}): {dist.count} images, "
            f"mean {dist.mean:.2f}, range {dist.minimum:.2f} to {dist.maximum:.2f}."
        )
    if report.top_prompts:
        best = report.top_prompts[0]
        prompt = quote_user_text(best.text, 80)  # user text: no pings, no formatting
        lines.append(f"**Most chosen prompt**: “{prompt}” ({best.choices} choices).")
    text = "\n".join(lines)
    return text if len(text) <= SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 1] + "…"
