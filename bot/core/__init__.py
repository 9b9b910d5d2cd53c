"""The platform-neutral answering core: a `Question` in, an `Answer` (streamed) out."""
