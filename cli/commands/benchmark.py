"""``hps benchmark``: an HPSv2-style benchmark of a generator (and optionally a LoRA): mean HPS
± std per style of prompts over a few seeds per prompt; JSON, a table and a grid PNG."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.model_options import add_model_arguments, require_model
from cli.output import print_json

if TYPE_CHECKING:
    from hps.diffusion.benchmark import BenchmarkSettings, StylePrompts, StyleResult

LORA_ADAPTER = "benchmark"
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
# The weights of `tiny` and of a random-init HPS model (hps adapt's default --seed): a LoRA
# adapted on `tiny` fits it. --first-seed moves the images' seeds only.
MODEL_SEED = 0


def register(subcommands: argparse._SubParsersAction) -> None:
    """Add ``hps benchmark`` to the ``hps`` parser."""
    benchmark = subcommands.add_parser(
        "benchmark",
        help="mean HPS per style of prompts of a generator (HPSv2's benchmark)",
        description="Generate images for prompts grouped by style (HPSv2's benchmark: anime, "
        "concept-art, paintings, photo), score each with an HPS model, and report the mean "
        "HPS ± std per style: JSON and a table on stdout, benchmark.json, benchmark.txt and "
        "grid.png in --out.",
    )
    benchmark.add_argument(
        "--pipeline",
        required=True,
        help="diffusers folder, checkpoint, 'tiny' (random weights) or 'toy' (small pretrained)",
    )
    benchmark.add_argument(
        "--prompts",
        required=True,
        help="a JSON object {style: [prompts]}, a <style>.json list or a folder of them "
        "(HPSv2's layout), or a text file of 'style<TAB>prompt' lines (bare prompts: style "
        "'all')",
    )
    benchmark.add_argument("--lora", help="a LoRA folder to apply (as written by hps adapt)")
    add_model_arguments(benchmark)
    benchmark.add_argument("--out", required=True, help="folder for the results")
    _add_generation_arguments(benchmark)
    benchmark.set_defaults(handler=cmd_benchmark)


def _add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", type=int, default=1, help="images per prompt (default 1)")
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="prompt i's images use seeds first + 1000 i + k (default 0)",
    )
    parser.add_argument("--inference-steps", type=int, default=25)
    parser.add_argument("--guidance-scale", type=float, default=7.5)
    parser.add_argument(
        "--negative-prompt",
        help="e.g. 'Weird image. ' for a LoRA adapted as in the paper (default: none)",
    )
    parser.add_argument(
        "--limit-per-style", type=int, help="only the first N prompts of each style"
    )
    parser.add_argument("--batch-size", type=int, default=4, help="images generated at once")
    parser.add_argument("--grid-columns", type=int, default=4, help="images per style in the grid")
    parser.add_argument(
        "--save-images",
        action="store_true",
        help="also write every image as images/<style>/<prompt index>_<seed>.png",
    )


def benchmark_settings(args: argparse.Namespace) -> BenchmarkSettings:
    """The generation settings of the command line (BenchmarkError when out of range)."""
    from hps.diffusion.benchmark import BenchmarkSettings

    return BenchmarkSettings(
        seeds=args.seeds,
        first_seed=args.first_seed,
        inference_steps=args.inference_steps,
        guidance_scale=args.guidance_scale,
        negative_prompt=args.negative_prompt or None,
        batch_size=args.batch_size,
        grid_columns=args.grid_columns,
    )


def check_inputs(args: argparse.Namespace) -> tuple[StylePrompts, BenchmarkSettings]:
    """Everything that can be refused before a model is loaded: the model options, the LoRA
    folder, the prompts and the settings."""
    from hps.diffusion.benchmark import limit_styles, read_style_prompts

    require_model(args, warn_random=True)
    if args.lora and not (Path(args.lora) / LORA_WEIGHTS).is_file():
        raise ValueError(f"--lora {args.lora}: no {LORA_WEIGHTS} in that folder")
    styles = limit_styles(read_style_prompts(Path(args.prompts)), args.limit_per_style)
    return styles, benchmark_settings(args)


def run_description(args: argparse.Namespace, settings: BenchmarkSettings) -> dict[str, Any]:
    """What was benchmarked and how (the head of benchmark.json)."""
    return {
        "pipeline": args.pipeline,
        "lora": args.lora,
        "hps_model": {"arch": args.arch, "checkpoint": args.checkpoint},
        "prompts_file": args.prompts,
        "seeds": settings.seeds,
        "first_seed": settings.first_seed,
        "inference_steps": settings.inference_steps,
        "guidance_scale": settings.guidance_scale,
        "negative_prompt": settings.negative_prompt,
        "limit_per_style": args.limit_per_style,
    }


def generate_and_score(
    args: argparse.Namespace, styles: StylePrompts, settings: BenchmarkSettings
) -> list[StyleResult]:
    """Open the pipeline (with the LoRA) and the HPS model; run the benchmark with a progress
    bar; with ``--save-images``, write every image."""
    import torch
    from tqdm import tqdm

    from hps.device import resolve_device
    from hps.diffusion.benchmark import image_path, run_benchmark
    from hps.diffusion.pipelines import GeneratedImage, open_pipeline, use_lora
    from hps.scoring import build_scorer

    device = resolve_device(args.device)
    pipe = open_pipeline(args.pipeline, device, seed=MODEL_SEED)
    if args.lora:
        use_lora(pipe, Path(args.lora), LORA_ADAPTER)
    torch.manual_seed(MODEL_SEED)  # a random-init HPS model is the same on every run
    scorer = build_scorer(
        args.arch,
        args.checkpoint,
        device=str(device),
        dtype=args.dtype,
        preprocess=args.preprocess,
        sha256=args.sha256,
    )
    out = Path(args.out)

    def save(style: str, index: int, generated: GeneratedImage) -> None:
        path = image_path(out, style, index, generated.seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        generated.image.save(path)

    total = sum(len(prompts) for prompts in styles.values()) * settings.seeds
    with scorer, tqdm(total=total, unit="img", desc="benchmark") as bar:

        def progress(style: str, images: int) -> None:
            bar.set_postfix_str(style[:20])
            bar.update(images)

        return run_benchmark(
            pipe,
            scorer,
            styles,
            settings,
            on_images=progress,
            save_image=save if args.save_images else None,
        )


def cmd_benchmark(args: argparse.Namespace) -> int:
    """Run the benchmark; write benchmark.json, benchmark.txt and grid.png; print the summary
    JSON, then the table."""
    import json

    from hps.diffusion.benchmark import (
        benchmark_document,
        draw_grid,
        format_table,
        summarise_style,
        summary_dict,
    )

    styles, settings = check_inputs(args)
    run = run_description(args, settings)
    results = generate_and_score(args, styles, settings)
    summaries = [summarise_style(result.style, result.scores) for result in results]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    grid = draw_grid(results, summaries, out / "grid.png")
    document = benchmark_document(results, summaries, run)
    (out / "benchmark.json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    table = format_table(summaries)
    (out / "benchmark.txt").write_text(table + "\n", encoding="utf-8")
    print_json(
        {**run, **summary_dict(summaries), "json": str(out / "benchmark.json"), "grid": str(grid)}
    )
    print()
    print(table)
    sys.stdout.flush()
    return 0
