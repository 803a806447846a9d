"""Per-guild queries on PostgreSQL with many guilds: the ``/hps score`` percentile and a
guild's training snapshot, against baselines run in the same process on the same data.

    .venv/bin/python -m bench.guilds [--choices 1000000] [--guilds 100] [--calls 200]
                                     [--sample-min N] [--url URL] [--keep] [--no-plans]
                                     [--json]

Creates its own database (``hps_bench_guilds`` by default, migrated to head by
``migrations.runner.upgrade``), loads it with ``INSERT ... SELECT generate_series`` (no ORM),
runs ``VACUUM ANALYZE`` and drops it at the end (``--keep`` leaves it). The data:
``choices / 4`` generations of 4 images, 4 choices on each (5 % skips) by ``choices / 50``
users (3 % opted out), one prompt per generation; the generations spread over ``guilds``
guilds by a Zipf law (guild k gets a share proportional to 1/k: a few big guilds, a long tail;
interleaved in id order, as traffic is); every image scored by the active global HPS version,
and the images of the two biggest guilds also by their own guild version, each score with its
``sample = image_id % 16`` as ``db.scores.store_scores`` writes it; three guilds in four pool
their data. The schema is the product's (migration 0004: the percentile index on (version,
guild, sample, score, requester) and the partial index of the opted-out users).

Measured:
(a) ``db.scores.percentiles(session, global_version, 4 values, Scope.guild(g))`` for the
    biggest, the median and the smallest guild: median and p95 of ``--calls`` calls, each
    checked to be one statement (SQLAlchemy ``before_cursor_execute`` events), and whether the
    guild is counted from its sample 0 (at least ``db.scores.SAMPLED_PERCENTILE_MIN``
    consented scores there; ``--sample-min`` overrides it for the run) or exactly; baseline:
    the same exact counts without the denormalised ``scores.guild_id`` (scores -> images ->
    generations filtered by ``generations.guild_id``, same consent predicate), fewer calls;
    every answer checked against a plain exact count (equal, unless sampled);
(b) ``db.datasets.iter_choice_sets(session, scope=Scope.guild(g), salt=...)`` streamed to the
    end for those guilds, in rows/s, against the whole pooled set (``Scope.pooled()``);
(c) ``EXPLAIN (ANALYZE, BUFFERS)`` of the exact statements (captured from the calls) of the
    percentile and of the snapshot's main query (the latter also with ``random_page_cost =
    1.1``, an SSD setting), and the indexes each plan uses;
(d) a sweep: ``--sweep-calls`` percentile calls for every guild, how many stay under 10 ms;
(e) the accuracy of the sampled guilds' percentiles: for every guild counted from its sample,
    ``percentiles()`` against a plain exact count (every consented score of the guild) at a
    few values spread over the score distribution: the largest absolute error in percentile
    points, next to the sample's standard error at the median (50 / sqrt(sample)).
Target: the percentile is one round trip under 10 ms (p95) for every guild.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy import Engine, and_, event, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

import db.scores
from db.consent import user_consents
from db.datasets import iter_choice_sets
from db.engine import make_engine, make_session_factory
from db.models import Generation, Image, Score
from db.scope import Scope
from db.scores import SCORE_SAMPLES, percentiles
from migrations.runner import upgrade

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/hps_bench_guilds"
GUILD_BASE = 900_000_000_000_000_000
USER_BASE = 300_000_000_000_000_000
MESSAGE_BASE = 1_300_000_000_000_000_000
CHANNEL_BASE = 950_000_000_000_000_000
IMAGES_PER_GENERATION = 4
CHOICES_PER_GENERATION = 4
USERS_PER_CHOICES = 50  # ~20k users for 1M choices
OPTED_OUT_EVERY = 33  # ~3 % of users opted out
SKIP_PERCENT = 5
SLOTS = 100_000  # resolution of the guild-size law
SALT = "bench-guilds"
TARGET_MS = 10.0
INDEXES = ("ix_scores_version_guild_score", "ix_generations_guild_id")
# Values at which the sampled percentiles are checked against exact counts: the scores are
# about 21 +- 1 (18..24), so these fall between the 2nd and the 98th percentile.
ACCURACY_VALUES = (19.0, 20.0, 20.5, 21.0, 21.5, 22.0, 23.0)


# -- database ------------------------------------------------------------------------------
def libpq(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    name = make_url(url).database
    with psycopg.connect(libpq(url, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def recreate_database(url: str) -> None:
    drop_database(url)
    with psycopg.connect(libpq(url, "postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{make_url(url).database}"')
    upgrade(url)


@dataclass
class Dataset:
    generations: int
    images: int
    choices: int
    users: int
    opted_out: int
    scores: int
    sample0_scores: int  # scores with sample = 0 (all versions)
    global_version: int
    guild_versions: dict[int, int]  # guild -> its active version
    guild_sizes: dict[int, int]  # guild -> generations, biggest first
    pooled_guilds: int
    load_s: float


def guild_shares(guilds: int) -> list[int]:
    """Slots (out of SLOTS) per guild, biggest first: Zipf, every guild at least one slot."""
    weights = [1.0 / (k + 1) for k in range(guilds)]
    total = sum(weights)
    slots = [max(1, math.floor(SLOTS * w / total)) for w in weights]
    slots[0] += SLOTS - sum(slots)
    return slots


LOAD_SQL = [
    # users: ~3 % opted out
    """INSERT INTO discord_users (id, opted_out, opted_out_at, created_at)
       SELECT {user_base} + u, u % {opted_every} = 0,
              CASE WHEN u % {opted_every} = 0 THEN now() END, now()
       FROM generate_series(1, {users}) AS u""",
    """INSERT INTO prompts (id, text, normalized_hash, created_at)
       SELECT g, 'bench prompt ' || g || ', a lighthouse in a storm, oil painting',
              md5(g::text) || md5('h' || g), now()
       FROM generate_series(1, {generations}) AS g""",
    # each generation falls in a guild slot by a hash of its id (guilds interleave in id order)
    """INSERT INTO generations (id, source_message_id, guild_id, channel_id, prompt_id,
                                requester_id, generator, params, created_at)
       SELECT g, {message_base} + g, s.guild_id, {channel_base} + s.guild_id % 1000, g,
              {user_base} + 1 + abs(hashint4(g + 7)) % {users}, 'bench', '{{}}'::jsonb,
              now() - make_interval(secs => {generations} - g)
       FROM generate_series(1, {generations}) AS g
       JOIN bench_slots AS s ON s.slot = abs(hashint4(g)) % {slots}""",
    """INSERT INTO images (id, generation_id, position, sha256, storage_key, width, height,
                           phash, seed, created_at)
       SELECT (g - 1) * {per_gen} + p + 1, g, p, md5(g || ':' || p) || md5(p || ':' || g),
              'images/' || md5(g || ':' || p), 512, 512, '8f3a0c1b2d4e6f70', p, now()
       FROM generate_series(1, {generations}) AS g, generate_series(0, {per_gen} - 1) AS p""",
    # CHOICES_PER_GENERATION distinct users per generation; ~5 % skips (no image chosen)
    """INSERT INTO choices (id, generation_id, user_id, chosen_image_id, method,
                            created_at, updated_at)
       SELECT (g - 1) * {choices_per_gen} + j + 1, g,
              {user_base} + 1 + (g * 37 + j * ({users} / {choices_per_gen})) % {users},
              CASE WHEN abs(hashint4(g * 8 + j)) % 100 < {skip}
                   THEN NULL
                   ELSE (g - 1) * {per_gen} + abs(hashint4(g * 8 + j + 3)) % {per_gen} + 1
              END,
              'button', now() - make_interval(secs => {generations} - g),
              now() - make_interval(secs => {generations} - g)
       FROM generate_series(1, {generations}) AS g,
            generate_series(0, {choices_per_gen} - 1) AS j""",
    """INSERT INTO model_versions (id, kind, guild_id, name, checkpoint_key, architecture,
                                   status, metrics, trained_on, created_at)
       VALUES (1, 'hps', NULL, 'hps-global', 'models/global', 'hps-v1', 'active',
               '{{}}', '{{}}', now())""",
    """INSERT INTO model_versions (id, kind, guild_id, name, checkpoint_key, architecture,
                                   status, metrics, trained_on, created_at)
       SELECT 1 + rank, 'hps', guild_id, 'hps-guild-' || rank, 'models/guild-' || rank,
              'hps-v1', 'active', '{{}}', '{{}}', now()
       FROM bench_guilds WHERE rank <= 2""",
    # every image scored by the global version: scores carry their generation's guild and
    # requester, as db.scores.store_scores writes them
    """INSERT INTO scores (image_id, model_version_id, score, guild_id, requester_id, sample,
                           created_at)
       SELECT i.id, 1, 18 + 6 * (random() + random() + random()) / 3, g.guild_id,
              g.requester_id, i.id % {samples}, now()
       FROM images AS i JOIN generations AS g ON g.id = i.generation_id""",
    """INSERT INTO scores (image_id, model_version_id, score, guild_id, requester_id, sample,
                           created_at)
       SELECT i.id, 1 + b.rank, 20 + 6 * (random() + random() + random()) / 3, g.guild_id,
              g.requester_id, i.id % {samples}, now()
       FROM images AS i JOIN generations AS g ON g.id = i.generation_id
       JOIN bench_guilds AS b ON b.guild_id = g.guild_id AND b.rank <= 2""",
    """INSERT INTO guild_configs (guild_id, consent_mode, admin_role_ids, sharing,
                                  created_at, updated_at)
       SELECT guild_id, 'opt_out', '[]', CASE WHEN rank % 4 = 0 THEN 'private' ELSE 'pooled' END,
              now(), now()
       FROM bench_guilds""",
]


def scalar(conn: psycopg.Connection[Any], query: str) -> int:
    row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


def load(url: str, choices: int, guilds: int) -> Dataset:
    """Fill the (migrated, empty) database; VACUUM ANALYZE it."""
    generations = max(1, choices // CHOICES_PER_GENERATION)
    users = max(CHOICES_PER_GENERATION * 2, choices // USERS_PER_CHOICES)
    shares = guild_shares(guilds)
    guild_ids = [GUILD_BASE + 1000 * (rank + 1) for rank in range(guilds)]
    params = {
        "user_base": USER_BASE,
        "message_base": MESSAGE_BASE,
        "channel_base": CHANNEL_BASE,
        "opted_every": OPTED_OUT_EVERY,
        "users": users,
        "generations": generations,
        "slots": SLOTS,
        "per_gen": IMAGES_PER_GENERATION,
        "choices_per_gen": CHOICES_PER_GENERATION,
        "skip": SKIP_PERCENT,
        "samples": SCORE_SAMPLES,
    }
    start = time.perf_counter()
    with psycopg.connect(libpq(url)) as conn:
        # The rows are consistent by construction: skip the per-row foreign-key triggers.
        conn.execute("SET session_replication_role = replica")
        conn.execute("SELECT setseed(0.42)")
        conn.execute("CREATE TEMP TABLE bench_guilds (rank int, guild_id bigint)")
        conn.execute("CREATE TEMP TABLE bench_slots (slot int PRIMARY KEY, guild_id bigint)")
        with conn.cursor() as cursor:
            with cursor.copy("COPY bench_guilds (rank, guild_id) FROM STDIN") as copy:
                for rank, guild_id in enumerate(guild_ids, start=1):
                    copy.write_row((rank, guild_id))
            with cursor.copy("COPY bench_slots (slot, guild_id) FROM STDIN") as copy:
                slot = 0
                for guild_id, count in zip(guild_ids, shares, strict=True):
                    for _ in range(count):
                        copy.write_row((slot, guild_id))
                        slot += 1
        for statement in LOAD_SQL:
            conn.execute(statement.format(**params))
        for table in ("prompts", "generations", "images", "choices", "model_versions"):
            conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"
            )
        conn.commit()
        sizes = {
            int(g): int(n)
            for g, n in conn.execute(
                "SELECT guild_id, count(*) FROM generations GROUP BY guild_id "
                "ORDER BY count(*) DESC, guild_id"
            )
        }
        versions = {
            int(g): int(v)
            for v, g in conn.execute(
                "SELECT id, guild_id FROM model_versions WHERE guild_id IS NOT NULL"
            )
        }
        counts = {
            table: scalar(conn, f"SELECT count(*) FROM {table}")
            for table in ("images", "choices", "scores")
        }
        opted_out = scalar(conn, "SELECT count(*) FROM discord_users WHERE opted_out")
        sample0 = scalar(conn, "SELECT count(*) FROM scores WHERE sample = 0")
        misplaced = scalar(
            conn, f"SELECT count(*) FROM scores WHERE sample <> image_id % {SCORE_SAMPLES}"
        )
        if misplaced:
            raise AssertionError(f"{misplaced} scores with sample <> image_id % {SCORE_SAMPLES}")
        pooled = scalar(conn, "SELECT count(*) FROM guild_configs WHERE sharing = 'pooled'")
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        # A bulk load leaves the visibility map unset (no index-only scans) and no statistics;
        # autovacuum would get there, later.
        conn.execute("VACUUM ANALYZE")
    return Dataset(
        generations=generations,
        images=counts["images"],
        choices=counts["choices"],
        users=users,
        opted_out=opted_out,
        scores=counts["scores"],
        sample0_scores=sample0,
        global_version=1,
        guild_versions=versions,
        guild_sizes=sizes,
        pooled_guilds=pooled,
        load_s=time.perf_counter() - start,
    )


# -- statements ----------------------------------------------------------------------------
class StatementLog:
    """The statements an engine sends (SQLAlchemy ``before_cursor_execute``)."""

    def __init__(self, engine: Engine) -> None:
        self.statements: list[tuple[str, Any]] = []
        event.listen(engine, "before_cursor_execute", self._record)

    def _record(
        self, _conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any
    ) -> None:
        self.statements.append((statement, parameters))

    def clear(self) -> None:
        self.statements.clear()


def explain(session: Session, statement: str, parameters: Any) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS) of a captured statement with its parameters."""
    result = session.connection().exec_driver_sql(
        "EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters
    )
    return [str(row[0]) for row in result]


