"""Batched Human Preference Score: HPS = 100 * cos(image embedding, prompt embedding).

A model's metadata may set another scale; an ``hf-clip`` architecture (PickScore) scores
``logit_scale.exp() * cos`` with the ``transformers`` tokenizer and image geometry
(:mod:`hps.hf_clip`).

Each distinct prompt is tokenised and encoded once per call. On a GPU, images are decoded and
shaped by a pool of processes one batch ahead of the model, so decoding overlaps compute (see
``hps.prefetch``). All model work runs under ``torch.inference_mode``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

import torch

from hps.architectures import Architecture, PreprocessMode
from hps.device import resolve_device, resolve_dtype
from hps.factory import LoadedModel, load_model
from hps.prefetch import default_decoders, make_decode_pool, prefetch_batches
from hps.preprocess import ImageSource, load_image, normalize, shape_pixels, to_uint8_tensor

DEFAULT_SCORE_SCALE = 100.0
# torch.compile modes of the image tower (None: eager). "reduce-overhead" replays CUDA graphs;
# "max-autotune" also searches kernels (minutes of compiling on first use). Compiled towers see
# one batch shape only: score() pads a short last batch, so nothing recompiles.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class ScorerInfo:
    """What produced a score (stored beside it)."""

    architecture: str
    preprocess: PreprocessMode
    device: str
    dtype: str
    score_scale: float


class HpsScorer:
    """Scores images against prompts with one CLIP model."""

    def __init__(
        self,
        model: torch.nn.Module,
        architecture: Architecture,
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        preprocess: PreprocessMode | None = None,
        score_scale: float = DEFAULT_SCORE_SCALE,
        metadata: dict[str, Any] | None = None,
        decoders: int | None = None,
        compile_mode: str | None = None,
    ) -> None:
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.dtype = dtype if isinstance(dtype, torch.dtype) else resolve_dtype(self.device, dtype)
        self.architecture = architecture
        self.preprocess: PreprocessMode = preprocess or architecture.preprocess
        if architecture.is_hf and self.preprocess != architecture.preprocess:
            raise ValueError(
                f"{architecture.name} preprocesses as its transformers processor does "
                f"({architecture.preprocess}); preprocess {self.preprocess!r} is not available"
            )
        self.score_scale = float(score_scale)
        self.metadata = metadata or {}
        self.model: Any = cast(Any, model.to(device=self.device, dtype=self.dtype).eval())
        self.tokenizer = make_tokenizer(architecture)
        self.decoders = default_decoders(self.device) if decoders is None else decoders
        self._pool: Executor | None = None
        self._encode_image: Callable[..., torch.Tensor] = self.model.encode_image
        self.compile_mode = compile_mode or None
        if self.compile_mode is not None:
            if self.compile_mode not in COMPILE_MODES:
                raise ValueError(
                    f"compile mode must be one of {', '.join(COMPILE_MODES)}, "
                    f"not {self.compile_mode!r}"
                )
            self._encode_image = torch.compile(
                self.model.encode_image, mode=self.compile_mode, dynamic=False
            )

    def close(self) -> None:
        """Stop the decoding processes (they are started on first use)."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __enter__(self) -> HpsScorer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @classmethod
    def from_loaded(
        cls,
        loaded: LoadedModel,
        *,
        device: str = "auto",
        dtype: str = "auto",
        preprocess: PreprocessMode | None = None,
        compile_mode: str | None = None,
    ) -> HpsScorer:
        """A scorer for a model from :func:`hps.factory.load_model`, honouring its metadata."""
        return cls(
            loaded.model,
            loaded.architecture,
            device=device,
            dtype=dtype,
            preprocess=preprocess or loaded.metadata.get("preprocess"),
            score_scale=float(loaded.metadata.get("score_scale", DEFAULT_SCORE_SCALE)),
            metadata=loaded.metadata,
            compile_mode=compile_mode,
        )

    @property
    def info(self) -> ScorerInfo:
        """How scores are produced."""
        return ScorerInfo(
            architecture=self.architecture.name,
            preprocess=self.preprocess,
            device=str(self.device),
            dtype=str(self.dtype).removeprefix("torch."),
            score_scale=self.score_scale,
        )

    @property
    def model_input(self) -> tuple[PreprocessMode, int] | None:
        """(geometry, size) of the stored model input this scorer can read instead of the
        original image (``media.model_inputs``: its own geometry maps that input to the same
        pixels), or None for an ``hf-clip`` architecture, whose processor's geometry differs."""
        if self.architecture.is_hf:
            return None
        return self.preprocess, self.architecture.image_size

    def pixels(self, source: ImageSource) -> torch.Tensor:
        """Load and shape one image: a (3, S, S) uint8 tensor on the CPU."""
        if self.architecture.is_hf:
            return torch.from_numpy(self._shape(source)).permute(2, 0, 1)
        return to_uint8_tensor(load_image(source), self.architecture.image_size, self.preprocess)

    @property
    def _shape(self) -> Callable[[ImageSource], Any]:
        size = self.architecture.image_size
        if self.architecture.is_hf:
            from hps.hf_clip import hf_shape_pixels

            return partial(hf_shape_pixels, size=size, backend=self.architecture.image_backend)
        return partial(shape_pixels, size=size, mode=self.preprocess)

    @torch.inference_mode()
    def encode_text(self, prompts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """L2-normalised prompt embeddings (float32), one row per prompt."""
        rows = []
        for start in range(0, len(prompts), batch_size):
            tokens = self.tokenizer(list(prompts[start : start + batch_size])).to(self.device)
            rows.append(self.model.encode_text(tokens, normalize=True).float())
        return torch.cat(rows) if rows else torch.empty(0)

    @torch.inference_mode()
    def encode_pixels(self, pixels: torch.Tensor, pad_to: int | None = None) -> torch.Tensor:
        """L2-normalised image embeddings (float32) of a uint8 (N, 3, S, S) batch. With
        ``pad_to`` a shorter batch is padded with blank images to that many (a compiled tower
        keeps one shape) and only the N real rows are returned."""
        count = len(pixels)
        if pad_to is not None and count < pad_to:
            blank = pixels.new_zeros((pad_to - count, *pixels.shape[1:]))
            pixels = torch.cat([pixels, blank])
        batch = normalize(pixels.to(self.device, non_blocking=True), self.dtype)
        return self._encode_image(batch, normalize=True)[:count].float()

    def score(
        self,
        prompts: str | Sequence[str],
        images: Sequence[ImageSource],
        *,
        batch_size: int = 32,
    ) -> list[float]:
        """HPS of each image for its prompt (one prompt for all, or one per image)."""
        prompt_list = [prompts] * len(images) if isinstance(prompts, str) else list(prompts)
        if len(prompt_list) != len(images):
            raise ValueError(f"{len(prompt_list)} prompts for {len(images)} images")
        if not images:
            return []
        distinct = list(dict.fromkeys(prompt_list))
        text = self.encode_text(distinct)
        row_of = {prompt: row for row, prompt in enumerate(distinct)}
        prompt_rows = torch.tensor([row_of[p] for p in prompt_list], device=text.device)
        scores: list[float] = []
        starts = range(0, len(images), batch_size)
        batches = [images[start : start + batch_size] for start in starts]
        pinned = self.device.type == "cuda"
        if self._pool is None and self.decoders > 0:
            self._pool = make_decode_pool(self.decoders)
        loaded = prefetch_batches(batches, self._shape, executor=self._pool, pin_memory=pinned)
        pad_to = batch_size if self.compile_mode is not None else None
        for start, pixels in zip(starts, loaded, strict=True):
            features = self.encode_pixels(pixels, pad_to)
            rows = text[prompt_rows[start : start + len(pixels)]]
            scores.extend((self.score_scale * (features * rows).sum(dim=-1)).tolist())
        return scores


def make_tokenizer(architecture: Architecture) -> Callable[[list[str]], torch.Tensor]:
    """Prompts -> token ids for ``architecture``'s text encoder: open_clip's tokenizer, or
    for an ``hf-clip`` architecture the ``transformers`` CLIP tokenizer."""
    if architecture.is_hf:
        from hps.hf_clip import HfClipTokenizer

        return HfClipTokenizer(architecture.context_length)
    from open_clip.tokenizer import SimpleTokenizer

    return cast(
        Callable[[list[str]], torch.Tensor],
        SimpleTokenizer(context_length=architecture.context_length),
    )


def build_scorer(
    arch: str | None,
    checkpoint: str | Path | None = None,
    *,
    device: str = "auto",
    dtype: str = "auto",
    preprocess: PreprocessMode | None = None,
    sha256: str | None = None,
    compile_mode: str | None = None,
) -> HpsScorer:
    """A ready scorer of ``arch`` with ``checkpoint``'s weights (see
    :func:`hps.factory.load_model` for the model arguments); ``compile_mode``: one of
    :data:`COMPILE_MODES` to ``torch.compile`` the image tower, None for eager."""
    loaded = load_model(arch, checkpoint, sha256=sha256)
    return HpsScorer.from_loaded(
        loaded, device=device, dtype=dtype, preprocess=preprocess, compile_mode=compile_mode
    )
