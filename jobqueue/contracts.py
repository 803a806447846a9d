"""The typed contract of every job kind: what a client may ask for (the parameters model) and
what the worker answers (the result model), with the outbox kinds the answers are posted as.

The bot and the CLI build parameters with these models; the worker validates a job's stored
parameters with :func:`parse_params` on arrival, so a bad payload fails the job with a message
naming the kind and the field. Stored parameters are what the client set (``stored()``), so a
job row reads as it was asked for.

Defaults the science owns (the paper's learning rate, the LoRA recipe) are not repeated here:
such a field is ``None`` unless given, and the worker then leaves the ``hps`` dataclass's own
default in place (``hps`` pulls torch, which no client may import).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from db.outbox import OutboxKind
from exchange.card import FORMATS

__all__ = [
    "EXPORT_FORMATS",
    "PARAMS_MODELS",
    "RESULT_MODELS",
    "InvalidJobParams",
    "JobParams",
    "JobResult",
    "JobScope",
    "OutboxKind",
    "parse_params",
]

DEFAULT_STEPS = 25  # denoising steps of /hps generate and regenerate
DEFAULT_IMAGES = 4
MAX_GENERATED_IMAGES = 10  # Discord: at most 10 attachments per message
MAX_REGENERATE_CANDIDATES = 16
DEFAULT_ADAPT_PROMPTS = 500
# ``source="auto"`` adapts from the community's harvested sets when it has at least this many
# prompts with enough images (``AdaptConfig.min_images``, 4); else it generates, then selects.
DEFAULT_MIN_HARVESTED_PROMPTS = 8
AdaptSource = Literal["auto", "harvested", "generated", "both"]
DEFAULT_SCORE_CHUNK = 256
DEFAULT_LEADERBOARD_ROUNDS = 1000  # bootstrap rounds, as ``hps leaderboard``
MAX_LEADERBOARD_ROUNDS = 5000
EXPORT_FORMATS = FORMATS


class JobScope(StrEnum):
    """Whose data and models a job works with: its guild's, or the operators' pooled scope."""

    guild = "guild"
    pooled = "pooled"


class JobParams(BaseModel):
    """Parameters common to every kind; each kind's model adds its own."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: ClassVar[str]

    scope: JobScope = JobScope.guild

    @property
    def pooled(self) -> bool:
        """Queued for the operators' pooled scope (an operator command)."""
        return self.scope == JobScope.pooled

    def stored(self) -> dict[str, Any]:
        """The JSON a job row keeps: the fields the client set, nothing defaulted."""
        return self.model_dump(mode="json", exclude_unset=True, exclude_none=True)


def _stripped(value: Any) -> Any:
    return str(value or "").strip() if value is None or isinstance(value, str) else value


Text = Annotated[str, BeforeValidator(_stripped)]


class ScoringParams(JobParams):
    """A job that scores: it may name the model version to score with (one its scope may use);
    by default its guild's active HPS model, else the global one."""

    model_version_id: int | None = None


class ScoreParams(ScoringParams):
    """``/hps score``: uploaded images (by sha256) against their prompt."""

    kind: ClassVar[str] = "score"
    prompt: Text = ""
    images: list[str] = Field(default_factory=list)


class RankParams(ScoringParams):
    """``/hps rank``: the images of one generation, best first."""

    kind: ClassVar[str] = "rank"
    generation_id: int


class ScoreUnscoredParams(ScoringParams):
    """Score every image the model has not scored yet, ``chunk_size`` at a time."""

    kind: ClassVar[str] = "score_unscored"
    chunk_size: int = Field(default=DEFAULT_SCORE_CHUNK, ge=1)
    limit: int | None = Field(default=None, ge=0)


def _iso_time(value: Any) -> Any:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"cutoff {value!r} is not an ISO time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


IsoTime = Annotated[datetime | None, BeforeValidator(_iso_time)]


def _none_if_falsy(value: Any) -> Any:
    return value or None


class TrainParams(JobParams):
    """Train a candidate HPS model on the scope's choices. Hyper-parameters left ``None`` take
    ``hps.training.trainer.TrainConfig``'s defaults (the paper's)."""

    kind: ClassVar[str] = "train"
    cutoff: IsoTime = None
    base_checkpoint: str | None = None
    arch: str | None = None
    lr: float | None = None
    batch_size: int | None = None
    epochs: int | None = None
    steps: Annotated[int | None, BeforeValidator(_none_if_falsy)] = None
    vision_layers: int | None = None
    text_layers: int | None = None
    seed: int | None = None
    margin: float | None = None  # None: the configured promotion margin
    force: bool = False
    duel_votes: bool = True  # include closed arena duels' votes as two-image sets

    def trainer_overrides(self) -> dict[str, Any]:
        """The ``TrainConfig`` fields this job sets (the others keep their defaults)."""
        names = ("lr", "batch_size", "epochs", "steps", "vision_layers", "text_layers", "seed")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


