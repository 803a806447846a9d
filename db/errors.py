"""Errors raised by db/ operations; each message is fit to show a user."""

from __future__ import annotations


class DomainError(ValueError):
    """Base class of refusals by a domain operation; nothing was written."""

    code = "domain_error"


class UserOptedOut(DomainError):
    code = "opted_out"

    def __init__(self, user_id: int) -> None:
        super().__init__(f"user {user_id} has opted out; nothing of theirs is stored")
        self.user_id = user_id


class ConsentRequired(DomainError):
    code = "consent_required"

    def __init__(self, user_id: int, guild_id: int) -> None:
        super().__init__(
            f"guild {guild_id} harvests only members who opted in, and user {user_id} has not"
        )
        self.user_id = user_id
        self.guild_id = guild_id


class UnknownGeneration(DomainError):
    code = "unknown_generation"


class UnknownImage(DomainError):
    code = "unknown_image"


class InvalidGeneration(DomainError):
    code = "invalid_generation"


class JobNotFound(DomainError):
    code = "job_not_found"


class JobStateError(DomainError):
    code = "job_state"


class JobLimitReached(DomainError):
    """A user reached their per-minute or open-job limit; the message says which."""

    code = "job_limit_reached"
