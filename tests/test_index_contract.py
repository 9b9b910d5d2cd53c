"""The contract every index backend honours (knowledge/index/base.py), on real backends:
LanceDB always, Weaviate whenever WEAVIATE_URL points at one. Among it: each backend shows
exactly what the access rule (AccessScope.sees) allows."""

from __future__ import annotations

import pytest

from base.errors import IndexSchemaError
from knowledge.models import (
    Access,
    AccessScope,
    ChunkRecord,
    DocKey,
    SearchFilters,
    SearchQuery,
    chunk_id,
    sha256_hex,
)

MODEL = "all-MiniLM-L6-v2"

DOCS = {
    DocKey("handbook", "it/vpn.md"): (
        "VPN Setup",
        "public",
        [],
        [
            (
                "Install",
                "Install the NetGate client from the software centre before your first day.",
            ),
            ("Connect", "Connect to vpn.northwind.example and approve the push notification."),
        ],
    ),
    DocKey("handbook", "people/pay.md"): (
        "Compensation bands",
        "private",
        [],
        [("Bands", "Level L3 engineers in Toronto earn between 118,000 and 142,000 dollars.")],
    ),
    DocKey("handbook", "finance/close.md"): (
        "Quarter close",
        "restricted",
        ["C0FINANCE", "finance-team"],
        [
            (
                "Cut-off",
                "Supplier invoices received after the 25th roll into next quarter's accruals.",
            )
        ],
    ),
    DocKey("wiki", "travel.md"): (
        "Travel",
        "public",
        [],
        [("Hotels", "The hotel cap in Lisbon is 140 euros per night, booked through Wayfarer.")],
    ),
}


def records(embedder, key: DocKey, *, suffix: str = "") -> list[ChunkRecord]:
    title, access, allowed, sections = DOCS[key]
    texts = [f"{text}{suffix}" for _, text in sections]
    vectors = embedder.embed_documents(texts)
    index_hash = sha256_hex(f"{key}{suffix}")
    return [
        ChunkRecord(
            chunk_id=chunk_id(key.source, key.doc_id, n),
            source=key.source,
            doc_id=key.doc_id,
            title=title,
            uri=f"file:///{key.doc_id}",
            heading=heading,
            ordinal=n,
            text=text,
            text_hash=sha256_hex(text),
            index_hash=index_hash,
            n_chunks=len(sections),
            modified=1_700_000_000.0,
            access=access,
            allowed=list(allowed),
            vector=vector.tolist(),
        )
        for n, ((heading, _), text, vector) in enumerate(zip(sections, texts, vectors, strict=True))
    ]


@pytest.fixture
async def filled(index_factory, embedder):
    index = index_factory()
    await index.open(dim=embedder.dim, model=MODEL)
    await index.replace_documents({key: records(embedder, key) for key in DOCS})
    await index.optimize()
    yield index
    await index.close()


async def search(index, embedder, text: str, **kwargs) -> list:
    return await index.search(
        SearchQuery(text=text, vector=embedder.embed_query(text).tolist(), **kwargs)
    )


async def test_manifest_reports_every_document_complete(filled):
    manifest = await filled.manifest()
    assert set(manifest) == set(DOCS)
    vpn = manifest[DocKey("handbook", "it/vpn.md")]
    assert (vpn.n_chunks, vpn.stored_chunks, vpn.complete) == (2, 2, True)
    assert vpn.index_hash == sha256_hex(f"{DocKey('handbook', 'it/vpn.md')}")


@pytest.mark.parametrize("mode", ["hybrid", "vector", "keyword"])
async def test_each_mode_finds_the_right_section(filled, embedder, mode):
    hits = await search(filled, embedder, "How do I connect to the VPN?", k=3, mode=mode)
    assert hits, mode
    top = hits[0]
    assert (top.doc_id, top.heading, top.title) == ("it/vpn.md", "Connect", "VPN Setup")
    assert top.uri == "file:///it/vpn.md" and "approve the push" in top.text
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert len(hits) <= 3


async def test_keyword_search_matches_a_rare_term(filled, embedder):
    hits = await search(filled, embedder, "Wayfarer", k=1, mode="keyword")
    assert [h.doc_id for h in hits] == ["travel.md"]