class GenerateParams(JobParams):
    """``/hps generate``: ``n`` images of a prompt with the active LoRA (seeds kept)."""

    kind: ClassVar[str] = "generate"
    prompt: Text = ""
    n: int = DEFAULT_IMAGES
    seeds: list[int] | None = None
    steps: int = DEFAULT_STEPS


class DuelParams(JobParams):
    """``/hps arena``: generate both sides of a pending duel (``db.arena``) with one seed."""

    kind: ClassVar[str] = "duel"
    duel_id: int = Field(ge=1)
    seed: int | None = Field(default=None, ge=0, lt=2**31)
    steps: int = Field(default=DEFAULT_STEPS, ge=1, le=200)


class RegenerateParams(ScoringParams):
    """``/hps regenerate``: best of ``n`` by HPS, of a generation's prompt (or a prompt)."""

    kind: ClassVar[str] = "regenerate"
    generation_id: int | None = None
    prompt: Text = ""
    n: int = DEFAULT_IMAGES
    seeds: list[int] | None = None
    steps: int = DEFAULT_STEPS


class AdaptParams(ScoringParams):
    """Adapt Stable Diffusion by the paper's recipe (a LoRA). The recipe's fields left ``None``
    take ``hps.diffusion.adapt.AdaptConfig`` / ``LoraConfig`` defaults.

    ``source``: ``harvested`` selects from the scope's stored image sets, ``generated``
    generates for the prompts then selects, ``both`` does both; ``auto`` (the default, and
    what rows queued before it existed mean) is ``harvested`` when the job names no prompts
    and the scope has ``min_harvested_prompts`` prompts with enough images, else
    ``generated``."""

    kind: ClassVar[str] = "adapt"
    source: AdaptSource = "auto"
    min_harvested_prompts: int = Field(default=DEFAULT_MIN_HARVESTED_PROMPTS, ge=1)
    min_images: int | None = Field(default=None, ge=2)
    human_picks: bool | None = None
    prompts: list[str] = Field(default_factory=list)
    eval_prompts: list[str] = Field(default_factory=list)
    limit_prompts: int = Field(default=DEFAULT_ADAPT_PROMPTS, ge=1)
    images_per_prompt: int | None = None
    alpha: float | None = None
    blur_threshold: float | None = None
    inference_steps: int | None = None
    eval_images_per_prompt: int | None = None
    seed: int | None = None
    rank: int | None = None
    lr: float | None = None
    lora_steps: int | None = None
    batch_size: int | None = None

    def adapt_overrides(self) -> dict[str, Any]:
        """The ``AdaptConfig`` fields this job sets (``lora`` aside)."""
        names = (
            "images_per_prompt",
            "alpha",
            "blur_threshold",
            "inference_steps",
            "eval_images_per_prompt",
            "seed",
            "min_images",
            "human_picks",
        )
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}

    def lora_overrides(self) -> dict[str, Any]:
        """The ``LoraConfig`` fields this job sets (its seed is the adaptation's)."""
        names = {"rank": "rank", "lr": "lr", "steps": "lora_steps", "batch_size": "batch_size"}
        names["seed"] = "seed"
        return {
            field: getattr(self, name)
            for field, name in names.items()
            if getattr(self, name) is not None
        }


def _formats(value: Any) -> Any:
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    formats = list(value)
    unknown = sorted(set(formats) - set(EXPORT_FORMATS))
    if unknown or not formats:
        raise ValueError(f"unknown export format(s) {unknown or formats}; use pickapic, hpd")
    return tuple(formats)


class ExportParams(JobParams):
    """Export the community's choices. ``guild_id`` is read only for the operators' jobs (a
    guild's job always exports its own guild); ``licence`` is ``license``'s other spelling."""

    kind: ClassVar[str] = "export"
    formats: Annotated[tuple[str, ...], BeforeValidator(_formats)] = EXPORT_FORMATS
    license: str | None = None
    licence: str | None = None
    name: str | None = None
    cutoff: IsoTime = None
    guild_id: int | None = None
    rows_per_shard: Annotated[int | None, BeforeValidator(_none_if_falsy)] = None
    jpeg_quality: Annotated[int | None, BeforeValidator(_none_if_falsy)] = None

    @field_validator("jpeg_quality")
    @classmethod
    def _clamped(cls, value: int | None) -> int | None:
        return None if value is None else min(max(value, 1), 100)

    @property
    def chosen_licence(self) -> str | None:
        """The licence written into the dataset card (None: the exporter's default)."""
        return self.license or self.licence or None


