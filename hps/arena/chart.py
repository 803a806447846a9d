"""The leaderboard as a PNG chart (ratings with their interval whiskers, best at the top, vote
counts in the labels) and as a short plain-text table that fits one Discord message.

Matplotlib runs headless through ``Figure`` objects (no pyplot state), imported inside
:func:`leaderboard_png` so that importing this module stays light. Model names are drawn
literally (``$`` never starts mathtext) and, in the table, cannot break out of its code block.
"""

from __future__ import annotations

import io
import warnings

from hps.arena.ratings import BASE_RATING, Leaderboard, ModelRating

TABLE_LIMIT = 1900  # a Discord message holds 2000 characters; room for a mention or a title
MAX_NAME_CHARS = 28
MAX_CHART_MODELS = 40


def _short(name: str, limit: int = MAX_NAME_CHARS) -> str:
    name = " ".join(name.split())
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _label(model: ModelRating) -> str:
    votes = model.tally.votes
    return f"{_short(model.name)} ({votes} vote{'s' if votes != 1 else ''})".replace("$", r"\$")


def _title(board: Leaderboard) -> str:
    ties = "Davidson ties" if board.method == "davidson" else "ties as half wins"
    return (
        f"Arena leaderboard: Bradley–Terry ({ties}), {board.level:.0%} bootstrap intervals, "
        f"{board.votes} votes"
    )


def leaderboard_png(board: Leaderboard, max_models: int = MAX_CHART_MODELS) -> bytes:
    """A PNG of the top ``max_models`` ratings with their intervals, best at the top."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = board.models[:max_models]
    figure = Figure(figsize=(7.5, 1.2 + 0.35 * max(len(shown), 1)), dpi=110)
    FigureCanvasAgg(figure)
    axis = figure.add_subplot()
    rows = list(range(len(shown)))[::-1]  # the best model on the top row
    ratings = [m.rating for m in shown]
    # A percentile interval need not contain the estimate (few votes, rounding): clip at 0.
    whiskers = [
        [max(0.0, m.rating - m.low) for m in shown],
        [max(0.0, m.high - m.rating) for m in shown],
    ]
    axis.errorbar(ratings, rows, xerr=whiskers, fmt="o", color="tab:blue", ecolor="tab:gray",
                  capsize=3)  # fmt: skip
    axis.axvline(BASE_RATING, color="lightgray", linewidth=0.8, zorder=0)
    axis.set_yticks(rows, [_label(m) for m in shown])
    axis.set_xlabel("rating (1000 = " + (board.anchor or "mean") + ")")
    more = len(board.models) - len(shown)
    title = _title(board) + (f"; {more} more not shown" if more else "")
    axis.set_title(title.replace("$", r"\$"), fontsize=8)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # glyphs missing from the font (emoji in names)
        figure.tight_layout()
        figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _row(model: ModelRating) -> str:
    name = _short(model.name, 24).replace("`", "'")
    t = model.tally
    interval = f"[{model.low:.0f}, {model.high:.0f}]"
    return (
        f"{model.rank:>2} {name:<24} {model.rating:>6.0f} {interval:>13} {t.votes:>6} "
        f"{t.wins}-{t.ties}-{t.losses}"
    )


def leaderboard_text(board: Leaderboard, top: int = 15, limit: int = TABLE_LIMIT) -> str:
    """A plain-text table of the top ``top`` models in a code block, under ``limit``
    characters: rows that do not fit are summed up as "and K more"."""
    header = (
        f" # {'model':<24} {'rating':>6} {f'{board.level:.0%} interval':>13} {'votes':>6} W-T-L"
    )
    lines = [_title(board) + ":", "```", header]
    shown = 0
    for model in board.models[:top]:
        candidate = [*lines, _row(model)]
        if len(_finish(candidate, len(board.models) - shown - 1)) > limit:
            break
        lines, shown = candidate, shown + 1
    if board.unrated:
        lines.append(f"unrated (no votes): {len(board.unrated)}")
    return _finish(lines, len(board.models) - shown)


def _finish(lines: list[str], more: int) -> str:
    tail = [f"... and {more} more"] if more > 0 else []
    return "\n".join([*lines, *tail, "```"])
