"""What the community collected, in numbers: choices per day, images per generator, score
distributions per model version, agreement between users and the most chosen prompts.

Every query takes a :class:`db.scope.Scope` (a guild's numbers count only that guild) and
applies :mod:`db.consent`'s predicate: choices of users who opted out are not counted, and
neither is anything of a generation whose requester opted out (its prompt is their words).
A *choice* below is a pick of an image; skips are not counted. Days are UTC calendar days
(weeks start on Monday). Every function works on PostgreSQL and on the embedded SQLite.

Agreement: for each generation of at least two images picked by at least two users, every pair
of those users either picked the same image or did not. The agreement of a set of generations
is the share of agreeing pairs among all their pairs (pooled, so a generation with many choosers
weighs more). If every user picked uniformly at random among the n images, two users would
agree with probability 1/n; ``chance`` is that expectation pooled over the same pairs, so
agreement well above chance means the community shares a taste the model can learn (the HPS
paper measured 42% top-1 human agreement on 4 images against 25% chance).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Date, Float, Integer, Select, case, cast, func, select
from sqlalchemy.orm import Session

from db.models import Choice, Generation, Image, ModelStatus, ModelVersion, Prompt
from db.models import Score as ScoreRow
from db.scope import Scope

Period = Literal["all", "day", "week"]


@dataclass(frozen=True)
class DailyCount:
    """Choices recorded on one UTC day."""

    day: date
    choices: int


@dataclass(frozen=True)
class GeneratorCount:
    """Generations and images harvested from one generator (bot id or model name)."""

    generator: str
    generations: int
    images: int


@dataclass(frozen=True)
class ScoreDistribution:
    """Scores of one model version: summary and a histogram (``counts[i]`` scores fall in
    ``[edges[i], edges[i + 1])``, the last bin closed)."""

    model_version_id: int
    name: str
    status: str
    count: int
    mean: float
    minimum: float
    maximum: float
    edges: list[float]
    counts: list[int]


@dataclass(frozen=True)
class AgreementBucket:
    """Agreement among the choosers of the generations created in one period (``start`` is
    the day or the Monday of the week; None for all time)."""

    start: date | None
    generations: int
    pairs: int
    agreeing_pairs: int
    chance_pairs: float

    @property
    def agreement(self) -> float | None:
        """Share of chooser pairs who picked the same image."""
        return self.agreeing_pairs / self.pairs if self.pairs else None

    @property
    def chance(self) -> float | None:
        """The share expected if everyone picked at random (pooled 1/n)."""
        return self.chance_pairs / self.pairs if self.pairs else None


@dataclass(frozen=True)
class PromptCount:
    """A prompt with the choices made on its generations."""

    prompt_id: int
    text: str
    choices: int
    generations: int


@dataclass(frozen=True)
class Totals:
    """Counts of what may be shown (consent applied)."""

    prompts: int
    generations: int
    images: int
    choices: int
    choosers: int


@dataclass
class StatsReport:
    """Everything :func:`collect_stats` gathers, for charts and summaries."""

    generated_at: datetime
    since: datetime | None
    totals: Totals
    choices_per_day: list[DailyCount] = field(default_factory=list)
    images_per_generator: list[GeneratorCount] = field(default_factory=list)
    score_distributions: list[ScoreDistribution] = field(default_factory=list)
    agreement: AgreementBucket | None = None
    agreement_per_day: list[AgreementBucket] = field(default_factory=list)
    agreement_per_week: list[AgreementBucket] = field(default_factory=list)
    top_prompts: list[PromptCount] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (dates as ISO strings, agreement ratios included)."""

        def bucket(b: AgreementBucket) -> dict[str, Any]:
            return {
                **_iso(asdict(b)),
                "agreement": b.agreement,
                "chance": b.chance,
            }

        return {
            "generated_at": self.generated_at.isoformat(),
            "since": self.since.isoformat() if self.since else None,
            "totals": asdict(self.totals),
            "choices_per_day": [_iso(asdict(row)) for row in self.choices_per_day],
            "images_per_generator": [asdict(row) for row in self.images_per_generator],
            "score_distributions": [asdict(row) for row in self.score_distributions],
            "agreement": bucket(self.agreement) if self.agreement else None,
            "agreement_per_day": [bucket(b) for b in self.agreement_per_day],
            "agreement_per_week": [bucket(b) for b in self.agreement_per_week],
            "top_prompts": [asdict(row) for row in self.top_prompts],
        }


