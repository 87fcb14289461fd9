"""Deep Search pieces without a server: answer scoring, the observation format, and the built-in
questions, which the generator reproduces byte for byte from the pinned package."""

from __future__ import annotations

import json

from gymwire.servers.deepsearch.corpus import Corpus, Passage, builtin_questions_dir
from gymwire.servers.deepsearch.env import load_data
from gymwire.servers.deepsearch.scoring import exact_match, mentions, normalize_answer, token_f1
from gymwire.servers.deepsearch.gazetteer import write_questions
from gymwire.servers.deepsearch.retrieval import passages_text


def test_answers_are_compared_after_the_standard_normalisation():
    assert normalize_answer("  The Eiffel-Tower, an icon! ") == "eiffeltower icon"
    assert exact_match("the United States", ["United States", "USA"])
    assert exact_match("1,086,505", ["1086505"])
    assert not exact_match("United", ["United States"])
    assert token_f1("United", ["United States", "USA"]) == 2 / 3
    assert token_f1("", ["x"]) == 0.0
    assert mentions("Its time zone is Asia/Tokyo.", "Tokyo") and not mentions("Its time zone is Europe/Madrid.", "EUR")


def test_search_results_read_as_agentgym_rl_shows_them():
    passages = [Passage("1", "Paris", "Paris is a city."), Passage("2", "France", "France is a country.")]
    assert passages_text(passages) == "<information>Doc 1(Title: Paris) Paris is a city.\nDoc 2(Title: France) France is a country.\n</information>"


def test_generator_reproduces_the_committed_questions(tmp_path):
    write_questions(tmp_path)
    for split in ("train", "test"):
        assert (tmp_path / f"{split}.jsonl").read_bytes() == (builtin_questions_dir() / f"{split}.jsonl").read_bytes()


def test_builtin_corpus_holds_every_evidence_passage_and_two_hop_questions_need_both():
    passages = {p.id: p for p in Corpus().passages()}
    assert len(passages) > 30_000
    test = [json.loads(line) for line in (builtin_questions_dir() / "test.jsonl").read_text().splitlines()]
    assert len(test) == 200 and sum(q["metadata"]["hops"] == 2 for q in test) == 100
    assert len({q["metadata"]["kind"] for q in test}) == 8  # every kind of question is asked
    for question in test:
        evidence = [passages[e["id"]] for e in question["metadata"]["evidence"]]
        assert all(p.title == e["title"] for p, e in zip(evidence, question["metadata"]["evidence"]))
        last = evidence[-1]
        assert any(normalize_answer(a) in normalize_answer(last.text) for a in question["golden_answers"]), question
        if len(evidence) == 2:
            # The first passage names the bridge (the second passage's title) but not the answer.
            assert evidence[1].title in evidence[0].text, question
            assert not any(mentions(evidence[0].text, a) for a in question["golden_answers"]), question


def test_queries_are_plain_words_for_the_index():
    bm25 = load_data(None, None, None).bm25
    assert bm25.search("İskilip", 1)[0].title == "İskilip"  # the index's tokenizer lower-cases both sides alike
    assert bm25.search("ISTANBUL", 1)[0].title == "Istanbul"
    # Query syntax (fields, phrases, operators, wildcards) is read as words or dropped, never an error.
    assert len(bm25.search('title:Paris AND "France OR (NOT IN', 3)) == 3
    assert bm25.search("*** ???", 3) == []
