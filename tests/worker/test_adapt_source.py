"""The adapt job's choice of source (worker.tasks.adaptation.choose_source), without a worker."""

from __future__ import annotations

import pytest

from jobqueue.contracts import AdaptParams
from worker.errors import JobFailure
from worker.tasks.adaptation import choose_source


@pytest.mark.parametrize(
    ("params", "harvested_prompts", "source", "note"),
    [
        ({}, 8, "harvested", "8 harvested prompts with 4+ images (auto: at least 8)"),
        ({}, 7, "generated", "7 harvested prompts with 4+ images, fewer than 8: generated"),
        ({"prompts": ["a fox", "a cat"]}, 50, "generated", "generated for the job's prompts"),
        ({"source": "generated"}, 0, "generated", "generated, as the job asked"),
        ({"source": "harvested"}, 1, "harvested", "harvested (1 harvested prompts"),
        ({"source": "both"}, 3, "both", "both (3 harvested prompts"),
    ],
)
def test_choose_source(
    params: dict[str, object], harvested_prompts: int, source: str, note: str
) -> None:
    chosen, why = choose_source(AdaptParams.model_validate(params), harvested_prompts, 4)
    assert chosen == source and why.startswith(note)


@pytest.mark.parametrize("source", ["harvested", "both"])
def test_asking_for_harvested_sets_without_any_fails_clearly(source: str) -> None:
    with pytest.raises(JobFailure, match="no harvested image set of 4\\+ images"):
        choose_source(AdaptParams(source=source), 0, 4)  # type: ignore[arg-type]
