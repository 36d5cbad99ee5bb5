"""Slack's mrkdwn as plain text, for the run log: people reading a run in the Prefect UI (with or
without Slack configured) should not see ``*bold*``, backticks or ``<url|label>``."""

from __future__ import annotations

import re

_LINK = re.compile(r"<(https?://[^|>\s]+)\|([^>]+)>")
_BARE_LINK = re.compile(r"<(https?://[^>\s]+)>")
_BOLD = re.compile(r"\*([^*\n]+)\*")
_CODE = re.compile(r"`([^`\n]+)`")
_ENTITIES = {"&lt;": "<", "&gt;": ">", "&amp;": "&"}


def plain_text(mrkdwn: str) -> str:
    """``mrkdwn`` without Slack's markup: links as ``label: url``, no bold or code marks."""
    text = _LINK.sub(lambda m: f"{m.group(2)}: {m.group(1)}", mrkdwn)
    text = _BARE_LINK.sub(r"\1", text)
    text = _BOLD.sub(r"\1", text)
    text = _CODE.sub(r"\1", text)
    for entity, char in _ENTITIES.items():
        text = text.replace(entity, char)
    return text
