"""Send the deploy's events (``deployflow.events``) to Prefect's event feed.

Not tasks: an event is a side note of the flow, never a step that can fail or be retried.
"""

from __future__ import annotations

import logging

from prefect.events import emit_event

from deployflow.events import DeployEvent

logger = logging.getLogger(__name__)


def send_events(*events: DeployEvent) -> None:
    """Emit each event; a failure is logged and never stops the deploy (automations are extra)."""
    for event in events:
        try:
            emit_event(
                event.event,
                resource=event.resource,
                related=event.related,
                payload=event.payload,
            )
        except Exception:
            logger.warning("event %s not emitted", event.event, exc_info=True)