def indexes_in(plan: Sequence[str]) -> list[str]:
    """``Index Only Scan using ix`` / ``Index Scan using ix`` / ``Bitmap Index Scan on ix``
    lines of a plan, de-duplicated, in order."""
    found: list[str] = []
    for line in plan:
        match = re.search(r"((?:Index Only|Index|Bitmap Index) Scan)(?: Backward)? (?:using|on) "
                          r"(\w+)", line)  # fmt: skip
        if match and f"{match[1]} {match[2]}" not in found:
            found.append(f"{match[1]} {match[2]}")
    return found


def baseline_percentiles(
    session: Session, model_version_id: int, values: Sequence[float], guild_id: int
) -> list[float | None]:
    """:func:`db.scores.percentiles` for a guild as it would be without ``scores.guild_id``:
    each count joins scores -> images -> generations and filters on the generation's guild
    (same consent predicate, on the generation's requester); one statement too."""
    in_scope = and_(
        Score.model_version_id == model_version_id,
        Generation.guild_id == guild_id,
        user_consents(Generation.requester_id),
    )

    def lower_than(value: float | None) -> Any:
        condition = in_scope if value is None else and_(in_scope, Score.score < value)
        return (
            select(func.count())
            .select_from(Score)
            .join(Image, Image.id == Score.image_id)
            .join(Generation, Generation.id == Image.generation_id)
            .where(condition)
            .scalar_subquery()
        )

    total, *below = session.execute(
        select(lower_than(None), *(lower_than(float(v)) for v in values))
    ).one()
    if not total:
        return [None for _ in values]
    return [100.0 * int(n) / int(total) for n in below]


