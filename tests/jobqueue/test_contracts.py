"""The typed job contract: one parameters model per kind, validated with messages that name
the kind and the field; stored parameters are what the client set."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from db.scope import Scope
from jobqueue.contracts import (
    PARAMS_MODELS,
    RESULT_MODELS,
    AdaptParams,
    ExportParams,
    InvalidJobParams,
    JobScope,
    StatsParams,
    TrainParams,
    parse_params,
)
from jobqueue.names import TASK_KINDS, UnknownJobKind

ROOT = Path(__file__).resolve().parents[2]


def test_every_kind_has_one_params_and_one_result_model() -> None:
    assert set(PARAMS_MODELS) == set(TASK_KINDS) == set(RESULT_MODELS)
    assert all(model.kind == kind for kind, model in PARAMS_MODELS.items())


@pytest.mark.parametrize(
    ("kind", "raw", "field", "message"),
    [
        ("stats", {"days": "lots"}, "days", "days must be a whole number, not 'lots'"),
        ("stats", {"top": 0}, "top", "top must be between 1 and 50, not 0"),
        ("rank", {}, "generation_id", "generation_id is required"),
        ("score", {"colour": "red"}, "colour", "colour is not a parameter of this kind"),
        ("export", {"formats": "csv"}, "formats", "unknown export format(s) ['csv']"),
        ("export", {"cutoff": "soon"}, "cutoff", "cutoff 'soon' is not an ISO time"),
        ("score_unscored", {"chunk_size": 0}, "chunk_size", "chunk_size must be at least 1"),
    ],
)
def test_bad_params_name_the_kind_and_the_field(
    kind: str, raw: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(InvalidJobParams) as caught:
        parse_params(kind, raw)
    assert caught.value.kind == kind and caught.value.field == field
    assert str(caught.value).startswith(f"bad {kind} parameters: ")
    assert message in str(caught.value)


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(UnknownJobKind, match="paint"):
        parse_params("paint", {})


def test_stored_params_are_what_the_client_set() -> None:
    assert TrainParams(force=False, epochs=1).stored() == {"force": False, "epochs": 1}
    pooled = TrainParams(scope=JobScope.pooled, epochs=2)
    assert pooled.stored() == {"scope": "pooled", "epochs": 2}
    assert parse_params("train", pooled.stored()) == pooled
    assert StatsParams().stored() == {}


def test_the_pooled_scope_is_a_typed_field() -> None:
    assert parse_params("export", {"scope": "pooled"}).pooled
    assert not parse_params("export", {}).pooled
    guild = parse_params("train", {})
    assert Scope.of_job(7, pooled=guild.pooled) == Scope.guild(7)
    with pytest.raises(InvalidJobParams, match="scope"):
        parse_params("train", {"scope": "everyone"})


def test_science_defaults_are_left_to_the_hps_dataclasses() -> None:
    """Unset hyper-parameters are not passed on: TrainConfig / AdaptConfig keep theirs."""
    assert TrainParams().trainer_overrides() == {}
    assert TrainParams(lr=1e-3, steps=0).trainer_overrides() == {"lr": 1e-3}  # 0: epochs rule
    adapt = AdaptParams(lora_steps=10, seed=3)
    assert adapt.adapt_overrides() == {"seed": 3}
    assert adapt.lora_overrides() == {"steps": 10, "seed": 3}


def test_export_params_are_normalised() -> None:
    params = parse_params("export", {"formats": "hpd, pickapic", "jpeg_quality": 300})
    assert isinstance(params, ExportParams)
    assert params.formats == ("hpd", "pickapic") and params.jpeg_quality == 100
    assert params.chosen_licence is None
    assert ExportParams(licence="cc0-1.0").chosen_licence == "cc0-1.0"
    naive = parse_params("export", {"cutoff": "2026-01-02T03:04:05"})
    assert isinstance(naive, ExportParams)
    assert naive.cutoff == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_the_contract_loads_no_torch() -> None:
    code = (
        "import sys, jobqueue.contracts, jobqueue.submit\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'hps')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