class StatsParams(JobParams):
    """``/hps admin stats``: time series over ``days`` (0: all time), ``top`` prompts,
    ``bins`` score histogram bins."""

    kind: ClassVar[str] = "stats"
    days: int = Field(default=90, ge=0, le=36_500)
    top: int = Field(default=10, ge=1, le=50)
    bins: int = Field(default=20, ge=2, le=200)


class LeaderboardParams(JobParams):
    """``/hps leaderboard``: Bradley–Terry ratings of the guild's model configurations from its
    closed duels (``include_open``: open duels' votes too), with ``rounds`` bootstrap rounds
    (0: no intervals) drawn from ``seed``. A guild's own leaderboard only: never pooled."""

    kind: ClassVar[str] = "leaderboard"
    rounds: int = Field(default=DEFAULT_LEADERBOARD_ROUNDS, ge=0, le=MAX_LEADERBOARD_ROUNDS)
    seed: int = Field(default=0, ge=0, lt=2**32)
    include_open: bool = False

    @field_validator("scope")
    @classmethod
    def _guild_only(cls, value: JobScope) -> JobScope:
        if value != JobScope.guild:
            raise ValueError("a leaderboard is one guild's: its scope is guild")
        return value


PARAMS_MODELS: dict[str, type[JobParams]] = {
    model.kind: model
    for model in (
        ScoreParams,
        RankParams,
        ScoreUnscoredParams,
        TrainParams,
        GenerateParams,
        RegenerateParams,
        AdaptParams,
        ExportParams,
        StatsParams,
        DuelParams,
        LeaderboardParams,
    )
}


class InvalidJobParams(ValueError):
    """A job's parameters do not fit its kind's contract; the message names the kind and the
    field and is fit for the user."""

    def __init__(self, kind: str, field: str, problem: str) -> None:
        super().__init__(f"bad {kind} parameters: {problem}")
        self.kind = kind
        self.field = field


def parse_params(kind: str, raw: dict[str, Any] | None) -> JobParams:
    """The typed parameters of a ``kind`` job from their JSON; raise InvalidJobParams (or
    jobqueue.names.UnknownJobKind)."""
    from jobqueue.names import task_kind

    task_kind(kind)
    model = PARAMS_MODELS[kind]
    try:
        return model.model_validate(raw or {})
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "parameters"
        raise InvalidJobParams(kind, field, _problem(model, field, error)) from None


def _problem(model: type[JobParams], field: str, error: Any) -> str:
    """One short sentence for the first validation error."""
    kind, given = error["type"], error.get("input")
    name = field.split(".")[0]
    if kind == "extra_forbidden":
        return f"{name} is not a parameter of this kind"
    if kind == "missing":
        return f"{name} is required"
    if kind.startswith("int_"):
        return f"{name} must be a whole number, not {given!r}"
    if kind.startswith(("greater_than", "less_than")):
        low, high = _bounds(model, name)
        if low is not None and high is not None:
            return f"{name} must be between {low} and {high}, not {given}"
        return f"{name} must be at least {low}, not {given}"
    if kind == "value_error":
        return str(error["ctx"]["error"])
    return f"{name}: {error['msg']}, not {given!r}"


def _bounds(model: type[JobParams], name: str) -> tuple[Any, Any]:
    low = high = None
    for constraint in model.model_fields[name].metadata:
        low = getattr(constraint, "ge", low)
        high = getattr(constraint, "le", high)
    return low, high


# -- results ------------------------------------------------------------------------------


class JobResult(BaseModel):
    """What a finished job stored (``jobs.result``) and, unless told otherwise, posted."""

    model_config = ConfigDict(frozen=True)

    def stored(self) -> dict[str, Any]:
        """The JSON a job row keeps."""
        return self.model_dump(mode="json")


class ModelVersionRef(BaseModel):
    """The model version a result came from, as users see it."""

    model_config = ConfigDict(frozen=True)
    id: int
    name: str


class ImageScore(BaseModel):
    model_config = ConfigDict(frozen=True)
    sha256: str
    score: float
    percentile: float | None


class ScoreResult(JobResult):
    prompt: str
    model_version: ModelVersionRef
    scores: list[ImageScore]


class RankedImage(BaseModel):
    model_config = ConfigDict(frozen=True)
    position: int
    image_id: int
    score: float


