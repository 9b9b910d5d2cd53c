"""The retrieval benchmark's dataset: FAQ questions → gold documents from their references."""

from __future__ import annotations

import json

from bench.pydocs_dataset import build


def test_faq_questions_get_the_documents_their_answers_cite(tmp_path):
    src = tmp_path / "_sources"
    (src / "faq").mkdir(parents=True)
    (src / "library").mkdir()
    (src / "whatsnew").mkdir()
    (src / "library" / "shutil.rst.txt").write_text(
        ":mod:`shutil` --- High-level file operations\n"
        "=============================================\n\n.. module:: shutil\n\n.. function:: copyfile(src, dst)\n\n   Copy.\n"
    )
    (src / "library" / "os.path.rst.txt").write_text(
        ".. _path-ops:\n\nos.path\n=======\n\n.. module:: os.path\n\nJoin paths.\n"
    )
    (src / "whatsnew" / "3.11.rst.txt").write_text("What's new\n==========\n\nshutil changed.\n")
    (src / "faq" / "library.rst.txt").write_text(
        "Library FAQ\n===========\n\n"
        "How do I copy a file?\n---------------------\n\nUse :func:`shutil.copyfile`.\n\n"
        "How do I join paths?\n--------------------\n\nSee :ref:`the path docs <path-ops>`.\n\n"
        "Why is Python called Python?\n----------------------------\n\nBecause of a TV show.\n"
    )
    summary = build(tmp_path / "out", sources_dir=src)
    questions = [
        json.loads(line) for line in (tmp_path / "out" / "questions.jsonl").read_text().splitlines()
    ]
    assert {q["question"]: q["doc"] for q in questions} == {
        "How do I copy a file?": ["library/shutil.rst"],
        "How do I join paths?": ["library/os.path.rst"],
    }
    corpus = sorted(
        p.relative_to(tmp_path / "out" / "corpus").as_posix()
        for p in (tmp_path / "out" / "corpus").rglob("*.rst")
    )
    assert corpus == ["library/os.path.rst", "library/shutil.rst"]  # no FAQ, no whatsnew
    assert summary["questions_kept"] == 2
