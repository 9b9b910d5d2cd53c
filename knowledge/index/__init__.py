"""Index backends behind one protocol: LanceDB (embedded default) and Weaviate."""

from knowledge.index.base import KnowledgeIndex

__all__ = ["KnowledgeIndex"]
