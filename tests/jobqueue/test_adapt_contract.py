"""The adapt job's contract: rows queued before ``source`` existed still parse and mean
``auto``; reports written before ``source`` existed read as generated."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from jobqueue.contracts import AdaptParams, AdaptReport


def test_old_params_parse_as_auto_and_new_fields_reach_the_recipe() -> None:
    old = AdaptParams.model_validate({"limit_prompts": 40, "lora_steps": 10})
    assert old.source == "auto" and old.min_harvested_prompts == 8
    assert old.adapt_overrides() == {}
    new = AdaptParams.model_validate(
        {"source": "harvested", "min_images": 5, "human_picks": False, "min_harvested_prompts": 2}
    )
    assert new.adapt_overrides() == {"min_images": 5, "human_picks": False}
    with pytest.raises(ValidationError):
        AdaptParams.model_validate({"source": "somewhere"})


def test_old_reports_read_as_generated() -> None:
    report = AdaptReport.model_validate({"name": "lora-1", "evaluation": {"win_rate": 0.5}})
    assert report.source == "generated" and report.source_note == ""
