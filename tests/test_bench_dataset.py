"""The retrieval benchmarks' datasets: FAQ questions → gold documents from their references."""

from __future__ import annotations

import json

from bench.apache_dataset import build as build_apache
from bench.git_dataset import build as build_git
from bench.privoxy_dataset import build as build_privoxy
from bench.pydocs_dataset import build
from bench.sqlite_dataset import build as build_sqlite


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


def _questions(out):
    lines = (out / "questions.jsonl").read_text().splitlines()
    return {q["question"]: q["doc"] for q in map(json.loads, lines)}


def _corpus(out):
    return sorted(p.relative_to(out / "corpus").as_posix() for p in (out / "corpus").rglob("*.*"))


def test_sqlite_faq_questions_get_the_pages_their_answers_link(tmp_path):
    src = tmp_path / "sqlite3"
    (src / "c3ref").mkdir(parents=True)
    (src / "releaselog").mkdir()
    (src / "autoinc.html").write_text("<p>AUTOINCREMENT</p>")
    (src / "datatype3.html").write_text("<p>Dynamic typing.</p>")
    (src / "c3ref" / "last_insert_rowid.html").write_text("<p>Last rowid.</p>")
    (src / "changes.html").write_text("<p>Release history.</p>")
    (src / "releaselog" / "3_40_1.html").write_text("<p>3.40.1</p>")
    (src / "faq.html").write_text(
        '<ol><li><a href="#q1">How do I create an AUTOINCREMENT field?</a></li></ol>'
        '<a name="q1"></a>\n<p><b>(1) How do I create an AUTOINCREMENT field?</b></p>\n'
        '<blockquote><a href="autoinc.html#x">AUTOINCREMENT</a> and '
        '<a href="c3ref/last_insert_rowid.html">rowid</a>, see <a href="#q2">below</a>'
        "</blockquote></li>\n"
        '<a name="q2"></a>\n<p><b>(2) What datatypes does SQLite support?</b></p>\n'
        '<blockquote><a href="datatype3.html">dynamic typing</a> '
        '<a href="https://sqlite.org/x.html">x</a></blockquote></li>\n'
        '<a name="q3"></a>\n<p><b>(3) What is the ECCN for SQLite?</b></p>\n'
        "<blockquote>None.</blockquote></li>\n"
    )
    summary = build_sqlite(tmp_path / "out", sources_dir=src)
    assert _questions(tmp_path / "out") == {
        "How do I create an AUTOINCREMENT field?": ["autoinc.html", "c3ref/last_insert_rowid.html"],
        "What datatypes does SQLite support?": ["datatype3.html"],
    }
    # No FAQ, no release history.
    assert _corpus(tmp_path / "out") == [
        "autoinc.html",
        "c3ref/last_insert_rowid.html",
        "datatype3.html",
    ]
    assert (summary["questions_kept"], summary["dropped_no_gold"]) == (2, 1)


def test_apache_ssl_faq_questions_get_the_pages_their_answers_link(tmp_path):
    src = tmp_path / "manual" / "en"
    for sub in ("ssl", "mod", "faq"):
        (src / sub).mkdir(parents=True)
    (src / "mod" / "mod_ssl.html").write_text("<p>SSLCipherSuite</p>")
    (src / "mod" / "core.html").write_text("<p>Listen</p>")
    (src / "faq" / "index.html").write_text("<p>The FAQ moved to the wiki.</p>")
    (src / "new_features_2_4.html").write_text("<p>New in 2.4</p>")
    (src / "ssl" / "ssl_intro.html").write_text("<p>Certificates.</p>")
    (src / "ssl" / "ssl_faq.html").write_text(
        '<div id="quickview"><a href="#ciphers">ciphers</a></div>'
        '<h2 id="aboutconfig">Configuration</h2>\n'
        '<h3 id="ciphers">What SSL Ciphers are supported\n  by mod_ssl?</h3>\n'
        '<p>See <code class="directive"><a href="../mod/mod_ssl.html#sslciphersuite">'
        'SSLCipherSuite</a></code> and <a href="../mod/core.html">Listen</a>.</p>\n'
        '<h3 id="ports">Which port does HTTPS use?</h3>\n<p>443.</p>\n'
        '<h2 id="aboutcerts">Certificates</h2>\n'
        '<h3 id="what">What are RSA Private Keys, CSRs and Certificates?</h3>\n'
        '<p>Read the <a href="ssl_intro.html">introduction</a>.</p>\n'
        '</div><div class="bottomlang"><a href="../mod/core.html">core</a></div>'
    )
    summary = build_apache(tmp_path / "out", sources_dir=src)
    assert _questions(tmp_path / "out") == {
        "What SSL Ciphers are supported by mod_ssl?": ["mod/mod_ssl.html", "mod/core.html"],
        "What are RSA Private Keys, CSRs and Certificates?": ["ssl/ssl_intro.html"],
    }
    # No FAQ (nor the wiki stub), no release notes.
    assert _corpus(tmp_path / "out") == ["mod/core.html", "mod/mod_ssl.html", "ssl/ssl_intro.html"]
    assert (summary["questions_kept"], summary["dropped_no_gold"]) == (2, 1)


