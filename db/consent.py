"""The one consent predicate: what of a user who opted out may still be used.

Decision: a user who opts out has, from then on, **their choices and the generations they
requested** excluded from everything that feeds training, exports, statistics and percentiles
(a generation's prompt is its requester's words; its images were made for them). The rows stay
until the user asks to be forgotten (``/hps privacy forget-me`` deletes them), so an opt-in
brings them back. Every query that feeds those uses the expressions below; none writes its own.

The same decision at write time: nothing of a user who opted out is stored from then on, and in
an opt-in guild nothing of a user who has not opted in; harvesting, the bot's own generations
and dataset imports all write through :func:`db.ingest.record_generation` and
:func:`db.ingest.record_choice`, which enforce it under the user's row lock.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnElement

from db.models import Choice, DiscordUser, Generation


def user_consents(user_id: Any) -> ColumnElement[bool]:
    """True where the user in ``user_id`` (a column, or NULL for nobody) has not opted out."""
    user = aliased(DiscordUser)
    opted_out = exists(select(user.id).where(user.id == user_id, user.opted_out.is_(True)))
    return ~opted_out


def generation_consents() -> ColumnElement[bool]:
    """A generation may be used: its requester (if any) has not opted out."""
    return user_consents(Generation.requester_id)


def choice_consents() -> ColumnElement[bool]:
    """A choice may be used: its chooser has not opted out, nor has the requester of the
    generation it was made on (the query must join ``Generation``)."""
    return user_consents(Choice.user_id) & generation_consents()
