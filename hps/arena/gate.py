"""The human gate: a LoRA candidate is promoted only when it beats the active model in the
arena — a head-to-head win rate (ties half) over at least ``min_votes`` votes whose interval's
low end is above ``threshold`` (0.5).

The rule itself (policy, Wilson interval, decision and its sentence) is :mod:`rules.gate`,
shared with ``db.arena_gate``, which decides gate runs in the database; this module applies
it to a rated :class:`~hps.arena.ratings.HeadToHead` record. Both-bad votes count as ties by
default, as in the ratings (see :mod:`hps.arena.ratings`).
"""

from __future__ import annotations

from hps.arena.ratings import HeadToHead
from rules.gate import GateDecision, GatePolicy, GateRecord, decide

__all__ = ["GateDecision", "GatePolicy", "gate_decision"]


def gate_decision(record: HeadToHead, policy: GatePolicy | None = None) -> GateDecision:
    """Decide the gate from the candidate's record against the active model (``record.first``
    is the candidate). The reason is a sentence a channel can read."""
    gate_record = GateRecord(
        record.first, record.second, record.wins, record.ties, record.losses, record.both_bad
    )
    return decide(gate_record, policy)