def test_git_faq_questions_get_the_pages_their_answers_name(tmp_path):
    src = tmp_path / "git-doc"
    (src / "howto").mkdir(parents=True)
    (src / "git-config.html").write_text(
        '<dl><dt class="hdlist1">\ncore.editor\n</dt><dd>Editor.</dd>'
        '<dt class="hdlist1">\nhttp.postBuffer\n</dt><dd>Buffer.</dd></dl>'
    )
    (src / "git-commit.html").write_text("<p>--amend</p>")
    (src / "git-add.html").write_text("<p>Add.</p>")
    (src / "git-var.html").write_text("<p>GIT_EDITOR</p>")
    (src / "githooks.html").write_text('<h3 id="_pre_commit">pre-commit</h3>')
    (src / "gitignore.html").write_text("<p>Ignore.</p>")
    (src / "gitfaq.html").write_text("<p>The rendered FAQ.</p>")
    (src / "howto" / "new-command.html").write_text("<p>How to add a command.</p>")
    (src / "gitfaq.txt").write_text(
        "gitfaq(7)\n=========\n\nConfiguration\n-------------\n\n"
        "[[configure-editor]]\nHow do I configure a different editor?::\n"
        "\tSet `core.editor`; see linkgit:git-var[1] and linkgit:git-nope[1].\n\n"
        "[[http-postbuffer]]\nWhat does `http.postBuffer` really do?::\n\tIt buffers.\n\n"
        "[[last-commit-amend]]\nHow do I change the last commit?::\n"
        "\tRun `git add\n\t<file>` and then `git\n\tcommit --amend`, or use a\n"
        "\t`pre-commit` hook and a `.gitignore`:\n+\n----\n$ git add -p\n----\n\n"
        "[[why]]\nWhy is it called Git?::\n\tNobody knows.\n\n"
        "GIT\n---\nPart of the linkgit:git[1] suite\n"
    )
    summary = build_git(tmp_path / "out", sources_dir=src)
    assert _questions(tmp_path / "out") == {
        "How do I configure a different editor?": ["git-var.html", "git-config.html"],
        "What does http.postBuffer really do?": ["git-config.html"],
        "How do I change the last commit?": [
            "git-add.html",
            "git-commit.html",
            "githooks.html",
            "gitignore.html",
        ],
    }
    corpus = _corpus(tmp_path / "out")
    assert "gitfaq.html" not in corpus and "gitfaq.txt" not in corpus
    assert "howto/new-command.html" in corpus
    assert (summary["questions_kept"], summary["dropped_no_gold"]) == (3, 1)


def test_privoxy_faq_questions_get_the_pages_their_answers_link(tmp_path):
    src = tmp_path / "privoxy"
    for sub in ("faq", "user-manual", "developer-manual"):
        (src / sub).mkdir(parents=True)
    (src / "index.html").write_text("<p>Privoxy documentation.</p>")
    (src / "user-manual" / "config.html").write_text("<p>listen-address</p>")
    (src / "user-manual" / "actions-file.html").write_text("<p>Actions.</p>")
    (src / "user-manual" / "whatsnew.html").write_text("<p>New in 3.0.34.</p>")
    (src / "developer-manual" / "index.html").write_text("<p>Developers.</p>")
    (src / "faq" / "index.html").write_text('<a HREF="configuration.html">Configuration</a>')
    (src / "faq" / "configuration.html").write_text(
        '<H1 CLASS="SECT1"><A NAME="CONFIGURATION">3. Configuration</A></H1>\n'
        '><H3\nCLASS="SECT2"\n><A\nNAME="ACTIONSS"\n>3.2. What is an <SPAN\nCLASS="QUOTE"\n>'
        '"actions"</SPAN\n> file?</A\n></H3\n><P\n>See the <A\n'
        'HREF="../user-manual/actions-file.html#ACTIONS"\nTARGET="_top"\n>actions</A\n> and '
        '<A HREF="index.html#Q">the FAQ</A>.</P>\n'
        '<H3 CLASS="SECT2"><A NAME="LAN">3.10. How can I set up Privoxy for my LAN?</A></H3>\n'
        '<P>Set <A HREF="../user-manual/config.html#LISTEN-ADDRESS">listen-address</A>.</P>\n'
        '<H3 CLASS="SECT2"><A NAME="WHY">3.11. Why is it so complicated?</A></H3>\n'
        '<P>It is not.</P>\n<DIV CLASS="NAVFOOTER"><A HREF="../user-manual/config.html">x</A></DIV>'
    )
    summary = build_privoxy(tmp_path / "out", sources_dir=src)
    assert _questions(tmp_path / "out") == {
        'What is an "actions" file?': ["user-manual/actions-file.html"],
        "How can I set up Privoxy for my LAN?": ["user-manual/config.html"],
    }
    # No FAQ, no release notes.
    assert _corpus(tmp_path / "out") == [
        "developer-manual/index.html",
        "index.html",
        "user-manual/actions-file.html",
        "user-manual/config.html",
    ]
    assert (summary["questions_kept"], summary["dropped_no_gold"]) == (2, 1)