def exact_percentiles(
    session: Session, model_version_id: int, values: Sequence[float], guild_id: int
) -> list[float | None]:
    """The exact answer, the reference of the checks: a plain count of every consented score
    of the guild under the version (no sample), one FILTER per value."""
    in_scope = and_(
        Score.model_version_id == model_version_id,
        Scope.guild(guild_id).guild_condition(Score.guild_id),
        user_consents(Score.requester_id),
    )
    counts = [func.count(), *(func.count().filter(Score.score < float(v)) for v in values)]
    total, *below = session.execute(select(*counts).select_from(Score).where(in_scope)).one()
    if not total:
        return [None for _ in values]
    return [100.0 * int(n) / int(total) for n in below]


def sample_size(session: Session, model_version_id: int, guild_id: int) -> int:
    """Consented scores of the guild's sample 0 under the version: at least
    ``db.scores.SAMPLED_PERCENTILE_MIN`` and ``percentiles()`` counts that sample only."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(Score)
            .where(
                Score.model_version_id == model_version_id,
                Score.guild_id == guild_id,
                Score.sample == 0,
                user_consents(Score.requester_id),
            )
        )
        or 0
    )


def is_sampled(sample: int) -> bool:
    return sample >= db.scores.SAMPLED_PERCENTILE_MIN


def drawn_values(guild_id: int, calls: int) -> list[list[float]]:
    """The 4 HPS-like values of each of ``calls`` calls for a guild (seeded by the guild, so
    every form of the query gets the same ones)."""
    rng = random.Random(guild_id)
    return [[round(rng.uniform(17.0, 27.0), 4) for _ in range(4)] for _ in range(calls)]


PercentileFn = Callable[[Session, int, Sequence[float], int], list[float | None]]


def product_percentiles(
    session: Session, model_version_id: int, values: Sequence[float], guild_id: int
) -> list[float | None]:
    return percentiles(session, model_version_id, values, Scope.guild(guild_id))


@dataclass
class Latency:
    name: str
    guild_rank: int
    guild_scores: int
    sample: int  # consented scores of the guild's sample 0
    calls: int
    statements_per_call: set[int]
    seconds: list[float]
    plan: list[str] = field(default_factory=list)

    @property
    def sampled(self) -> bool:
        return is_sampled(self.sample)

    @property
    def median_ms(self) -> float:
        return 1000 * statistics.median(self.seconds)

    @property
    def p95_ms(self) -> float:
        ordered = sorted(self.seconds)
        return 1000 * ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def time_percentiles(
    engine: Engine,
    log: StatementLog,
    function: PercentileFn,
    name: str,
    version: int,
    guild_id: int,
    guild_rank: int,
    calls: int,
    with_plan: bool,
) -> tuple[Latency, list[list[float | None]]]:
    """``calls`` calls of ``function`` with 4 random HPS-like values each, in one open
    transaction (as a job runs it), after two warm-up calls; the statement of the last call
    explained."""
    factory = make_session_factory(engine)
    results: list[list[float | None]] = []
    with factory() as session:
        guild_scores = int(
            session.scalar(
                select(func.count())
                .select_from(Score)
                .where(Score.model_version_id == version, Score.guild_id == guild_id)
            )
            or 0
        )
        sample = sample_size(session, version, guild_id)
        for _ in range(2):
            function(session, version, [21.0, 22.0, 23.0, 24.0], guild_id)
        latency = Latency(name, guild_rank, guild_scores, sample, calls, set(), [])
        for values in drawn_values(guild_id, calls):
            log.clear()
            start = time.perf_counter()
            results.append(function(session, version, values, guild_id))
            latency.seconds.append(time.perf_counter() - start)
            latency.statements_per_call.add(len(log.statements))
        if with_plan and log.statements:
            statement, parameters = log.statements[-1]
            latency.plan = explain(session, statement, parameters)
    return latency, results


@dataclass
class Throughput:
    name: str
    rows: int
    seconds: float
    statements: int
    plan: list[str] = field(default_factory=list)
    plan_ssd: list[str] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else float("nan")


def time_snapshot(
    engine: Engine, log: StatementLog, name: str, scope: Scope, with_plan: bool
) -> Throughput:
    """Stream ``iter_choice_sets`` of ``scope`` to the end; explain its main query, with the
    server's planner settings and with ``random_page_cost = 1.1`` (SSD storage)."""
    factory = make_session_factory(engine)
    with factory() as session:
        log.clear()
        start = time.perf_counter()
        rows = sum(1 for _ in iter_choice_sets(session, scope=scope, salt=SALT))
        seconds = time.perf_counter() - start
        measured = Throughput(name, rows, seconds, len(log.statements))
        if with_plan and log.statements:
            statement, parameters = log.statements[0]  # the choices query; then image batches
            measured.plan = explain(session, statement, parameters)
            session.connection().exec_driver_sql("SET LOCAL random_page_cost = 1.1")
            measured.plan_ssd = explain(session, statement, parameters)
    return measured


