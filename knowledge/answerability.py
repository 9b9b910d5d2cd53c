"""Is there an answer in what retrieval found? A small calibrated classifier decides.

Cosine similarity alone cannot tell "on topic" from "answered": an unanswerable question about
the company's own subject finds chunks as close as an answerable one does. The classifier looks
at the shape of what was found (`Signals`): how close the best chunk is and how far it stands
out from the rest, whether the question's own words are in the best passage, whether the
keyword and vector retrievers agree on the document, and the reranker's score when one runs.

`AnswerabilityModel` is a logistic regression over those signals, saved as JSON with a version,
the embedding model and reranker its signals came from (with any other it is not used), its
decision threshold, and the rows it was trained on, so that a retraining adds rows (from the
feedback store: an abstention an expert then answered, a 👎 on an answer that cited nothing) to
the ones it shipped with. The shipped model (`DEFAULT_MODEL`) is trained by
bench/answerability.py on the tune halves of the benchmark corpora.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from base.errors import ConfigError
from knowledge.vocabulary import Frequencies

DEFAULT_MODEL = Path(__file__).with_name("answerability.json")
FORMAT = 1

FEATURES = (
    "top_cosine",
    "cosine_gap",
    "cosine_spread",
    "coverage_best",
    "coverage_top",
    "agreement",
    "known_terms",
    "rarest_missing",
    "idf_coverage",
)
RERANK_FEATURE = "rerank"

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
# Words that say nothing about what a question is about (English; other languages simply count
# more of their words as content).
_STOP_WORDS = """a about above after again all also am an and any are as at be because been before being
    below between both but by can cannot could did do does doing done down during each either
    else etc ever every few for from further get gets getting give given go goes going got had has
    have having he her here hers him his how i if in into is it its itself just know let like
    make many may me might more most much must my need no nor not now of off on once one only or
    other our ours out over own please same shall she should so some such than that the their
    them then there these they this those through to too under until up upon us use used using
    very want was way we well were what when where whether which while who whom whose why will
    with within without would yes yet you your yours"""
_STOP = frozenset(_STOP_WORDS.split())


def content_terms(text: str) -> set[str]:
    """The words of `text` that carry its subject, lower-cased and crudely stemmed."""
    return {_stem(w) for w in _WORD.findall(text.lower()) if len(w) > 1 and w not in _STOP}


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


@dataclass(frozen=True, slots=True)
class Candidate:
    """A chunk as a signal sees it."""

    doc_id: str
    text: str
    score: float


@dataclass(frozen=True, slots=True)
class Signals:
    """What retrieval says about whether the question can be answered."""

    top_cosine: float  # the best chunk's cosine similarity to the question
    cosine_gap: float  # ... minus the best chunk of another document
    cosine_spread: float  # ... minus the mean of the ten nearest chunks
    coverage_best: float  # share of the question's content words found in the best passage
    coverage_top: float  # ... found in the passages together
    agreement: float  # 1/rank of keyword search's best document among vector search's documents
    known_terms: float  # share of the question's content words that some document holds
    rarest_missing: float  # the rarest question word not in the passages: its IDF, 0 to 1
    idf_coverage: float  # share of the question's words found in the passages, IDF-weighted
    rerank: float | None = None  # the reranker's score of the best passage, when one runs

    def as_json(self) -> dict[str, float | None]:
        return {k: (None if v is None else round(v, 5)) for k, v in asdict(self).items()}

    def vector(self, features: Sequence[str]) -> list[float]:
        values = asdict(self)
        out = []
        for name in features:
            value = values.get(name)
            if value is None:
                raise ConfigError(f"the answerability model needs the signal {name!r}")
            out.append(float(value))
        return out


def compute_signals(
    question: str,
    *,
    nearest: Sequence[Candidate],
    keyword: Sequence[Candidate],
    passages: Sequence[Candidate],
    frequencies: Frequencies,
    rerank: float | None = None,
) -> Signals:
    """`nearest`: vector search's chunks, best first (ten are enough); `keyword`: keyword
    search's, best first; `passages`: what the answer would be written from, best first;
    `frequencies`: the document frequencies of the question's terms (`content_terms`)."""
    top = nearest[0].score if nearest else -1.0
    other = next((c.score for c in nearest if nearest and c.doc_id != nearest[0].doc_id), None)
    spread = top - float(np.mean([c.score for c in nearest[:10]])) if nearest else 0.0
    terms = content_terms(question)
    # The question's words each passage holds, best passage first.
    found = [content_terms(passage.text) & terms for passage in passages]
    in_passages: set[str] = set().union(*found)

    vector_docs = list(dict.fromkeys(c.doc_id for c in nearest))
    agreement = 0.0
    if keyword and keyword[0].doc_id in vector_docs:
        agreement = 1.0 / (vector_docs.index(keyword[0].doc_id) + 1)
    # IDF on a 0..1 scale: 1 for a word no document holds, near 0 for one that all do.
    n = frequencies.documents
    idf = {t: math.log((n + 1) / (frequencies[t] + 0.5)) / math.log(2 * n + 2) for t in terms}
    missing = [idf[t] for t in terms if t not in in_passages]
    weight = sum(idf.values())
    return Signals(
        top_cosine=top,
        cosine_gap=top - other if other is not None else 0.0,
        cosine_spread=spread,
        coverage_best=len(found[0]) / len(terms) if terms and found else 0.0,
        coverage_top=len(in_passages) / len(terms) if terms else 0.0,
        agreement=agreement,
        known_terms=sum(1 for t in terms if frequencies[t]) / len(terms) if terms else 0.0,
        rarest_missing=max(missing, default=0.0),
        idf_coverage=sum(idf[t] for t in in_passages) / weight if weight else 0.0,
        rerank=rerank,
    )


