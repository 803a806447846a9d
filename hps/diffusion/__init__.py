"""Stable Diffusion generation and its adaptation to human preference with HPS (LoRA).

A pipeline is opened by name with :func:`hps.diffusion.pipelines.open_pipeline` (``tiny``, built
in code, or a local folder or checkpoint); this package imports nothing itself, so reading a
torch-free module of it (``selection``) loads no torch."""
