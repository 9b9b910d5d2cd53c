"""Where documents come from: one connector per kind of source, each one file, all speaking
the protocol of `knowledge/connectors/base.py`. `connector_for` builds the one a configured
source needs."""

from __future__ import annotations

from knowledge.config import FolderSource, SourceConfig, WebSource
from knowledge.connectors.base import Connector


def connector_for(source: SourceConfig, *, max_bytes: int) -> Connector:
    """The connector reading `source`; `max_bytes` caps what one document may weigh."""
    if isinstance(source, FolderSource):
        from knowledge.connectors.folder import FolderConnector

        return FolderConnector(source)
    if isinstance(source, WebSource):
        from knowledge.connectors.web import WebConnector

        return WebConnector(source, max_bytes=max_bytes)
    raise TypeError(f"no connector for {type(source).__name__}")
