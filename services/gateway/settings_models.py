"""REST models of a member's own conversation settings (PATCH
/v1/conversations/{id}/settings, and ``settings`` in the conversation list)."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from im.db import MEMBER_SETTINGS_NAME_CHARS
from im.v1 import group_pb2
from im.validation import MAX_INT64

MUTED_FOREVER = -1
MAX_MUTE_SECONDS = 10 * 366 * 86_400  # the group service's bound: 10 years ahead


class SettingsOut(BaseModel):
    muted: bool = Field(description="Muted now: no push notifications for this conversation.")
    muted_until: int = Field(
        description="When the mute ends, ms since the epoch; 0: not muted; -1: muted forever."
    )
    pinned: bool = Field(description="Pinned: listed first.")
    archived: bool = Field(description="Archived (the client decides how to show it).")
    name: str = Field(description="This user's own name for the conversation; empty: none.")
    updated_at: int = Field(description="Last change, ms since the epoch; 0: never set.")


class SettingsPatch(BaseModel):
    """Only the fields present change; at least one is required."""

    model_config = ConfigDict(extra="forbid")

    muted_until: int | None = Field(
        None,
        ge=MUTED_FOREVER,
        le=MAX_INT64,
        description="Mute until this time (ms since the epoch, at most 10 years ahead); "
        "0 unmutes; -1 mutes forever.",
    )
    mute_for_seconds: int | None = Field(
        None,
        ge=1,
        le=MAX_MUTE_SECONDS,
        description="Instead of muted_until: mute for this many seconds from now.",
    )
    pinned: StrictBool | None = Field(None, description="Pin or unpin.")
    archived: StrictBool | None = Field(None, description="Archive or unarchive.")
    name: str | None = Field(
        None,
        max_length=MEMBER_SETTINGS_NAME_CHARS,
        description=f"Your own name for the conversation, at most "
        f"{MEMBER_SETTINGS_NAME_CHARS} characters; empty clears it.",
    )

    @model_validator(mode="after")
    def _one_mute_and_something(self) -> Self:
        if self.muted_until is not None and self.mute_for_seconds is not None:
            raise ValueError("give muted_until or mute_for_seconds, not both")
        if not self.model_fields_set:
            raise ValueError("nothing to change: give at least one setting")
        return self

    def to_proto(self, now_ms: int) -> group_pb2.MemberSettingsPatch:
        patch = group_pb2.MemberSettingsPatch()
        if self.mute_for_seconds is not None:
            patch.muted_until = now_ms + self.mute_for_seconds * 1000
        elif self.muted_until is not None:
            patch.muted_until = self.muted_until
        if self.pinned is not None:
            patch.pinned = self.pinned
        if self.archived is not None:
            patch.archived = self.archived
        if self.name is not None:
            patch.name = self.name
        return patch


def is_muted(muted_until: int, now_ms: int) -> bool:
    return muted_until == MUTED_FOREVER or muted_until > now_ms


def settings_out(s: group_pb2.MemberSettings, now_ms: int) -> SettingsOut:
    return SettingsOut(
        muted=is_muted(s.muted_until, now_ms),
        muted_until=s.muted_until,
        pinned=s.pinned,
        archived=s.archived,
        name=s.name,
        updated_at=s.updated_at,
    )