def _iso(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, date) else v for k, v in row.items()}


# --- dialect helpers and the visible picks ---


def _is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _utc_day(session: Session, column: Any) -> Any:
    if _is_postgresql(session):
        return cast(func.timezone("UTC", column), Date)
    return func.date(column)


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def _visible_picks(scope: Scope) -> Any:
    """Picks (not skips) that ``scope`` may count (its generations, consent applied), joined
    to their generation."""
    return (
        select()
        .select_from(Choice)
        .join(Generation, Generation.id == Choice.generation_id)
        .where(Choice.chosen_image_id.is_not(None), scope.choices())
    )


# --- the queries ---


def row_counts(session: Session, scope: Scope | None = None) -> dict[str, int]:
    """Row counts of the main tables: what an admin checks first. With ``scope``, what
    belongs to it (its generations with their images and choices, the users who requested or
    chose there, its prompts, model versions and jobs), consent not applied (these are rows
    held, not data used); without, whole tables (the operators' CLI)."""
    from db.models import DiscordUser, Job

    if scope is None:
        tables: dict[str, Any] = {
            "generations": Generation,
            "images": Image,
            "choices": Choice,
            "users": DiscordUser,
            "model_versions": ModelVersion,
            "prompts": Prompt,
            "jobs": Job,
        }
        return {
            name: int(session.scalar(select(func.count()).select_from(model)) or 0)
            for name, model in tables.items()
        }
    owned = scope.owns_generation()
    generations = select(Generation.id).where(owned)
    requesters = select(Generation.requester_id).where(owned, Generation.requester_id.is_not(None))
    choosers = select(Choice.user_id).where(Choice.generation_id.in_(generations))
    users = requesters.union(choosers).subquery()
    queries: dict[str, Any] = {
        "generations": select(func.count()).select_from(Generation).where(owned),
        "images": select(func.count(Image.id)).where(Image.generation_id.in_(generations)),
        "choices": select(func.count(Choice.id)).where(Choice.generation_id.in_(generations)),
        "users": select(func.count()).select_from(users),
        "model_versions": select(func.count(ModelVersion.id)).where(scope.owns_model()),
        "prompts": select(func.count(func.distinct(Generation.prompt_id))).where(owned),
        "jobs": select(func.count(Job.id)).where(scope.guild_condition(Job.guild_id)),
    }
    return {name: int(session.scalar(query) or 0) for name, query in queries.items()}


def totals(session: Session, scope: Scope) -> Totals:
    """Prompts, generations and images that may be shown, picks, and distinct choosers."""
    generations = session.execute(
        select(
            func.count(func.distinct(Generation.prompt_id)),
            func.count(Generation.id),
        ).where(scope.generations())
    ).one()
    images = session.scalar(
        select(func.count(Image.id))
        .join(Generation, Generation.id == Image.generation_id)
        .where(scope.generations())
    )
    picks = session.execute(
        _visible_picks(scope).add_columns(
            func.count(Choice.id), func.count(func.distinct(Choice.user_id))
        )
    ).one()
    return Totals(
        prompts=int(generations[0]),
        generations=int(generations[1]),
        images=int(images or 0),
        choices=int(picks[0]),
        choosers=int(picks[1]),
    )


def choices_per_day(
    session: Session, scope: Scope, *, since: datetime | None = None, until: datetime | None = None
) -> list[DailyCount]:
    """Picks per UTC day of their recording (``Choice.created_at``), oldest first; days
    without picks are absent (charts fill them). ``since``/``until`` bound the times."""
    day = _utc_day(session, Choice.created_at).label("day")
    query = (
        _visible_picks(scope).add_columns(day, func.count(Choice.id)).group_by(day).order_by(day)
    )
    if since is not None:
        query = query.where(Choice.created_at >= since)
    if until is not None:
        query = query.where(Choice.created_at < until)
    return [DailyCount(_as_date(d), int(n)) for d, n in session.execute(query)]


def images_per_generator(
    session: Session, scope: Scope, *, limit: int | None = None
) -> list[GeneratorCount]:
    """Generations and images per generator, most images first (ties by name)."""
    image_count = func.count(Image.id)
    query = (
        select(Generation.generator, func.count(func.distinct(Generation.id)), image_count)
        .select_from(Generation)
        .outerjoin(Image, Image.generation_id == Generation.id)
        .where(scope.generations())
        .group_by(Generation.generator)
        .order_by(image_count.desc(), Generation.generator)
    )
    if limit is not None:
        query = query.limit(limit)
    return [GeneratorCount(str(g), int(n), int(i)) for g, n, i in session.execute(query)]