class RankResult(JobResult):
    generation_id: int
    prompt: str
    model_version: ModelVersionRef
    ranking: list[RankedImage]


class ScoreUnscoredResult(JobResult):
    scored: int
    missing_blobs: int
    model_version: ModelVersionRef


class GeneratedImage(BaseModel):
    """One image a generation job stored (by sha256), with the seed it came from."""

    model_config = ConfigDict(frozen=True)
    sha256: str
    seed: int | None = None
    width: int
    height: int
    phash: str = ""


class GenerateResult(JobResult):
    prompt: str
    images: list[GeneratedImage]
    lora_version: ModelVersionRef | None
    negative_prompt: str | None
    steps: int


class GenerateDelivery(GenerateResult):
    """A generate result as the bot reads it from the outbox (the job's envelope added)."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    requested_by: int | None = None


class DuelResult(JobResult):
    """Both sides of a duel, generated with one seed; posted blinded (no model names)."""

    duel_id: int
    prompt: str
    seed: int
    image_a: GeneratedImage
    image_b: GeneratedImage


class OriginalImages(BaseModel):
    model_config = ConfigDict(frozen=True)
    image_ids: list[int]
    scores: list[float]
    best_score: float | None


class RegeneratedImage(GeneratedImage):
    score: float
    candidates: int
    all_scores: list[float]


class RegenerateResult(JobResult):
    prompt: str
    model_version: ModelVersionRef
    lora_version: ModelVersionRef | None
    original: OriginalImages
    regenerated: RegeneratedImage


class PostedFile(BaseModel):
    """A file of a post, kept in the blob store."""

    model_config = ConfigDict(frozen=True)
    sha256: str
    filename: str


class Post(BaseModel):
    """The bot's generic post: a text and files from the store."""

    model_config = ConfigDict(frozen=True)
    text: str
    files: list[PostedFile] = Field(default_factory=list)

    def stored(self) -> dict[str, Any]:
        """The JSON an outbox row keeps."""
        return self.model_dump(mode="json")


class TrainReport(JobResult):
    candidate_name: str
    promoted: bool
    forced: bool
    decision: str
    metrics: dict[str, Any]
    trained_on: dict[str, Any]
    scope: str
    report_png: str
    training_curve_png: str | None
    text: str
    files: list[PostedFile]
    model_version_id: int | None = None  # set when the candidate is registered


class AdaptReport(JobResult):
    """The registered LoRA candidate, with the adaptation's metadata (``hps.diffusion``)."""

    model_config = ConfigDict(frozen=True, extra="allow")
    model_version_id: int | None = None  # set when the candidate is registered
    name: str
    status: Literal["candidate"] = "candidate"
    # Where the examples came from, and why (reports written before these fields parse).
    source: Literal["generated", "harvested", "both"] = "generated"
    source_note: str = ""
    # What the channel reads (base vs adapted mean HPS with intervals, win rates) and the
    # side-by-side grid from the store (reports written before these fields parse).
    text: str = ""
    files: list[PostedFile] = Field(default_factory=list)


class ExportResult(JobResult):
    """The export's summary (``exchange.export.ExportSummary.as_dict``)."""

    path: str
    created_at: str
    cutoff: str
    formats: list[str]
    license: str
    counts: dict[str, int]
    splits: dict[str, dict[str, int]]
    files: list[str]
    histogram: str
    skipped_missing_images: int
    guild_id: int | None
    card: str | None
    extra: dict[str, Any]


class ExportPost(Post):
    """The export's post, with where the export is and what it holds."""

    export_path: str
    counts: dict[str, int]
    splits: dict[str, dict[str, int]]
    formats: list[str]
    license: str


class StatsResult(JobResult):
    text: str
    files: list[PostedFile]
    stats: dict[str, Any]


class LeaderboardResult(JobResult):
    """The guild's arena ratings: ``leaderboard`` is what ``hps leaderboard --guild`` prints
    for the same data and options (None before the guild has a rated vote); ``text`` and
    ``files`` (the chart) are what the channel reads."""

    guild_id: int
    leaderboard: dict[str, Any] | None
    text: str
    files: list[PostedFile] = Field(default_factory=list)


RESULT_MODELS: dict[str, type[JobResult]] = {
    "score": ScoreResult,
    "rank": RankResult,
    "score_unscored": ScoreUnscoredResult,
    "train": TrainReport,
    "generate": GenerateResult,
    "regenerate": RegenerateResult,
    "duel": DuelResult,
    "adapt": AdaptReport,
    "export": ExportResult,
    "stats": StatsResult,
    "leaderboard": LeaderboardResult,
}
