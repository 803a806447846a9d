"""The paper's loss: per prompt, a softmax over the scores of its images and cross-entropy
against the human choice, for sets of different sizes in one batch."""

from __future__ import annotations

import torch


def pad_set_logits(
    flat_logits: torch.Tensor, set_sizes: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scatter the logits of all images (concatenated set by set) into a (sets, max size)
    matrix; padding is -inf so it gets zero probability. Returns (logits, mask)."""
    max_size = max(set_sizes)
    rows = torch.repeat_interleave(
        torch.arange(len(set_sizes), device=flat_logits.device),
        torch.tensor(set_sizes, device=flat_logits.device),
    )
    columns = torch.cat([torch.arange(size, device=flat_logits.device) for size in set_sizes])
    padded = flat_logits.new_full((len(set_sizes), max_size), float("-inf"))
    padded[rows, columns] = flat_logits
    mask = torch.zeros(len(set_sizes), max_size, dtype=torch.bool, device=flat_logits.device)
    mask[rows, columns] = True
    return padded, mask


def preference_loss(
    flat_logits: torch.Tensor, set_sizes: list[int], targets: torch.Tensor
) -> torch.Tensor:
    """Mean over sets of the cross-entropy between softmax(logits of the set) and the target
    distribution (one-hot for a pick, soft for a tie). ``targets`` is (sets, max size), zero
    where padded."""
    padded, mask = pad_set_logits(flat_logits, set_sizes)
    log_probs = torch.log_softmax(padded.float(), dim=-1).masked_fill(~mask, 0.0)
    return -(targets.float() * log_probs).sum(dim=-1).mean()
