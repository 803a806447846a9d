"""Scoring throughput of hps/ against its baselines, in one process on the same images.

    .venv/bin/python -m bench.score [--arch hps-v1] [--images 64] [--batch 16] [--json]
    .venv/bin/python -m bench.score --device cuda --arch hps-v2 --batch 64 --images 2048

Rows (random weights: timing only):
- bare: ``encode_image`` + ``encode_text`` on pixels already decoded and shaped, same batch,
  one distinct prompt per image (so prompt de-duplication cannot help the product);
- product: ``HpsScorer.score`` from PNG bytes (512 px), decoding in threads included;
- product from stored model inputs: the same call on the images' stored model inputs
  (``media.model_inputs``: decoded once at intake, longest side at the model resolution);
- naive: in the style of the public ``hpsv2.score``: one image at a time, prompt re-tokenised
  per image, checkpoint reloaded from disk per call (run on fewer images, reported per image);
- on CPU, the same product call in fp32 vs bf16 weights, with score agreement.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.common import synthetic_png
from hps.architectures import get_architecture
from hps.device import resolve_device, resolve_dtype
from hps.factory import load_model
from hps.preprocess import load_image, normalize, to_uint8_tensor
from hps.scoring import COMPILE_MODES, HpsScorer
from media.model_inputs import ModelInputSpec, make_model_input


def timed(function: Callable[[], Any], repeat: int = 1) -> float:
    """Best wall time of ``repeat`` runs (after the caller's warm-up)."""
    best = float("inf")
    for _ in range(repeat):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        function()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def bare_encode(scorer: HpsScorer, pixels: torch.Tensor, prompts: list[str], batch: int) -> None:
    model: Any = scorer.model
    with torch.inference_mode():
        for start in range(0, len(pixels), batch):
            chunk = normalize(pixels[start : start + batch].to(scorer.device), scorer.dtype)
            tokens = scorer.tokenizer(prompts[start : start + batch]).to(scorer.device)
            image = model.encode_image(chunk, normalize=True)
            text = model.encode_text(tokens, normalize=True)
            (100 * (image * text).sum(-1)).float().cpu()


def naive_loop(
    arch: str, checkpoint: Path, pngs: list[bytes], prompts: list[str], device: str
) -> None:
    from open_clip.tokenizer import SimpleTokenizer

    architecture = get_architecture(arch)
    for png, prompt in zip(pngs, prompts, strict=True):
        model: Any = load_model(arch, checkpoint).model.to(device)  # reloaded per call
        tokenizer = SimpleTokenizer()  # re-built and re-run per image
        pixels = to_uint8_tensor(load_image(png), architecture.image_size, "pad")[None]
        with torch.no_grad():
            image = model.encode_image(normalize(pixels.to(device), torch.float32), normalize=True)
            text = model.encode_text(tokenizer([prompt]).to(device), normalize=True)
            float(100 * (image * text).sum())


def spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def main() -> None:
    parser = argparse.ArgumentParser(description="scoring throughput")
    parser.add_argument("--arch", default="hps-v1")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--naive-images", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--decoders", type=int, default=None, help="decoding processes")
    parser.add_argument(
        "--compile",
        nargs="?",
        const="default",
        default=None,
        choices=COMPILE_MODES,
        help="torch.compile the image tower (mode; default: %(const)s)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    device = resolve_device(args.device)
    dtype = resolve_dtype(device, args.dtype)
    pngs = [synthetic_png(i) for i in range(min(args.images, 256))]
    pngs = (pngs * (args.images // len(pngs) + 1))[: args.images]
    prompts = [
        f"prompt number {i}: a castle on a hill, detailed, golden hour" for i in range(args.images)
    ]
    torch.manual_seed(0)
    loaded = load_model(args.arch)
    scorer = HpsScorer(
        loaded.model,
        loaded.architecture,
        device=device,
        dtype=dtype,
        decoders=args.decoders,
        compile_mode=args.compile,
    )
    size = scorer.architecture.image_size
    pixels = torch.stack([to_uint8_tensor(load_image(p), size, "pad") for p in pngs])

    rows: dict[str, float] = {}
    warm = min(len(pngs), args.batch)
    bare_encode(scorer, pixels[:warm], prompts[:warm], args.batch)
    rows["bare encode_image+encode_text (pre-decoded)"] = args.images / timed(
        lambda: bare_encode(scorer, pixels, prompts, args.batch), repeat=2
    )
    scorer.score(prompts[:warm], pngs[:warm], batch_size=args.batch)
    rows["product HpsScorer.score (from PNG bytes)"] = args.images / timed(
        lambda: scorer.score(prompts, pngs, batch_size=args.batch), repeat=2
    )
    if scorer.model_input is not None:  # hf-clip architectures keep their own geometry
        spec = ModelInputSpec(*scorer.model_input)
        inputs = [make_model_input(load_image(p), spec) for p in pngs]
        scorer.score(prompts[:warm], inputs[:warm], batch_size=args.batch)
        rows["product HpsScorer.score (from stored model inputs)"] = args.images / timed(
            lambda: scorer.score(prompts, inputs, batch_size=args.batch), repeat=2
        )
    pixels_only = rows["bare encode_image+encode_text (pre-decoded)"]
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "arch": args.arch,
        "dtype": str(dtype),
        "batch": args.batch,
        "images": args.images,
        "compile": args.compile or "eager",
    }
    if device.type == "cuda":
        with torch.inference_mode():
            batch = normalize(pixels[: args.batch].to(device), dtype)
            for _ in range(3):  # warm-up with the exact call (a compiled graph is specialised)
                scorer._encode_image(batch, normalize=True)
            reps = max(1, args.images // args.batch)
            seconds = timed(
                lambda: [scorer._encode_image(batch, normalize=True) for _ in range(reps)], repeat=2
            )
        rows["model only encode_image (pre-normalised, on GPU)"] = reps * args.batch / seconds

    if args.naive_images:
        with tempfile.TemporaryDirectory() as folder:
            checkpoint = Path(folder) / "model.pth"
            torch.save({"state_dict": scorer.model.float().state_dict()}, checkpoint)
            scorer.model.to(dtype)
            count = args.naive_images
            naive_s = timed(
                lambda: naive_loop(
                    args.arch, checkpoint, pngs[:count], prompts[:count], str(device)
                )
            )
        rows["naive hpsv2-style loop (fp32, reload per image)"] = count / naive_s

    if device.type == "cpu":
        state = {k: v.float().clone() for k, v in scorer.model.state_dict().items()}
        fp32 = HpsScorer(
            load_model(args.arch).model, scorer.architecture, device=device, dtype=torch.float32
        )
        fp32.model.load_state_dict(state)
        subset = pngs[: max(args.batch, 16)]
        sub_prompts = prompts[: len(subset)]
        fp32.score(sub_prompts[:2], subset[:2])
        fp32_s = timed(lambda: fp32.score(sub_prompts, subset, batch_size=args.batch))
        bf16 = HpsScorer(
            load_model(args.arch).model, scorer.architecture, device=device, dtype=torch.bfloat16
        )
        bf16.model.load_state_dict({k: v.to(torch.bfloat16) for k, v in state.items()})
        bf16.score(sub_prompts[:2], subset[:2])
        bf16_s = timed(lambda: bf16.score(sub_prompts, subset, batch_size=args.batch))
        a = fp32.score(sub_prompts, subset, batch_size=args.batch)
        b = bf16.score(sub_prompts, subset, batch_size=args.batch)
        result["cpu_bf16_vs_fp32"] = {
            "speedup": fp32_s / bf16_s,
            "spearman": spearman(a, b),
            "max_abs_diff": max(abs(x - y) for x, y in zip(a, b, strict=True)),
            "images": len(subset),
        }

    product = rows["product HpsScorer.score (from PNG bytes)"]
    result["images_per_s"] = rows
    result["product_overhead_vs_bare"] = 1 - product / pixels_only
    if "naive hpsv2-style loop (fp32, reload per image)" in rows:
        result["product_vs_naive"] = (
            product / rows["naive hpsv2-style loop (fp32, reload per image)"]
        )
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"device {result['device']}  arch {args.arch}  dtype {dtype}  batch {args.batch}")
    print(f"{'measurement':55} {'images/s':>10}")
    for name, value in rows.items():
        print(f"{name:55} {value:>10.2f}")
    print(f"product overhead vs bare: {result['product_overhead_vs_bare']:+.1%} (target <= 5%)")
    if "product_vs_naive" in result:
        print(f"product vs naive loop: {result['product_vs_naive']:.1f}x (target >= 3x)")
    if "cpu_bf16_vs_fp32" in result:
        c = result["cpu_bf16_vs_fp32"]
        print(
            f"CPU bf16 vs fp32: {c['speedup']:.2f}x faster, Spearman {c['spearman']:.4f}, "
            f"max |diff| {c['max_abs_diff']:.3f} HPS points over {c['images']} images"
        )


if __name__ == "__main__":
    main()