@dataclass(frozen=True, slots=True)
class Row:
    """One training example: signals, whether the question was answerable, and where it came
    from ("bench:<corpus>:<half>", "feedback:<answer id>")."""

    features: tuple[float, ...]
    label: int
    origin: str

    def as_json(self) -> list[Any]:
        return [[round(v, 6) for v in self.features], self.label, self.origin]


@dataclass(frozen=True)
class AnswerabilityModel:
    version: str
    embedder: str
    reranker: str | None
    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    threshold: float
    rows: tuple[Row, ...] = ()
    summary: dict[str, Any] = field(default_factory=dict)

    def probability(self, signals: Signals) -> float:
        """P(answerable) for these signals."""
        x = np.asarray(signals.vector(self.features))
        z = float((x - np.asarray(self.mean)) / np.asarray(self.scale) @ np.asarray(self.coef))
        return _sigmoid(z + self.intercept)

    def answerable(self, signals: Signals, threshold: float | None = None) -> bool:
        return self.probability(signals) >= (self.threshold if threshold is None else threshold)

    def mismatch(self, embedder: str, reranker: str | None) -> str | None:
        """Why this model cannot judge signals from `embedder` and `reranker`, or None."""
        if embedder != self.embedder:
            return f"it was trained with the embedding model {self.embedder!r}, not {embedder!r}"
        if reranker != self.reranker:
            return (
                f"it was trained with reranker {self.reranker or 'off'}, "
                f"and {reranker or 'off'} is configured"
            )
        return None

    def describe(self) -> str:
        n = len(self.rows)
        return (
            f"answerability model {self.version} ({n} questions; embedder {self.embedder}, "
            f"reranker {self.reranker or 'off'}; abstains below P={self.threshold:.2f})"
        )

    # --- training ------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        rows: Sequence[Row],
        *,
        embedder: str,
        reranker: str | None,
        features: Sequence[str],
        l2: float = 1.0,
        summary: dict[str, Any] | None = None,
    ) -> AnswerabilityModel:
        """A logistic regression on standardised signals, each class (and within it each
        origin corpus) weighted equally, so no corpus or class dominates; the threshold is
        the one that best balances answered and abstained on the rows."""
        labels = {r.label for r in rows}
        if labels != {0, 1}:
            raise ConfigError(
                "training the answerability model needs both answerable and unanswerable "
                f"questions (got {len(rows)} rows, labels {sorted(labels)})"
            )
        x = np.asarray([r.features for r in rows], dtype=float)
        y = np.asarray([r.label for r in rows], dtype=float)
        groups = [(r.label, _group(r.origin)) for r in rows]
        counts: dict[tuple[int, str], int] = {}
        for g in groups:
            counts[g] = counts.get(g, 0) + 1
        per_label = {lab: sum(1 for g in counts if g[0] == lab) for lab in (0, 1)}
        w = np.asarray([1.0 / (counts[g] * per_label[g[0]]) for g in groups])
        w *= len(rows) / w.sum()
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        scale[scale < 1e-9] = 1.0
        z = (x - mean) / scale
        coef, intercept = _logistic(z, y, w, l2)
        model = cls(
            version="",
            embedder=embedder,
            reranker=reranker,
            features=tuple(features),
            mean=tuple(float(v) for v in mean),
            scale=tuple(float(v) for v in scale),
            coef=tuple(float(v) for v in coef),
            intercept=float(intercept),
            threshold=0.5,
            rows=tuple(rows),
            summary=dict(summary or {}),
        )
        probs = [_sigmoid(float(zz @ coef) + intercept) for zz in z]
        threshold = _balanced_threshold(probs, [r.label for r in rows], groups)
        body = {**model.as_json(), "threshold": threshold}
        body.pop("version")
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:10]
        return cls(**{**model.__dict__, "threshold": threshold, "version": digest})

    # --- files ---------------------------------------------------------------------------

    def as_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": self.version,
            "embedder": self.embedder,
            "reranker": self.reranker,
            "features": list(self.features),
            "mean": [round(v, 8) for v in self.mean],
            "scale": [round(v, 8) for v in self.scale],
            "coef": [round(v, 8) for v in self.coef],
            "intercept": round(self.intercept, 8),
            "threshold": round(self.threshold, 6),
            "summary": self.summary,
            "rows": [r.as_json() for r in self.rows],
        }

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.as_json(), indent=1) + "\n", encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> AnswerabilityModel:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"no answerability model at {path}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read the answerability model {path}: {exc}") from None
        try:
            if data["format"] != FORMAT:
                raise ConfigError(
                    f"{path} is an answerability model of format {data['format']}; this "
                    f"version reads format {FORMAT}: retrain it (expertbot answerability train)"
                )
            features = tuple(str(f) for f in data["features"])
            n = len(features)
            vectors = [tuple(float(v) for v in data[key]) for key in ("mean", "scale", "coef")]
            if any(len(v) != n for v in vectors) or not set(features) <= {
                *FEATURES,
                RERANK_FEATURE,
            }:
                raise ValueError("features and weights do not match")
            return cls(
                version=str(data["version"]),
                embedder=str(data["embedder"]),
                reranker=data["reranker"],
                features=features,
                mean=vectors[0],
                scale=vectors[1],
                coef=vectors[2],
                intercept=float(data["intercept"]),
                threshold=float(data["threshold"]),
                rows=tuple(
                    Row(tuple(float(v) for v in f), int(label), str(origin))
                    for f, label, origin in data.get("rows", [])
                ),
                summary=dict(data.get("summary", {})),
            )
        except ConfigError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path} is not a valid answerability model ({exc})") from None