# -- report --------------------------------------------------------------------------------
def pick_guilds(sizes: dict[int, int]) -> list[tuple[str, int, int]]:
    """(label, rank, guild id) of the biggest, the median and the smallest guild."""
    ranked = list(sizes)
    picks = [("biggest", 1), ("median", (len(ranked) + 1) // 2), ("smallest", len(ranked))]
    seen: set[int] = set()
    chosen = []
    for label, rank in picks:
        if rank not in seen:
            seen.add(rank)
            chosen.append((label, rank, ranked[rank - 1]))
    return chosen


def key_lines(plan: Sequence[str]) -> list[str]:
    """The plan's top line, its scans and joins, conditions, and timings."""
    keep = ("Scan", "Join", "Cond:", "Execution Time", "Planning Time", "JIT", "Workers Launched",
            "Heap Fetches", "SubPlan", "InitPlan", "One-Time Filter")  # fmt: skip
    return list(plan[:1]) + [line for line in plan[1:] if any(word in line for word in keep)]


def run(args: argparse.Namespace) -> dict[str, Any]:
    recreate_database(args.url)
    # --sample-min: the product's threshold of the sampled path, for this run only (a small
    # dataset reaches the sampled path with a small one).
    threshold = db.scores.SAMPLED_PERCENTILE_MIN
    if args.sample_min is not None:
        db.scores.SAMPLED_PERCENTILE_MIN = args.sample_min
    try:
        data = load(args.url, args.choices, args.guilds)
        engine = make_engine(args.url)
        log = StatementLog(engine)
        try:
            return measure(engine, log, data, args)
        finally:
            engine.dispose()
    finally:
        db.scores.SAMPLED_PERCENTILE_MIN = threshold
        if not args.keep:
            drop_database(args.url)


def check_answers(
    engine: Engine, measured: Latency, got: list[list[float | None]], version: int, guild_id: int
) -> None:
    """Every answer equals the plain exact count's, unless ``percentiles()`` sampled the guild
    (its error is measured by :func:`accuracy`)."""
    if measured.sampled and measured.name.startswith("percentiles()"):
        return
    with make_session_factory(engine)() as session:
        for values, answer in zip(drawn_values(guild_id, len(got)), got, strict=True):
            if answer != exact_percentiles(session, version, values, guild_id):
                raise AssertionError(f"{measured.name} disagrees with the exact count at {values}")


def accuracy(engine: Engine, data: Dataset) -> list[dict[str, Any]]:
    """For every guild that ``percentiles()`` counts from its sample 0: its estimates against
    the exact counts at ACCURACY_VALUES, the largest absolute error in percentile points."""
    rows = []
    with make_session_factory(engine)() as session:
        for rank, guild_id in enumerate(data.guild_sizes, start=1):
            sample = sample_size(session, data.global_version, guild_id)
            if not is_sampled(sample):
                continue
            values = list(ACCURACY_VALUES)
            estimated = percentiles(session, data.global_version, values, Scope.guild(guild_id))
            exact = exact_percentiles(session, data.global_version, values, guild_id)
            pairs = zip(estimated, exact, strict=True)
            errors = [abs(float(e or 0) - float(x or 0)) for e, x in pairs]
            worst = max(range(len(values)), key=lambda i: errors[i])
            rows.append(
                {
                    "guild_rank": rank,
                    "guild_id": guild_id,
                    "consented_scores": int(
                        session.scalar(
                            select(func.count())
                            .select_from(Score)
                            .where(
                                Score.model_version_id == data.global_version,
                                Score.guild_id == guild_id,
                                user_consents(Score.requester_id),
                            )
                        )
                        or 0
                    ),
                    "sample": sample,
                    "values": values,
                    "estimated": [round(float(e or 0), 3) for e in estimated],
                    "exact": [round(float(x or 0), 3) for x in exact],
                    "max_abs_error": round(errors[worst], 3),
                    "at_value": values[worst],
                    "standard_error_at_median": round(50 / math.sqrt(sample), 3),
                }
            )
    return rows


def measure(
    engine: Engine, log: StatementLog, data: Dataset, args: argparse.Namespace
) -> dict[str, Any]:
    plans = not args.no_plans
    guilds = pick_guilds(data.guild_sizes)
    version = data.global_version
    variants: list[tuple[str, PercentileFn, int]] = [
        ("percentiles()", product_percentiles, args.calls),
        ("join baseline", baseline_percentiles, args.baseline_calls),
    ]
    latencies: list[Latency] = []
    for label, rank, guild_id in guilds:
        for name, function, calls in variants:
            measured, got = time_percentiles(
                engine, log, function, f"{name}, {label} guild", version, guild_id, rank,
                calls, plans,
            )  # fmt: skip
            check_answers(engine, measured, got, version, guild_id)
            latencies.append(measured)
    snapshots = [
        time_snapshot(engine, log, f"snapshot, {label} guild", Scope.guild(guild_id), plans)
        for label, _rank, guild_id in guilds
    ]
    snapshots.append(
        time_snapshot(engine, log, "snapshot, whole pooled set", Scope.pooled(), plans)
    )
    sweep = {"percentiles()": sweep_guilds(engine, product_percentiles, data, args.sweep_calls)}
    sampled_accuracy = accuracy(engine, data)
    product = [m for m in latencies if m.name.startswith("percentiles(),")]
    baseline = [m for m in latencies if m.name.startswith("join baseline,")]
    return {
        "data": {
            "generations": data.generations,
            "images": data.images,
            "choices": data.choices,
            "users": data.users,
            "opted_out_users": data.opted_out,
            "scores": data.scores,
            "sample0_scores": data.sample0_scores,
            "guilds": len(data.guild_sizes),
            "pooled_guilds": data.pooled_guilds,
            "biggest_guild_generations": max(data.guild_sizes.values()),
            "smallest_guild_generations": min(data.guild_sizes.values()),
            "load_s": round(data.load_s, 1),
        },
        "sampled_percentile_min": db.scores.SAMPLED_PERCENTILE_MIN,
        "percentile": [
            {
                "name": m.name,
                "guild_rank": m.guild_rank,
                "guild_scores": m.guild_scores,
                "sample": m.sample,
                "sampled": m.sampled and m.name.startswith("percentiles()"),
                "calls": m.calls,
                "statements_per_call": sorted(m.statements_per_call),
                "median_ms": round(m.median_ms, 3),
                "p95_ms": round(m.p95_ms, 3),
                "indexes": indexes_in(m.plan),
                "plan": m.plan,
            }
            for m in latencies
        ],
        "percentile_speedup_vs_join": {
            o.name: round(b.median_ms / o.median_ms, 1)
            for o, b in zip(product, baseline, strict=True)
        },
        "percentile_target_met": all(
            m.p95_ms < TARGET_MS and m.statements_per_call == {1} for m in product
        ),
        "sweep": sweep,
        "accuracy": sampled_accuracy,
        "accuracy_max_abs_error": max(
            (row["max_abs_error"] for row in sampled_accuracy), default=None
        ),
        "snapshot": [
            {
                "name": s.name,
                "rows": s.rows,
                "seconds": round(s.seconds, 3),
                "rows_per_s": round(s.per_second, 1),
                "statements": s.statements,
                "indexes": indexes_in(s.plan),
                "plan": s.plan,
                "indexes_ssd": indexes_in(s.plan_ssd),
                "execution_ms": execution_ms(s.plan),
                "execution_ms_ssd": execution_ms(s.plan_ssd),
            }
            for s in snapshots
        ],
    }


def execution_ms(plan: Sequence[str]) -> float | None:
    for line in plan:
        match = re.search(r"Execution Time: ([0-9.]+) ms", line)
        if match:
            return float(match[1])
    return None


def sweep_guilds(
    engine: Engine, function: PercentileFn, data: Dataset, calls: int
) -> dict[str, Any]:
    """``calls`` calls for every guild: how many have a median under the target, and the
    guild sizes (scores under the global version) on either side of it."""
    factory = make_session_factory(engine)
    under: list[int] = []
    over: list[int] = []
    with factory() as session:
        sizes = dict(
            session.execute(
                select(Score.guild_id, func.count())
                .where(Score.model_version_id == data.global_version)
                .group_by(Score.guild_id)
            ).all()
        )
        for guild_id in data.guild_sizes:
            function(session, data.global_version, [21.0, 22.0, 23.0, 24.0], guild_id)
            seconds = []
            for values in drawn_values(guild_id, calls):
                start = time.perf_counter()
                function(session, data.global_version, values, guild_id)
                seconds.append(time.perf_counter() - start)
            size = int(sizes.get(guild_id, 0))
            (under if 1000 * statistics.median(seconds) < TARGET_MS else over).append(size)
    return {
        "calls_per_guild": calls,
        "guilds_under_target": len(under),
        "guilds": len(under) + len(over),
        "largest_under_scores": max(under, default=None),
        "smallest_over_scores": min(over, default=None),
    }


def print_report(result: dict[str, Any], show_plans: bool) -> None:
    d = result["data"]
    print(
        f"data: {d['choices']} choices on {d['generations']} generations ({d['images']} images, "
        f"{d['scores']} scores, {d['sample0_scores']} in sample 0) over {d['guilds']} guilds "
        f"({d['pooled_guilds']} pooled; "
        f"biggest {d['biggest_guild_generations']}, smallest {d['smallest_guild_generations']} "
        f"generations); {d['users']} users, {d['opted_out_users']} opted out; "
        f"loaded in {d['load_s']} s"
    )
    print()
    print(f"{'percentile (4 values)':40} {'scores':>8} {'sample0':>8} {'counts':>7} "
          f"{'calls':>6} {'stmts':>6} {'median ms':>10} {'p95 ms':>8}")  # fmt: skip
    for m in result["percentile"]:
        stmts = ",".join(str(n) for n in m["statements_per_call"])
        counted = "sample" if m["sampled"] else "exact"
        print(f"{m['name']:40} {m['guild_scores']:>8} {m['sample']:>8} {counted:>7} "
              f"{m['calls']:>6} {stmts:>6} {m['median_ms']:>10.2f} "
              f"{m['p95_ms']:>8.2f}")  # fmt: skip
    print(
        f"  (sample0: consented scores of the guild's sample 0; counts: 'sample' when it holds "
        f">= {result['sampled_percentile_min']}, as percentiles() decides)"
    )
    for name, ratio in result["percentile_speedup_vs_join"].items():
        print(f"  {name}: {ratio}x faster than the join baseline (median)")
    met = "met" if result["percentile_target_met"] else "NOT met"
    print(f"  target: percentiles() one statement, p95 < {TARGET_MS:.0f} ms, every guild: {met}")
    for name, sweep in result["sweep"].items():
        print(
            f"  sweep, {name}: {sweep['guilds_under_target']}/{sweep['guilds']} guilds with a "
            f"median under {TARGET_MS:.0f} ms ({sweep['calls_per_guild']} calls each); largest "
            f"under: {sweep['largest_under_scores']} scores, smallest over: "
            f"{sweep['smallest_over_scores']} scores"
        )
    print()
    print(f"{'accuracy of sampled percentiles':40} {'scores':>8} {'sample0':>8} "
          f"{'max |err|':>10} {'at value':>9} {'SE@50%':>8}")  # fmt: skip
    for a in result["accuracy"]:
        print(f"{'guild rank ' + str(a['guild_rank']):40} {a['consented_scores']:>8} "
              f"{a['sample']:>8} {a['max_abs_error']:>10.3f} {a['at_value']:>9} "
              f"{a['standard_error_at_median']:>8.3f}")  # fmt: skip
    if result["accuracy"]:
        print(
            f"  sampled guilds: {len(result['accuracy'])}; max absolute error "
            f"{result['accuracy_max_abs_error']} percentile points (estimate vs plain exact "
            f"count at {', '.join(str(v) for v in ACCURACY_VALUES)}; scores: consented)"
        )
    else:
        print("  no guild is counted from its sample at this size")
    print()
    print(f"{'snapshot (iter_choice_sets)':40} {'rows':>8} {'seconds':>8} {'rows/s':>9} "
          f"{'stmts':>6} {'main q ms':>9} {'rpc1.1 ms':>9}")  # fmt: skip
    for s in result["snapshot"]:
        print(f"{s['name']:40} {s['rows']:>8} {s['seconds']:>8.2f} {s['rows_per_s']:>9.0f} "
              f"{s['statements']:>6} {s['execution_ms'] or 0:>9.1f} "
              f"{s['execution_ms_ssd'] or 0:>9.1f}")  # fmt: skip
    print(
        "  (main q: EXPLAIN ANALYZE of the snapshot's choices query; rpc1.1: the same with "
        "random_page_cost = 1.1)"
    )
    print()
    for section in ("percentile", "snapshot"):
        for m in result[section]:
            if not m["plan"]:
                continue
            print(f"indexes in the plan of {m['name']}: {', '.join(m['indexes']) or 'none'}")
            if m.get("indexes_ssd") is not None:
                print(f"  with random_page_cost = 1.1: {', '.join(m['indexes_ssd']) or 'none'}")
            lines = m["plan"] if show_plans else key_lines(m["plan"])
            for line in lines:
                print(f"    {line}")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url", default=os.environ.get("HPS_BENCH_GUILDS_DATABASE_URL", DEFAULT_URL),
        help="database to create, fill and drop (default %(default)s)",
    )  # fmt: skip
    parser.add_argument("--choices", type=int, default=1_000_000)
    parser.add_argument("--guilds", type=int, default=100)
    parser.add_argument("--calls", type=int, default=200, help="percentile calls per guild")
    parser.add_argument("--baseline-calls", type=int, default=10, help="join baseline calls")
    parser.add_argument("--sweep-calls", type=int, default=10, help="calls per guild, sweep")
    parser.add_argument(
        "--sample-min", type=int, default=None,
        help="db.scores.SAMPLED_PERCENTILE_MIN for this run (default: the product's, "
        f"{db.scores.SAMPLED_PERCENTILE_MIN})",
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--no-plans", action="store_true", help="skip EXPLAIN ANALYZE")
    parser.add_argument("--full-plans", action="store_true", help="print whole plans")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    if args.guilds < 1 or args.choices < CHOICES_PER_GENERATION:
        parser.error("need at least one guild and one generation's choices")
    args.baseline_calls = min(args.baseline_calls, args.calls)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result, args.full_plans)
    return result


if __name__ == "__main__":
    main()
