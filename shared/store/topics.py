"""The messages Mnemo's topics carry, each defined once: what its publishers send and what its
subscribers read come from the same class (docs/architecture.md, "Flow of a conversation").

Topic names are the short names of `infra/resources.yaml`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self


@dataclass(frozen=True)
class ConversationFinished:
    """`conversation.finished`: a conversation of `uid` is `processing` and wants
    post-processing; `reason` says who moved it there (`finished`, `timeout`, `reprocess`,
    `requeued`). The same fields go in the payload (what post-processing reads) and in the
    attributes (what Pub/Sub, a dead-letter record and a log show without decoding)."""

    topic: ClassVar[str] = "conversation.finished"

    uid: str
    conversation_id: str
    reason: str

    @property
    def fields(self) -> dict[str, str]:
        """The message's payload, and its attributes alike."""
        return {"uid": self.uid, "conversation_id": self.conversation_id, "reason": self.reason}

    @classmethod
    def parse(cls, message: Mapping[str, Any]) -> Self:
        """The message in a Pub/Sub push (`message` of the push body: base64 `data`), read from
        its payload; `ValueError` if the payload names no conversation."""
        try:
            payload = json.loads(base64.b64decode(message.get("data") or b""))
            return cls(
                uid=str(payload["uid"]),
                conversation_id=str(payload["conversation_id"]),
                reason=str(payload.get("reason", "")),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError("the message names no conversation") from error
