"""Errors raised by expertbot, under one root.

    ExpertbotError                  every error we raise on purpose
    ├── ConfigError                 bad settings: names the key
    ├── SourceError                 a source cannot be read: a missing folder, a site or API that refuses
    ├── DocumentError               one file cannot be turned into text (skipped, counted)
    ├── QueryError                  a search or question that cannot be run (empty, …)
    ├── InputFileError              a user-supplied file (eval JSONL …) is malformed: names the line
    ├── IndexStoreError             the index backend failed or is unreachable
    │   └── IndexSchemaError        the index was built with another embedding model / shape
    ├── EmbeddingError              the embedding model cannot be loaded
    ├── DatabaseError               the SQL store failed or is unreachable
    ├── AlreadyRunningError         a job holding the same lock is running (has `since`, `holder`)
    ├── ModelError                  the language model cannot be used
    │   ├── ModelLoadError          it cannot be loaded (at start-up, never on the first question)
    │   ├── GenerationError         the generator failed while answering (backend error, bad reply)
    │   ├── GenerationTimeout       an answer took longer than model.timeout_s; it was cancelled
    │   └── OverloadedError         too many questions are waiting; try again shortly
    ├── AdapterError                an adapter version is unknown, incomplete or for another base
    └── NotFoundError               a record named by its id (an expert answer …) does not exist

The CLI turns these into a one-line message and an exit code; anything else is a bug
and is logged with its traceback.
"""

from __future__ import annotations

from datetime import datetime


class ExpertbotError(Exception):
    """Root of every error expertbot raises on purpose."""


class ConfigError(ExpertbotError):
    """A setting is unknown or has a bad value."""


class SourceError(ExpertbotError):
    """A document source cannot be read at all (missing folder, not a folder)."""


class DocumentError(ExpertbotError):
    """A single document cannot be turned into text; the sync skips it with this reason."""


class DocumentSkipped(DocumentError):
    """Not an error in the file: it holds nothing to index (empty, binary, unsupported, too big)."""


class QueryError(ExpertbotError):
    """A search or question that cannot be run as given."""


class InputFileError(ExpertbotError):
    """A file the user gave us is malformed; the message names the line."""


class IndexStoreError(ExpertbotError):
    """The index backend failed or cannot be reached."""


class IndexSchemaError(IndexStoreError):
    """The stored index does not match the configured embedding model."""


class EmbeddingError(ExpertbotError):
    """The embedding model cannot be loaded or run."""


class DatabaseError(ExpertbotError):
    """The SQL store failed or cannot be reached."""


class AlreadyRunningError(ExpertbotError):
    """Another run holds the lock for this job."""

    def __init__(self, job: str, *, holder: str, since: datetime) -> None:
        self.job = job
        self.holder = holder
        self.since = since
        super().__init__(f"{job} is already running since {since:%Y-%m-%d %H:%M:%S} UTC ({holder})")


class ModelError(ExpertbotError):
    """The language model cannot be used."""


class ModelLoadError(ModelError):
    """The model (or its adapter) cannot be loaded; raised at start-up."""


class GenerationError(ModelError):
    """Generating an answer failed."""


class GenerationTimeout(GenerationError):
    """Generation took longer than its time limit and was cancelled."""


class OverloadedError(ModelError):
    """The generator's queue is full."""


class AdapterError(ExpertbotError):
    """An adapter version is unknown, incomplete, or was trained for another base model."""


class NotFoundError(ExpertbotError):
    """A record named by its id (an expert answer …) does not exist."""
