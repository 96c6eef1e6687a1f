"""What operators see and do: the outbox's state, a stream in detail, retry, prune.

- `status`: totals and the most urgent streams (`app.outbox.ops.status`), at the cost of
  what is pending, not of how many streams exist;
- `detail`: one stream, its cursor and last events (`app.outbox.ops.detail`);
- `retry`, `prune`, `prunable`: the actions (`app.outbox.ops.actions`).

Everything here reads or changes `relay_cursors` (the relay's state per stream) and
`streams` (heads); nothing touches the events themselves except `prune`.
"""

from app.outbox.ops.actions import Prunable, Retried, prunable, prune, retry
from app.outbox.ops.common import MAX_LISTED
from app.outbox.ops.detail import MAX_EVENTS, EventView, StreamDetail, detail
from app.outbox.ops.status import Status, StreamLag, failed, matching, status

__all__ = ["MAX_EVENTS", "MAX_LISTED", "EventView", "Prunable", "Retried", "Status",
           "StreamDetail", "StreamLag", "detail", "failed", "matching", "prunable", "prune",
           "retry", "status"]
