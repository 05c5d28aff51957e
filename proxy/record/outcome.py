"""How an exchange ended, decided in one place: from how its bytes ended and what its body says.

Invariants:
- ``settle`` is the only code that sets ``Exchange.outcome``, and the only code that changes ``status``
  after the live path set it: the live path records facts (``ending``, ``delivered``), the API family's
  fold of the body says where the response was complete (its end marker), and this judges.
- A response whose end marker reached the client is complete, whatever happened to the connection after
  it (a client that closes right after ``[DONE]`` got the whole answer: 200, not 499).
- A stream that ends without its end marker is cut, never complete; an error the stream itself carried
  (an HTTP 200 failure) is ``upstream_error_event``.
"""

from __future__ import annotations

from proxy.record.exchange import Ending, Exchange, Outcome

CLIENT_CLOSED_REQUEST = 499
# The cause the live path saw, for a response whose end marker the client never got.
_CAUSE = {
    Ending.CLIENT_LEFT: Outcome.CLIENT_DISCONNECTED,
    Ending.UPSTREAM_CUT: Outcome.UPSTREAM_CUT,
    Ending.UPSTREAM_TIMEOUT: Outcome.UPSTREAM_TIMEOUT,
}


def settle(
    ex: Exchange,
    *,
    complete_at: int | None,
    body_error: str | None = None,
    error_event: bool = False,
    unfinished: str = "",
) -> None:
    """Set ``outcome``, the final ``status`` and ``error``.

    ``complete_at``: the byte offset in ``response_body`` from which the response was whole (the end of
    its end marker), None when it never was; ``body_error``: an error message the body carried, and
    ``error_event``: whether that was a stream's failure event after HTTP 200; ``unfinished``: why a body
    that ended normally is still not complete, in the family's words.
    """
    if ex.ending is Ending.REJECTED:
        ex.outcome = Outcome.REJECTED
        return
    if ex.ending is Ending.UPSTREAM_UNREACHABLE:
        ex.outcome = Outcome.UPSTREAM_UNREACHABLE
        return
    if ex.ending is not Ending.BODY_END and ex.upstream_status is None:
        # No response came at all: a connect or first-byte timeout, or the client left while waiting.
        ex.outcome = _CAUSE.get(ex.ending, Outcome.UPSTREAM_TIMEOUT)
        if ex.ending is Ending.CLIENT_LEFT:
            ex.status = CLIENT_CLOSED_REQUEST
        return
    # ``complete_at`` and ``delivered`` count the body as the record does (decoded, the whole of it).
    reached = complete_at is not None and (ex.ending is Ending.BODY_END or complete_at <= ex.delivered)
    if reached:
        ex.outcome = Outcome.UPSTREAM_ERROR_EVENT if error_event else Outcome.COMPLETE
        ex.status = ex.upstream_status if ex.upstream_status is not None else ex.status
        # What went wrong after the response was whole is no error of this exchange.
        ex.error = body_error or (ex.error if ex.ending is Ending.BODY_END else None)
        return
    if ex.ending in _CAUSE:
        ex.outcome = _CAUSE[ex.ending]
        if ex.ending is Ending.CLIENT_LEFT:
            ex.status = CLIENT_CLOSED_REQUEST
        return
    if error_event:
        ex.outcome, ex.error = Outcome.UPSTREAM_ERROR_EVENT, body_error
    else:
        ex.outcome = Outcome.UPSTREAM_CUT
        ex.error = ex.error or unfinished or "response ended before it was complete"