async def test_public_scope_never_returns_private_or_restricted(filled, embedder):
    scope = SearchFilters(scope=AccessScope.public_only())
    for mode in ("hybrid", "vector", "keyword"):
        hits = await search(
            filled, embedder, "salary of L3 engineers in Toronto", k=10, mode=mode, filters=scope
        )
        assert {h.access for h in hits} <= {"public"}, mode
        hits = await search(
            filled, embedder, "supplier invoices cut-off", k=10, mode=mode, filters=scope
        )
        assert "finance/close.md" not in {h.doc_id for h in hits}, mode


async def test_restricted_documents_need_an_allowed_principal(filled, embedder):
    question = "When is the cut-off for supplier invoices?"
    finance = SearchFilters(scope=AccessScope(principals=frozenset({"C0FINANCE"})))
    other = SearchFilters(scope=AccessScope(principals=frozenset({"C0RANDOM"})))
    assert (await search(filled, embedder, question, k=1, filters=finance))[
        0
    ].doc_id == "finance/close.md"
    assert "finance/close.md" not in {
        h.doc_id for h in await search(filled, embedder, question, k=10, filters=other)
    }


async def test_private_documents_only_when_included(filled, embedder):
    question = "How much do L3 engineers earn in Toronto?"
    dm = SearchFilters(scope=AccessScope(include_private=True))
    hits = await search(filled, embedder, question, k=1, filters=dm)
    assert hits[0].doc_id == "people/pay.md" and hits[0].access == "private"
    unfiltered = await search(filled, embedder, question, k=1)
    assert unfiltered[0].doc_id == "people/pay.md"


# One document of each access, restricted ones to several principals (one with a quote in it).
ACCESS_DOCS = {
    "public.md": (Access.PUBLIC, ()),
    "private.md": (Access.PRIVATE, ()),
    "finance.md": (Access.RESTRICTED, ("C0FINANCE", "finance-team")),
    "hr.md": (Access.RESTRICTED, ("hr-team",)),
    "legal.md": (Access.RESTRICTED, ("it's legal",)),
}
# Where a question can be asked, as the scopes it gets (None: an operator, no filtering).
SCOPES = {
    "no scope": None,
    "public channel": AccessScope.public_only(),
    "DM of a private reader": AccessScope(include_private=True),
    "finance channel": AccessScope(principals=frozenset({"C0FINANCE"})),
    "a channel no document allows": AccessScope(principals=frozenset({"C0RANDOM"})),
    "DM of someone in two groups": AccessScope(
        principals=frozenset({"U1", "hr-team", "it's legal"})
    ),
    "DM of a private reader in finance": AccessScope(
        principals=frozenset({"U2", "finance-team"}), include_private=True
    ),
}


def test_the_access_rule():
    def visible(scope: AccessScope | None) -> set[str]:
        assert scope is not None
        return {
            doc for doc, (access, allowed) in ACCESS_DOCS.items() if scope.sees(access, allowed)
        }

    assert visible(SCOPES["public channel"]) == {"public.md"}
    assert visible(SCOPES["DM of a private reader"]) == {"public.md", "private.md"}
    assert visible(SCOPES["finance channel"]) == {"public.md", "finance.md"}
    assert visible(SCOPES["a channel no document allows"]) == {"public.md"}
    assert visible(SCOPES["DM of someone in two groups"]) == {"public.md", "hr.md", "legal.md"}
    assert visible(SCOPES["DM of a private reader in finance"]) == {
        "public.md",
        "private.md",
        "finance.md",
    }
    # Stored access is a plain string; one the rule does not know is never shown.
    assert AccessScope().sees("public") and not AccessScope(include_private=True).sees("secret")


@pytest.fixture
async def every_access(index_factory, embedder):
    index = index_factory("access")
    await index.open(dim=embedder.dim, model=MODEL)
    batch = {}
    for doc, (access, allowed) in ACCESS_DOCS.items():
        key = DocKey("access", doc)
        text = f"The office hours of the {doc.removesuffix('.md')} team are posted on the door."
        [vector] = embedder.embed_documents([text])
        batch[key] = [
            ChunkRecord(
                chunk_id=chunk_id(key.source, doc, 0),
                source=key.source,
                doc_id=doc,
                title=doc,
                uri=f"file:///{doc}",
                heading="",
                ordinal=0,
                text=text,
                text_hash=sha256_hex(text),
                index_hash=sha256_hex(text),
                n_chunks=1,
                modified=1_700_000_000.0,
                access=access.value,
                allowed=list(allowed),
                vector=vector.tolist(),
            )
        ]
    await index.replace_documents(batch)
    await index.optimize()
    yield index
    await index.close()


