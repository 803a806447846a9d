"""Preprocessing matches open_clip's transforms; scoring batches, caches prompts, fails clearly."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from open_clip.transform import image_transform
from PIL import Image

from hps.device import resolve_dtype
from hps.preprocess import ImageLoadError, load_image, normalize, to_uint8_tensor
from hps.scoring import build_scorer


def sample(width: int, height: int, seed: int = 0) -> Image.Image:
    torch.manual_seed(seed)
    return Image.fromarray((torch.rand(height, width, 3) * 255).byte().numpy())


@pytest.mark.parametrize(("mode", "open_clip_mode"), [("pad", "longest"), ("crop", "shortest")])
@pytest.mark.parametrize("size", [(97, 53), (53, 97), (64, 64), (301, 200)])
def test_geometry_matches_open_clip(mode: str, open_clip_mode: str, size: tuple[int, int]) -> None:
    image = sample(*size)
    ours = normalize(to_uint8_tensor(image, 64, mode)[None], torch.float32)[0]  # type: ignore[arg-type]
    theirs = image_transform(64, is_train=False, resize_mode=open_clip_mode)(image)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_pad_keeps_the_whole_image_centred_on_black() -> None:
    wide = Image.new("RGB", (200, 100), (255, 255, 255))
    pixels = to_uint8_tensor(wide, 64, "pad")
    assert pixels.shape == (3, 64, 64)
    assert pixels[:, :15, :].max() == 0 and pixels[:, -15:, :].max() == 0  # bars top/bottom
    assert pixels[:, 20:44, :].min() == 255
    cropped = to_uint8_tensor(wide, 64, "crop")
    assert cropped.min() == 255  # crop cuts the sides instead


def test_scores_are_per_prompt_and_batch_independent() -> None:
    scorer = build_scorer("tiny", device="cpu", dtype="float32")
    images = [sample(40 + i, 60, seed=i) for i in range(9)]
    prompts = ["a cat" if i % 3 else "a dog" for i in range(9)]
    one_batch = scorer.score(prompts, images, batch_size=16)
    small_batches = scorer.score(prompts, images, batch_size=2)
    assert one_batch == pytest.approx(small_batches, abs=1e-4)
    singles = [scorer.score(p, [im])[0] for p, im in zip(prompts, images, strict=True)]
    assert one_batch == pytest.approx(singles, abs=1e-4)
    assert all(-100 <= s <= 100 for s in one_batch)


def test_each_distinct_prompt_is_encoded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    scorer = build_scorer("tiny", device="cpu", dtype="float32")
    encoded: list[int] = []
    original = scorer.model.encode_text

    def counting(tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        encoded.append(len(tokens))
        return original(tokens, normalize=normalize)

    monkeypatch.setattr(scorer.model, "encode_text", counting)
    scorer.score(["a", "b", "a", "a", "b"], [sample(30, 30, i) for i in range(5)])
    assert encoded == [2]


def test_images_from_paths_bytes_and_pil(tmp_path: Path) -> None:
    scorer = build_scorer("tiny", device="cpu", dtype="float32")
    image = sample(50, 40)
    image.save(tmp_path / "a.png")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    scores = scorer.score("x", [tmp_path / "a.png", buffer.getvalue(), image])
    assert scores[0] == pytest.approx(scores[1]) == pytest.approx(scores[2])


def test_unreadable_images_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "text.png").write_text("not an image")
    scorer = build_scorer("tiny", device="cpu", dtype="float32")
    with pytest.raises(ImageLoadError, match=r"text.png: cannot read image"):
        scorer.score("x", [sample(20, 20), tmp_path / "text.png"])
    with pytest.raises(ImageLoadError, match=r"absent\.png: no such file"):
        load_image(tmp_path / "absent.png")
    sample(20, 20).save(tmp_path / "big.png")
    with pytest.raises(ImageLoadError, match=r"big\.png: 20x20 exceeds 100 pixels"):
        load_image(tmp_path / "big.png", max_pixels=100)


def test_bf16_on_cpu_agrees_with_fp32() -> None:
    torch.manual_seed(5)
    fp32 = build_scorer("tiny", device="cpu", dtype="float32")
    state = {k: v.clone() for k, v in fp32.model.state_dict().items()}
    bf16 = build_scorer("tiny", device="cpu", dtype="bfloat16")
    bf16.model.load_state_dict({k: v.to(torch.bfloat16) for k, v in state.items()})
    images = [sample(64, 64, seed=i) for i in range(6)]
    a, b = fp32.score("a photo", images), bf16.score("a photo", images)
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1.5
    with pytest.raises(ValueError, match="float16 is not supported on CPU"):
        resolve_dtype(torch.device("cpu"), "float16")


def test_decoding_processes_give_the_same_scores(tmp_path: Path) -> None:
    paths = []
    for i in range(6):
        sample(70, 50, seed=i).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    torch.manual_seed(1)
    inline = build_scorer("tiny", device="cpu", dtype="float32")
    with type(inline)(
        inline.model, inline.architecture, device="cpu", dtype=torch.float32, decoders=2
    ) as pooled:
        assert pooled.score("x", paths, batch_size=4) == pytest.approx(
            inline.score("x", paths, batch_size=4)
        )
        (tmp_path / "bad.png").write_text("nope")
        with pytest.raises(ImageLoadError, match=r"bad\.png: cannot read image"):
            pooled.score("x", [*paths, tmp_path / "bad.png"], batch_size=4)
