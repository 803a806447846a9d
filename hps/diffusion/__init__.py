"""Stable Diffusion generation and its adaptation to human preference with HPS (LoRA)."""