def score_distributions(
    session: Session,
    scope: Scope,
    *,
    bins: int = 20,
    model_version_ids: Sequence[int] | None = None,
    max_versions: int = 6,
) -> list[ScoreDistribution]:
    """Score histograms of the model versions that scored images (the active version first,
    then the newest), each with ``bins`` equal-width bins between its own min and max."""
    if bins < 1:
        raise ValueError("bins must be at least 1")
    scored = _scored_versions(scope, model_version_ids, max_versions)
    found = []
    for version_id, name, status, count, mean, low, high in session.execute(scored).all():
        low, high = float(low), float(high)
        if high > low:
            edges, counts = _score_histogram(session, scope, version_id, low, high, bins)
        else:
            edges, counts = [low, high], [int(count)]
        found.append(
            ScoreDistribution(
                model_version_id=int(version_id),
                name=str(name),
                status=str(getattr(status, "value", status)),
                count=int(count),
                mean=float(mean),
                minimum=low,
                maximum=high,
                edges=edges,
                counts=counts,
            )
        )
    return found


def _scored_versions(
    scope: Scope, model_version_ids: Sequence[int] | None, max_versions: int
) -> Select[Any]:
    """Per model version that scored images of ``scope``: id, name, status, count, mean,
    min and max of its scores (the active version first, then the newest)."""
    scored = (
        select(
            ModelVersion.id,
            ModelVersion.name,
            ModelVersion.status,
            func.count(ScoreRow.id),
            func.avg(ScoreRow.score),
            func.min(ScoreRow.score),
            func.max(ScoreRow.score),
        )
        .join(ScoreRow, ScoreRow.model_version_id == ModelVersion.id)
        .join(Image, Image.id == ScoreRow.image_id)
        .join(Generation, Generation.id == Image.generation_id)
        .where(scope.generations(), scope.may_use_model())
        .group_by(ModelVersion.id, ModelVersion.name, ModelVersion.status)
        .order_by(
            case((ModelVersion.status == ModelStatus.active, 0), else_=1), ModelVersion.id.desc()
        )
        .limit(max_versions)
    )
    if model_version_ids is not None:
        scored = scored.where(ModelVersion.id.in_(list(model_version_ids)))
    return scored


def _score_histogram(
    session: Session, scope: Scope, version_id: int, low: float, high: float, bins: int
) -> tuple[list[float], list[int]]:
    """Bin edges and counts of one version's scores (``high > low``), counted in the database."""
    width = (high - low) / bins
    edges = [low + width * i for i in range(bins)] + [high]
    position = (ScoreRow.score - low) * bins / (high - low)
    floored = (
        cast(func.floor(position), Integer)
        if _is_postgresql(session)
        else cast(position, Integer)  # non-negative: truncation is floor
    )
    bucket = case((floored >= bins, bins - 1), else_=floored).label("bucket")
    counts = [0] * bins
    rows = session.execute(
        select(bucket, func.count())
        .select_from(ScoreRow)
        .join(Image, Image.id == ScoreRow.image_id)
        .join(Generation, Generation.id == Image.generation_id)
        .where(ScoreRow.model_version_id == version_id, scope.generations())
        .group_by(bucket)
    )
    for index, n in rows:
        counts[min(max(int(index), 0), bins - 1)] += int(n)
    return edges, counts


