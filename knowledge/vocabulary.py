"""The corpus's vocabulary: in how many documents each term occurs, by who may see them.

A question about something the documents never mention ("How do I set up Husky hooks?" asked
of a Git manual) finds chunks as close by meaning as a real question does; what gives it away
is a word that no document has, or none of the passages found. The answerability signals read
these document frequencies (knowledge/answerability.py); the sync keeps them (knowledge/sync.py)
in the SQL store, beside the index, so every replica reads the same counts.

Counts are kept per visibility (public, private, restricted to a set of channels or groups),
and a question's counts include only the documents its asker may see: whether a word occurs
in a private document must not change what a public channel is told.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from base.database import connection, transaction
from knowledge.models import Access, AccessScope, DocKey

metadata = sa.MetaData()

document_terms = sa.Table(
    "document_terms",
    metadata,
    sa.Column("source", sa.String(256), primary_key=True),
    sa.Column("doc_id", sa.Text, primary_key=True),
    sa.Column("visibility", sa.Text, nullable=False),
    sa.Column("terms", sa.Text, nullable=False),  # space-separated, sorted
)

term_frequencies = sa.Table(
    "term_frequencies",
    metadata,
    sa.Column("term", sa.String(64), primary_key=True),
    sa.Column("visibility", sa.Text, primary_key=True),
    sa.Column("documents", sa.Integer, nullable=False),
)

DOCUMENTS = ""  # the term under which each visibility's number of documents is counted
MAX_TERM = 64
_BATCH = 500


def visibility(access: str, allowed: Iterable[str] = ()) -> str:
    """One string for who may see a document: "public", "private" or "restricted:[...]"."""
    if access == Access.RESTRICTED.value:
        return "restricted:" + json.dumps(sorted(set(allowed)))
    return access


def _parse(vis: str) -> tuple[str, tuple[str, ...]]:
    if vis.startswith("restricted:"):
        return Access.RESTRICTED.value, tuple(json.loads(vis.removeprefix("restricted:")))
    return vis, ()


@dataclass(frozen=True, slots=True)
class Frequencies:
    """Document frequencies of some terms, among the documents one scope sees."""

    documents: int
    of: dict[str, int]

    def __getitem__(self, term: str) -> int:
        return self.of.get(term, 0)


class Vocabulary:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def update(
        self,
        changed: Mapping[DocKey, tuple[str, Iterable[str]]],
        removed: Sequence[DocKey] = (),
    ) -> None:
        """Make the counts hold `changed` documents ((visibility, terms) each) as they are now
        and no longer hold `removed` ones, in one transaction."""
        keys = [*changed, *removed]
        if not keys:
            return
        delta: Counter[tuple[str, str]] = Counter()
        new_rows = []
        for key, (vis, terms) in changed.items():
            kept = sorted({t for t in terms if t and len(t) <= MAX_TERM})
            new_rows.append(
                {
                    "source": key.source,
                    "doc_id": key.doc_id,
                    "visibility": vis,
                    "terms": " ".join(kept),
                }
            )
            delta.update((t, vis) for t in (DOCUMENTS, *kept))
        with transaction(self.engine, "updating the vocabulary") as conn:
            for start in range(0, len(keys), _BATCH):
                part = keys[start : start + _BATCH]
                where = sa.tuple_(document_terms.c.source, document_terms.c.doc_id).in_(
                    [(k.source, k.doc_id) for k in part]
                )
                for row in conn.execute(
                    sa.select(document_terms.c.visibility, document_terms.c.terms).where(where)
                ):
                    delta.subtract((t, row.visibility) for t in (DOCUMENTS, *row.terms.split()))
                conn.execute(document_terms.delete().where(where))
            if new_rows:
                conn.execute(document_terms.insert(), new_rows)
            self._apply(conn, {k: v for k, v in delta.items() if v})

    @staticmethod
    def _apply(conn: Connection, delta: Mapping[tuple[str, str], int]) -> None:
        if not delta:
            return
        current: dict[tuple[str, str], int] = {}
        pairs = list(delta)
        for start in range(0, len(pairs), _BATCH):
            part = pairs[start : start + _BATCH]
            where = sa.tuple_(term_frequencies.c.term, term_frequencies.c.visibility).in_(part)
            for found in conn.execute(sa.select(term_frequencies).where(where)):
                current[found.term, found.visibility] = found.documents
        inserts: list[dict[str, object]] = []
        updates: list[dict[str, object]] = []
        deletes: list[dict[str, object]] = []
        for (term, vis), change in delta.items():
            count = current.get((term, vis), 0) + change
            row: dict[str, object] = {"t": term, "v": vis, "n": count}
            if (term, vis) not in current:
                if count > 0:
                    inserts.append({"term": term, "visibility": vis, "documents": count})
            elif count > 0:
                updates.append(row)
            else:
                deletes.append(row)
        match = (term_frequencies.c.term == sa.bindparam("t")) & (
            term_frequencies.c.visibility == sa.bindparam("v")
        )
        if inserts:
            conn.execute(term_frequencies.insert(), inserts)
        if updates:
            conn.execute(
                term_frequencies.update().where(match).values(documents=sa.bindparam("n")), updates
            )
        if deletes:
            conn.execute(term_frequencies.delete().where(match), deletes)

    def clear(self) -> None:
        """Forget every count (a rebuild of the index starts them again)."""
        with transaction(self.engine, "clearing the vocabulary") as conn:
            conn.execute(document_terms.delete())
            conn.execute(term_frequencies.delete())

    def frequencies(self, terms: Iterable[str], scope: AccessScope | None) -> Frequencies:
        """How many documents visible in `scope` there are, and how many of them hold each of
        `terms` (scope None: every document, for operators)."""
        wanted = sorted({DOCUMENTS, *(t for t in terms if len(t) <= MAX_TERM)})
        totals: Counter[str] = Counter()
        with connection(self.engine, "reading the vocabulary") as conn:
            rows = conn.execute(
                sa.select(term_frequencies).where(term_frequencies.c.term.in_(wanted))
            ).all()
        for row in rows:
            if scope is None or scope.sees(*_parse(row.visibility)):
                totals[row.term] += row.documents
        documents = totals.pop(DOCUMENTS, 0)
        return Frequencies(documents, dict(totals))
