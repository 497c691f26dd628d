"""The fault plan applied to one framed conversation: which bytes go on and where to cut."""

from __future__ import annotations

from taskcore.testing import _wire
from taskcore.testing._faults import FaultPlan, Verdict
from taskcore.testing._wire import Conversation, Part

__all__ = ["Interceptor"]


class Interceptor:
    """Decides, message by message, what one link forwards; bytes in, bytes out, no sockets.

    Each method returns the bytes to forward and whether to cut the link once they are out.
    """

    __slots__ = ("_held", "_plan", "conversation", "withholding")

    def __init__(self, plan: FaultPlan) -> None:
        self._plan = plan
        self.conversation = Conversation()
        self.withholding = False  # a reply is being withheld: hide it, then cut
        self._held: bytearray | None = None  # a client Query not yet complete

    def from_client(self, data: bytes) -> tuple[bytes, bool]:
        """Frame bytes from the client; count round trips and apply statement faults."""
        if self.withholding:
            return b"", False  # the link is cut once the reply is in: nothing more goes up
        conversation = self.conversation
        out = bytearray()
        for event in conversation.client.feed(data):
            if event.part is Part.HEADER and event.kind == _wire.QUERY and not event.startup:
                # Held back until complete: COMMIT detection needs the text, and a
                # cut must come exactly after the whole message.
                self._held = bytearray(event.data)
            elif event.part is Part.BODY and self._held is not None:
                self._held += event.data
            elif event.part is Part.END and self._held is not None:
                message, self._held = bytes(self._held), None
                out += message
                if conversation.ready:
                    verdict = self._statement(message[5:])
                    if verdict is Verdict.CUT:
                        return bytes(out), True
                    if verdict is Verdict.WITHHOLD_REPLY:
                        self.withholding = True
                        break
            elif conversation.ends_round_trip(event):
                self._plan.counters.add(round_trips=1)
            else:
                out += event.data
        return bytes(out), False

    def _statement(self, text: bytes) -> Verdict:
        commit = _wire.is_commit(text)
        self._plan.counters.add(round_trips=1, statements=1, commits=int(commit))
        return self._plan.statement(commit)

    def from_server(self, data: bytes) -> tuple[bytes, bool]:
        """Frame bytes from the server; withhold replies and cut results as armed."""
        framer = self.conversation.server
        out = bytearray()
        for event in framer.feed(data):
            if event.part is Part.RAW:
                out += event.data
            elif self.withholding:
                # The statement's outcome is known once the server is ready again:
                # cut now, the client gets none of the reply.
                if event.part is Part.HEADER and event.kind == _wire.READY_FOR_QUERY:
                    return bytes(out), True
            elif (
                event.part is Part.HEADER
                and event.kind == _wire.DATA_ROW
                and self._plan.cut_at_row(framer.rows)
            ):
                return bytes(out), True
            else:
                out += event.data
        return bytes(out), False