def agreement_per_day(
    session: Session, scope: Scope, *, since: datetime | None = None
) -> list[AgreementBucket]:
    """Agreement among choosers, per UTC day of the generations' creation, oldest first; only
    generations of at least two images with at least two choosers count."""
    per_image = (
        _visible_picks(scope)
        .add_columns(
            Choice.generation_id.label("generation_id"),
            Choice.chosen_image_id.label("image_id"),
            func.count(Choice.id).label("n"),
        )
        .group_by(Choice.generation_id, Choice.chosen_image_id)
    )
    if since is not None:
        per_image = per_image.where(Generation.created_at >= since)
    per_image_q = per_image.subquery()
    per_generation = (
        select(
            per_image_q.c.generation_id,
            func.sum(per_image_q.c.n).label("k"),
            func.sum(per_image_q.c.n * (per_image_q.c.n - 1) // 2).label("same"),
        )
        .group_by(per_image_q.c.generation_id)
        .having(func.sum(per_image_q.c.n) >= 2)
        .subquery()
    )
    sizes = (
        select(Image.generation_id.label("generation_id"), func.count(Image.id).label("n"))
        .group_by(Image.generation_id)
        .subquery()
    )
    pairs = per_generation.c.k * (per_generation.c.k - 1) // 2
    day = _utc_day(session, Generation.created_at).label("day")
    query = (
        select(
            day,
            func.count(),
            func.sum(pairs),
            func.sum(per_generation.c.same),
            func.sum(cast(pairs, Float) / sizes.c.n),
        )
        .select_from(per_generation)
        .join(Generation, Generation.id == per_generation.c.generation_id)
        .join(sizes, sizes.c.generation_id == per_generation.c.generation_id)
        .where(sizes.c.n >= 2)
        .group_by(day)
        .order_by(day)
    )
    return [
        AgreementBucket(_as_date(d), int(g), int(p), int(s), float(c))
        for d, g, p, s, c in session.execute(query)
    ]


def merge_agreement(buckets: Iterable[AgreementBucket], start: date | None) -> AgreementBucket:
    """Pool several buckets into one starting at ``start``."""
    rows = list(buckets)
    return AgreementBucket(
        start,
        sum(b.generations for b in rows),
        sum(b.pairs for b in rows),
        sum(b.agreeing_pairs for b in rows),
        sum(b.chance_pairs for b in rows),
    )


def agreement(
    session: Session, scope: Scope, *, period: Period = "all", since: datetime | None = None
) -> list[AgreementBucket]:
    """Agreement among choosers: one bucket for all time (``period="all"``, with zero pairs
    when there is nothing to compare yet), or one per day or per week (Monday) with data."""
    daily = agreement_per_day(session, scope, since=since)
    if period == "day":
        return daily
    if period == "week":
        return _weekly(daily)
    return [merge_agreement(daily, None)]


def top_prompts(
    session: Session, scope: Scope, *, limit: int = 10, since: datetime | None = None
) -> list[PromptCount]:
    """The prompts whose generations received the most picks (ties: fewer generations, then
    the older prompt first)."""
    picks = func.count(Choice.id)
    generations = func.count(func.distinct(Generation.id))
    query = (
        _visible_picks(scope)
        .add_columns(Prompt.id, Prompt.text, picks, generations)
        .join(Prompt, Prompt.id == Generation.prompt_id)
        .group_by(Prompt.id, Prompt.text)
        .order_by(picks.desc(), generations, Prompt.id)
        .limit(limit)
    )
    if since is not None:
        query = query.where(Choice.created_at >= since)
    return [PromptCount(int(i), str(t), int(c), int(g)) for i, t, c, g in session.execute(query)]


def collect_stats(
    session: Session,
    scope: Scope,
    *,
    since: datetime | None = None,
    top: int = 10,
    bins: int = 20,
    now: datetime | None = None,
) -> StatsReport:
    """Every statistic at once. ``since`` limits the time series (choices per day, agreement
    per day and week); totals, generators, score distributions, the overall agreement and the
    top prompts cover all time. Run it in one transaction (repeatable read on PostgreSQL if
    the numbers must agree exactly while data keeps arriving)."""
    from db.models import utcnow

    daily_agreement = agreement_per_day(session, scope, since=since)
    return StatsReport(
        generated_at=now or utcnow(),
        since=since,
        totals=totals(session, scope),
        choices_per_day=choices_per_day(session, scope, since=since),
        images_per_generator=images_per_generator(session, scope),
        score_distributions=score_distributions(session, scope, bins=bins),
        agreement=(
            merge_agreement(daily_agreement, None)
            if since is None
            else agreement(session, scope)[0]
        ),
        agreement_per_day=daily_agreement,
        agreement_per_week=_weekly(daily_agreement),
        top_prompts=top_prompts(session, scope, limit=top),
    )


def _weekly(daily: list[AgreementBucket]) -> list[AgreementBucket]:
    weeks: dict[date, list[AgreementBucket]] = {}
    for bucket in daily:
        assert bucket.start is not None
        weeks.setdefault(bucket.start - timedelta(days=bucket.start.weekday()), []).append(bucket)
    return [merge_agreement(rows, monday) for monday, rows in sorted(weeks.items())]
