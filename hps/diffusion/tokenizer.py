"""A transformers ``CLIPTokenizer`` built offline from open_clip's bundled BPE vocabulary, so a
pipeline can be made in code without downloading anything. Token ids match open_clip's."""

from __future__ import annotations

import gzip
import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

CONTEXT_LENGTH = 77
MERGES_USED = 49152 - 256 - 2


def _bytes_to_unicode() -> dict[int, str]:
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes), strict=True))


def write_vocabulary(folder: Path) -> tuple[Path, Path]:
    """Write ``vocab.json`` and ``merges.txt`` derived from open_clip's BPE file."""
    source = resources.files("open_clip").joinpath("bpe_simple_vocab_16e6.txt.gz")
    lines = gzip.decompress(source.read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : MERGES_USED + 1]]
    vocab = list(_bytes_to_unicode().values())
    vocab += [token + "</w>" for token in vocab]
    vocab += ["".join(merge) for merge in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    vocab_path, merges_path = folder / "vocab.json", folder / "merges.txt"
    vocab_path.write_text(json.dumps({token: index for index, token in enumerate(vocab)}))
    merges_path.write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return vocab_path, merges_path


@cache
def offline_clip_tokenizer(folder: str | None = None) -> Any:
    """A CLIPTokenizer (model_max_length 77) from open_clip's vocabulary, cached."""
    import tempfile

    from transformers import CLIPTokenizer

    target = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="hps-clip-tokenizer-"))
    vocab, merges = write_vocabulary(target)
    return CLIPTokenizer(str(vocab), str(merges), model_max_length=CONTEXT_LENGTH)