@pytest.mark.parametrize("mode", ["hybrid", "vector", "keyword"])
async def test_each_backend_shows_exactly_what_the_access_rule_allows(every_access, embedder, mode):
    for where, scope in SCOPES.items():
        hits = await search(
            every_access,
            embedder,
            "office hours posted on the door",
            k=20,
            mode=mode,
            filters=SearchFilters(scope=scope),
        )
        allowed_by_rule = {
            doc
            for doc, (access, allowed) in ACCESS_DOCS.items()
            if scope is None or scope.sees(access, allowed)
        }
        assert {h.doc_id for h in hits} == allowed_by_rule, (where, mode)
        assert all((h.access, h.allowed) == ACCESS_DOCS[h.doc_id] for h in hits), (where, mode)


async def test_sources_filter(filled, embedder):
    hits = await search(
        filled, embedder, "hotel", k=10, filters=SearchFilters(sources=frozenset({"handbook"}))
    )
    assert hits and {h.source for h in hits} == {"handbook"}


async def test_replace_is_idempotent_and_drops_stale_chunks(filled, embedder):
    key = DocKey("handbook", "it/vpn.md")
    await filled.replace_documents({key: records(embedder, key)})
    await filled.replace_documents({key: records(embedder, key)})
    state = (await filled.manifest())[key]
    assert (state.n_chunks, state.stored_chunks) == (2, 2)

    shorter = records(embedder, key, suffix=" (v2)")[:1]
    for r in shorter:
        r.n_chunks = 1
    await filled.replace_documents({key: shorter})
    state = (await filled.manifest())[key]
    assert (state.n_chunks, state.stored_chunks, state.index_hash) == (
        1,
        1,
        sha256_hex(f"{key} (v2)"),
    )
    hits = await search(
        filled, embedder, "approve the push notification vpn.northwind.example", k=10
    )
    assert all("(v2)" in h.text for h in hits if h.doc_id == "it/vpn.md")
    assert (await filled.stats()).chunks == 4


async def test_delete_documents_removes_them_from_every_mode(filled, embedder):
    key = DocKey("wiki", "travel.md")
    await filled.delete_documents([key])
    await filled.optimize()
    assert key not in await filled.manifest()
    for mode in ("hybrid", "vector", "keyword"):
        hits = await search(filled, embedder, "hotel cap Lisbon Wayfarer", k=10, mode=mode)
        assert "travel.md" not in {h.doc_id for h in hits}, mode
    stats = await filled.stats()
    assert (stats.documents, stats.chunks) == (3, 4)


async def test_vectors_for_returns_stored_vectors_by_text_hash(filled, embedder):
    key = DocKey("handbook", "it/vpn.md")
    vectors = await filled.vectors_for([key])
    expected = records(embedder, key)
    assert set(vectors) == {r.text_hash for r in expected}
    for r in expected:
        assert vectors[r.text_hash] == pytest.approx(r.vector, abs=1e-6)


async def test_reopening_with_another_model_is_refused(filled, index_factory, embedder):
    again = filled  # same store, opened again with a different model
    with pytest.raises(IndexSchemaError, match="rebuild"):
        await again.open(dim=embedder.dim, model="another-model")
    await again.open(dim=embedder.dim, model="another-model", recreate=True)
    assert await again.manifest() == {}


async def test_empty_index_searches_to_nothing(index_factory, embedder):
    index = index_factory("empty")
    await index.open(dim=embedder.dim, model=MODEL)
    for mode in ("hybrid", "vector", "keyword"):
        assert await search(index, embedder, "anything", mode=mode) == []
    stats = await index.stats()
    assert (stats.documents, stats.chunks) == (0, 0)
    await index.close()


async def test_odd_query_text_is_safe_in_keyword_search(filled, embedder):
    for text in [
        'C++ "quoted" AND (x OR y)',
        "it's 100% ~fuzzy^2 field:value",
        "*",
        "ünïcödé — 東京",
    ]:
        hits = await search(filled, embedder, text, k=3, mode="keyword")
        assert isinstance(hits, list)