def _group(origin: str) -> str:
    """Rows weighed together: a benchmark corpus ("bench:<corpus>:<half>"), or all feedback."""
    kind, _, rest = origin.partition(":")
    return rest.split(":")[0] if kind == "bench" else kind


def features_for(reranker: str | None) -> tuple[str, ...]:
    return (*FEATURES, RERANK_FEATURE) if reranker else FEATURES


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _logistic(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float, steps: int = 50
) -> tuple[np.ndarray, float]:
    """Weighted, L2-regularised logistic regression by Newton's method (the intercept is not
    regularised)."""
    n, d = x.shape
    xb = np.hstack([x, np.ones((n, 1))])
    beta = np.zeros(d + 1)
    reg = np.full(d + 1, l2)
    reg[-1] = 0.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(xb @ beta)))
        grad = xb.T @ (w * (p - y)) + reg * beta
        hess = (xb * (w * p * (1 - p))[:, None]).T @ xb + np.diag(reg) + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    return beta[:-1], float(beta[-1])


def _balanced_threshold(
    probs: Sequence[float], labels: Sequence[int], groups: Sequence[tuple[int, str]]
) -> float:
    """The threshold that maximises the worst of answered and abstained rates, each averaged
    over the origins (corpora) it has rows from."""
    candidates = sorted({round(p, 6) for p in probs} | {0.5})

    def rates(t: float) -> tuple[float, float]:
        by: dict[tuple[int, str], list[bool]] = {}
        for p, label, g in zip(probs, labels, groups, strict=True):
            by.setdefault(g, []).append((p >= t) == bool(label))
        answered = [sum(v) / len(v) for g, v in by.items() if g[0] == 1]
        abstained = [sum(v) / len(v) for g, v in by.items() if g[0] == 0]
        return float(np.mean(answered)), float(np.mean(abstained))

    def worst(t: float) -> tuple[float, float]:
        a, b = rates(t)
        return (min(a, b), a + b)

    best = max(candidates, key=worst)
    # Midway from the next lower score, so that no training row sits on the edge.
    below = [c for c in candidates if c < best]
    return (below[-1] + best) / 2 if below else best
