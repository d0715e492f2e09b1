"""The MongoDB writes of recall and edit events (``event_plan``'s changes as
update operations of one ordered bulk write), for ``MongoMessageStore``."""

from __future__ import annotations

from typing import Any

from bson import Int64
from pymongo import UpdateMany, UpdateOne

from im.adapters import event_plan
from im.adapters.mongo_search import search_fields
from im.events import EDIT


def target_of(d: dict[str, Any]) -> event_plan.Target:
    return event_plan.Target(
        msg_id=int(d["_id"]),
        conversation_id=d["conversation_id"],
        content_type=d.get("content_type", ""),
        recalled=bool(d.get("recalled", False)),
        edit_seq=int(d.get("edit_seq", 0)),
    )


def writes_of(change: event_plan.Change) -> list[UpdateOne | UpdateMany]:
    if isinstance(change, event_plan.Recall):
        target = Int64(change.target)
        return [
            UpdateOne(
                {"_id": target},
                {
                    "$set": {"recalled": True, "body": b"", **search_fields("", b"")},
                    "$unset": {"attachment_ids": ""},
                },
            ),
            UpdateMany(
                {
                    "refers_to": target,
                    "conversation_id": change.conversation_id,
                    "content_type": EDIT,
                },
                {"$set": {"body": b""}},
            ),
        ]
    if isinstance(change, event_plan.Edit):
        values = {
            "body": change.body,
            "edited_at": Int64(change.edited_at),
            "edit_seq": Int64(change.edit_seq),
            # Only text messages are edited: the new text is what search finds.
            **search_fields("text/plain", change.body),
        }
        return [UpdateOne({"_id": Int64(change.target)}, {"$set": values})]
    return [UpdateOne({"_id": Int64(change.msg_id)}, {"$set": {"body": b""}})]
