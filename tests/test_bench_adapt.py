"""``bench.adapt`` runs end to end at a tiny size on the ``tiny`` pipeline (both training arms
take every step, generation makes every image, the JSON is the result), and the product's
encoding cache that the bench measures gives exactly what encoding every step gives."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest
import torch

from bench import adapt
from hps.diffusion.lora_training import EncodedExamples, _pixels
from hps.diffusion.pipelines import build_tiny_pipeline


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_bench_adapt_small(capsys: pytest.CaptureFixture[str]) -> None:
    result = adapt.main(
        ["--pipeline", "tiny", "--steps", "4", "--warmup", "1", "--rounds", "2",
         "--batch-size", "2", "--examples", "6", "--images", "2", "--gen-batch", "2",
         "--inference-steps", "2", "--threads", "1", "--json"]
    )  # fmt: skip
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(result))
    train, gen = result["training"], result["generation"]
    assert (train["resolution"], train["batch_size"], train["examples"]) == (64, 2, 6)
    assert train["product_steps"] == train["bare_steps"] == [4, 4]  # every step, both arms
    for arm in ("product", "bare"):
        for rate in ("steps_per_s", "whole_steps_per_s", "cpu_steps_per_s"):
            assert train[f"{arm}_{rate}"] > 0
        assert len(train[f"{arm}_rounds_steps_per_s"]) == 2
        assert all(math.isfinite(loss) and loss > 0 for loss in train[f"{arm}_final_loss"])
    assert train["ratio"] == pytest.approx(train["product_steps_per_s"] / train["bare_steps_per_s"])
    assert gen["product_image_counts"] == gen["bare_image_counts"] == [2, 2]
    assert gen["image_size"] == [64, 64] and gen["inference_steps"] == 2
    assert gen["ratio"] == pytest.approx(gen["product_images_per_s"] / gen["bare_images_per_s"])
    assert gen["product_cpu_images_per_s"] > 0 and gen["bare_cpu_images_per_s"] > 0

    adapt.print_table(result)
    table = capsys.readouterr().out
    assert "product train_lora" in table and "product generate()" in table


def test_rates_from_timestamps() -> None:
    wall = [2.0, 3.0, 3.5, 4.0]
    measured = adapt.Round("bare", (0.0, 10.0), [(w, 10 + w / 2) for w in wall])
    assert measured.whole() == 1.0  # 4 steps in 4 s, set-up included
    assert measured.steady(1) == 3 / 2.0  # steps 2..4 after the first step's stamp
    assert measured.steady(2) == 2 / 1.0
    assert measured.whole(clock=1) == 2.0 and measured.steady(1, clock=1) == 3.0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "3", "--warmup", "3"], "need 1 <= --warmup < --steps"),
        (["--rounds", "0"], "--rounds must be at least 1"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
    ],
)
def test_bad_arguments_are_refused(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        adapt.parse_args(argv)
    assert message in capsys.readouterr().err


def test_cached_encodings_equal_encoding_every_step() -> None:
    pipe = build_tiny_pipeline(seed=0)
    examples = adapt.make_examples(5, 64)
    encoded = EncodedExamples(pipe, examples)
    rows = {"vae": 0, "text": 0}
    vae_encode, text_forward = pipe.vae.encode, pipe.text_encoder.forward

    def counting_encode(*args: Any, **kwargs: Any) -> Any:
        rows["vae"] += len(args[0])
        return vae_encode(*args, **kwargs)

    def counting_text(*args: Any, **kwargs: Any) -> Any:
        rows["text"] += len(args[0])
        return text_forward(*args, **kwargs)

    pipe.vae.encode, pipe.text_encoder.forward = counting_encode, counting_text
    rng = random.Random(1)
    seen: set[int] = set()
    for _ in range(6):
        indices = [rng.randrange(len(examples)) for _ in range(3)]
        seen.update(indices)
        torch.manual_seed(7)
        latents, context = encoded.batch(indices)
        torch.manual_seed(7)
        with torch.no_grad():
            pixels = _pixels([examples[i].image for i in indices], encoded.size)
            sample = vae_encode(pixels).latent_dist.sample()
            tokens = pipe.tokenizer(
                [examples[i].caption for i in indices],
                padding="max_length",
                max_length=pipe.tokenizer.model_max_length,
                return_tensors="pt",
            ).input_ids
            expected_context = text_forward(tokens)[0]
        torch.testing.assert_close(latents, sample * pipe.vae.config.scaling_factor)
        torch.testing.assert_close(context, expected_context)
    # Each picture and each caption went through its encoder once, not once a step.
    assert len(seen) > 3  # several batches drew examples encoded before
    assert rows["vae"] == len(encoded.latent_mean) == len(seen)
    assert rows["text"] == len(encoded.context) == len({examples[i].caption for i in seen})
