"""Deep Search through a real gymwire server: the evidence-searching solver answers every test
question; a FlashRAG-format corpus and question files written here are served; actions, wrong
answers and options behave as AgentGym-RL's; the Python sandbox contains what it runs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gymwire.protocol import ErrorCode, ProtocolError
from gymwire.sdk.client import GymClient
from gymwire.sdk.env_spec import EnvSpec
from gymwire.sdk.registry import resolve_env
from gymwire.sdk.server import GymServer
from gymwire.servers.deepsearch import DeepSearchEnv
from gymwire.servers.deepsearch.env import load_data
from gymwire.servers.deepsearch.sandbox import SandboxLimits
from gymwire.servers.deepsearch.solver import solve

TEST_QUESTIONS = load_data(None, None, None).splits["test"]


class QuickSandboxEnv(DeepSearchEnv):
    # Short limits keep the containment tests quick; the limits themselves are the same mechanism.
    sandbox_limits = SandboxLimits(wall_seconds=3, cpu_seconds=2, memory_bytes=256 << 20, processes=4)


@pytest.fixture(scope="module")
def url():
    with GymServer([QuickSandboxEnv], port=0).run_in_thread() as server_url:
        yield server_url


def test_deepsearch_is_a_builtin_environment():
    assert resolve_env("deepsearch").env_class is DeepSearchEnv


async def test_solver_answers_every_test_question_through_the_server(url):
    async with GymClient(url) as client:
        (info,) = await client.list_envs()
        assert info.splits == {"test": 200, "train": 4000} and info.default_max_turns == 5
        limit = asyncio.Semaphore(16)

        async def play(index: int):
            async with limit, client.session("deepsearch", split="test", index=index) as session:
                assert session.observation.text == f"Question: {TEST_QUESTIONS[index].question}"
                return await solve(session.step, TEST_QUESTIONS[index])

        results = await asyncio.gather(*(play(index) for index in range(len(TEST_QUESTIONS))))
    failures = [i for i, r in enumerate(results) if not (r.terminated and r.reward == 1.0 and r.metrics.success)]
    assert failures == []
    two_hop = [r for q, r in zip(TEST_QUESTIONS, results) if q.metadata["hops"] == 2]
    assert len(two_hop) == 100 and all(r.info["searches"] >= 2 for r in two_hop)
    assert all(r.info["f1"] == 1.0 and r.metrics.score == 1.0 for r in results)


async def test_search_answer_and_invalid_actions(url):
    index = next(i for i, q in enumerate(TEST_QUESTIONS) if q.metadata["kind"] == "city-country-currency")
    question = TEST_QUESTIONS[index]  # two hops: a city, then its country
    city, country = (e["title"] for e in question.metadata["evidence"])
    async with GymClient(url, encoding="json") as client:
        async with client.session("deepsearch", split="test", index=index, options={"top_k": 2}) as session:
            found = await session.step(f"<think>First the city.</think>\n<search>{city} city</search>")
            text = found.observation.text
            assert text.startswith(f"<information>Doc 1(Title: {city}) {city} is a city in {country}.")
            assert text.count("(Title: ") == 2 and text.endswith("</information>")
            invalid = await session.step("I think the answer is 42")
            assert "<search>" in invalid.observation.text and "<answer>" in invalid.observation.text and not invalid.terminated
            wrong = await session.step("<answer>Atlantis</answer>")
            assert "incorrect" in wrong.observation.text and wrong.reward == 0.0 and not wrong.terminated
            # Normalisation: case, punctuation and articles do not matter.
            right = await session.step(f"<answer>  The {question.golden_answers[0].lower()}!</answer>")
            assert right.terminated and right.reward == 1.0
            assert right.metrics.success and right.metrics.turns == 4
            assert right.info == {"searches": 1, "python_runs": 0, "answers": 2, "f1": 1.0}


async def test_wrong_answer_can_end_the_episode_and_turns_run_out(url):
    async with GymClient(url) as client:
        async with client.session("deepsearch", split="test", index=0, options={"end_on_wrong_answer": True}) as session:
            wrong = await session.step("<answer>nowhere</answer>")
            assert wrong.terminated and wrong.reward == 0.0 and not wrong.metrics.success
        async with client.session("deepsearch", split="test", index=0) as session:
            for _ in range(5):
                last = await session.step("<search>anything</search>")
            assert last.truncated and not last.metrics.success and last.metrics.turns == 5


async def test_bad_options_are_invalid_tasks(url):
    async with GymClient(url) as client:
        for options, message in [
            ({"corpus": "/etc/passwd"}, "operator"),
            ({"top_k": 0}, "top_k"),
            ({"retriever": "dense"}, "not available"),
            ({"end_on_wrong_answer": "yes"}, "true or false"),
        ]:
            with pytest.raises(ProtocolError) as caught:
                await client.open("deepsearch", split="test", index=0, options=options)
            assert caught.value.code is ErrorCode.INVALID_TASK and message in str(caught.value)


SANDBOX_CASES = {
    "infinite loop": ("while True: pass", "stopped:"),
    "fork bomb": ("import os\nwhile True:\n    try: os.fork()\n    except OSError: pass", "stopped:"),
    "memory bomb": ("x = bytearray(8 << 30)", "MemoryError"),
    # The gym server's own port, open to this process: the sandbox has a network of its own.
    "network": ("import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)", "ConnectionRefusedError"),
    "write outside": ("open('/usr/gymwire-escape', 'w')", "Read-only file system"),
    "100 MB of output": ("import sys\nsys.stdout.write('y' * (100 << 20))", "stopped: printed more than"),
}


async def test_sandbox_contains_abuse_while_other_sessions_search(url):
    async with GymClient(url) as client:

        async def abuse(code: str):
            async with client.session("deepsearch", split="test", index=1) as session:
                return await session.step(f"<python>\n{code}\n</python>")

        async def searcher():
            async with client.session("deepsearch", split="test", index=2, max_turns=1000) as session:
                answers = 0
                while not abusing.done():
                    result = await session.step("<search>Paris</search>")
                    answers += "(Title: Paris)" in result.observation.text
                    await asyncio.sleep(0.05)
                return answers

        port = int(url.rsplit(":", 1)[1])
        abusing = asyncio.ensure_future(asyncio.gather(*(abuse(code.replace("{port}", str(port))) for code, _ in SANDBOX_CASES.values())))
        searches = await searcher()
        results = await abusing
        assert searches > 0
        for (name, (_, expected)), result in zip(SANDBOX_CASES.items(), results):
            text = result.observation.text
            assert expected in text and not result.terminated, (name, text[:500])
            assert len(text) < 5000, name
        # The sandbox runs what it is given and keeps files in its own folder only.
        async with client.session("deepsearch", split="test", index=3) as session:
            ok = await session.step("<python>open('notes.txt', 'w').write('kept'); print(open('notes.txt').read(), 6 * 7)</python>")
            assert ok.observation.text == "<output>\nkept 42\n</output>\n[finished]"
    assert not Path("/usr/gymwire-escape").exists()


# -- a user's own FlashRAG data ----------------------------------------------------------------

CORPUS = [
    {"id": "0", "contents": '"Zorbland"\nZorbland is an island kingdom whose capital is Quillport.'},
    {"id": "1", "contents": '"Quillport"\nQuillport is a harbour town founded by Admiral Pemberton Vask in 1702.'},
    {"id": "2", "contents": '"Admiral Pemberton Vask"\nPemberton Vask was a sailor born in Lowmarsh.'},
    {"id": "3", "contents": '"Lowmarsh"\nLowmarsh is a fen village.'},
]


async def test_a_flashrag_corpus_and_question_files_are_served(tmp_path, monkeypatch):
    monkeypatch.setenv("GYMWIRE_DEEPSEARCH_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(record) + "\n" for record in CORPUS))
    questions = tmp_path / "zorb"
    questions.mkdir()
    (questions / "dev.jsonl").write_text(
        json.dumps({"id": "d0", "question": "Who founded the capital of Zorbland?", "golden_answers": ["Pemberton Vask", "Admiral Vask"]}) + "\n"
    )
    pq.write_table(
        pa.table({"question": ["Where was the founder of Quillport born?"], "golden_answers": [["Lowmarsh"]]}), questions / "test.parquet"
    )
    env = EnvSpec.of(DeepSearchEnv, corpus=corpus, questions=questions, name="zorb")
    assert env.info().splits == {"dev": 1, "test": 1}
    assert load_data(str(corpus), str(questions), None).bm25.path.parent == tmp_path / "cache"

    async with GymServer([env], port=0) as server, GymClient(server.url) as client:
        async with client.session("zorb", split="dev", index=0, options={"top_k": 1}) as session:
            first = await session.step("<search>capital of Zorbland</search>")
            assert first.observation.text == (
                '<information>Doc 1(Title: "Zorbland") Zorbland is an island kingdom whose capital is Quillport.\n</information>'
            )
            second = await session.step("<search>who founded Quillport</search>")
            assert "Admiral Pemberton Vask" in second.observation.text
            done = await session.step("<answer>Admiral Vask</answer>")
            assert done.terminated and done.metrics.success
        async with client.session("zorb", split="test", index=0) as session:
            assert session.observation.text == "Question: Where was the founder of Quillport born?"
            half = await session.step("<answer>Lowmarsh fen village</answer>")
            assert not half.terminated and 0 < half.info["f1"] < 1


def test_serve_environment_variables_choose_the_data_and_bad_files_say_where(tmp_path, monkeypatch):
    from gymwire.sdk.commands import serve_specs
    from gymwire.servers.deepsearch.corpus import DataError

    monkeypatch.setenv("GYMWIRE_DEEPSEARCH_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps(CORPUS[0]) + "\n")
    questions = tmp_path / "test.jsonl"
    questions.write_text(json.dumps({"question": "Capital of Zorbland?", "golden_answers": ["Quillport"]}) + "\n")
    monkeypatch.setenv("GYMWIRE_DEEPSEARCH_CORPUS", str(corpus))
    monkeypatch.setenv("GYMWIRE_DEEPSEARCH_QUESTIONS", str(questions))
    (spec,) = serve_specs(["deepsearch"], None)
    assert spec.info().splits == {"test": 1}
    monkeypatch.delenv("GYMWIRE_DEEPSEARCH_QUESTIONS")
    with pytest.raises(DataError, match="both a corpus and questions"):
        serve_specs(["deepsearch"], None)[0].info()

    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps({"question": "Q?", "golden_answers": ["a"]}) + "\n" + '{"question": "Q2?", "golden_answers": "a"}\n')
    with pytest.raises(DataError, match=r"broken.jsonl:2: `golden_answers` must be a non-empty list"):
        EnvSpec.of(DeepSearchEnv, corpus=corpus, questions=broken).info()
    bad_corpus = tmp_path / "bad_corpus.jsonl"
    bad_corpus.write_text('{"id": 1, "text": "no contents"}\n')
    with pytest.raises(DataError, match=r"bad_corpus.jsonl:1: .*`contents`"):
        EnvSpec.of(DeepSearchEnv, corpus=bad_corpus, questions=questions).info()


def write_bag_of_words_encoder(folder: Path, words: list[str]) -> None:
    """A tiny BERT whose layers pass word embeddings straight through: mean pooling then gives a
    bag-of-words embedding, so passages sharing a query's words rank first. Real e5 models load the
    same way (AutoModel, AutoTokenizer from the folder)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(0)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "query", "passage", ":", *sorted(set(words))]
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    config = BertConfig(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    model = BertModel(config, add_pooling_layer=False)
    with torch.no_grad():
        model.embeddings.position_embeddings.weight.zero_()
        model.embeddings.token_type_embeddings.weight.zero_()
        for layer in model.encoder.layer:
            for dense in (layer.attention.output.dense, layer.output.dense):
                dense.weight.zero_()
                dense.bias.zero_()
    model.save_pretrained(folder)


async def test_dense_retrieval_with_a_local_encoder_folder(tmp_path, monkeypatch):
    import re

    monkeypatch.setenv("GYMWIRE_DEEPSEARCH_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(record) + "\n" for record in CORPUS))
    questions = tmp_path / "test.jsonl"
    questions.write_text(json.dumps({"question": "Where was the founder of Quillport born?", "golden_answers": ["Lowmarsh"]}) + "\n")
    words = re.findall(r"\w+", " ".join(r["contents"] for r in CORPUS).lower())
    write_bag_of_words_encoder(tmp_path / "encoder", words)

    env = EnvSpec.of(DeepSearchEnv, corpus=corpus, questions=questions, encoder=tmp_path / "encoder", name="zorb-dense")
    dense = load_data(str(corpus), str(questions), str(tmp_path / "encoder")).dense
    assert dense is not None and (dense.path / "embeddings.npy").exists()
    assert env.info().metadata["retrievers"] == ["bm25", "dense"]
    async with GymServer([env], port=0) as server, GymClient(server.url) as client:
        async with client.session("zorb-dense", split="test", index=0, options={"top_k": 2}) as session:
            found = await session.step("<search>fen village</search>")  # dense: the default once an encoder is given
            assert found.observation.text.startswith('<information>Doc 1(Title: "Lowmarsh") Lowmarsh is a fen village.\n')
            assert found.observation.text.count("(Title: ") == 2
        async with client.session("zorb-dense", split="test", index=0, options={"retriever": "bm25", "top_k": 4}) as session:
            only_match = await session.step("<search>fen village</search>")
            assert only_match.observation.text.count("(Title: ") == 1  # BM25 finds only passages with the words


def test_serve_with_a_missing_corpus_is_a_one_line_error(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "GYMWIRE_DEEPSEARCH_CORPUS": str(tmp_path / "missing.jsonl"), "GYMWIRE_DEEPSEARCH_QUESTIONS": str(tmp_path)}
    run = subprocess.run([sys.executable, "-m", "gymwire.sdk.cli", "serve", "deepsearch", "--port", "0"], env=env, capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert run.returncode == 2
    assert run.stderr.strip() == f"gymwire serve: corpus file {tmp_path / 'missing.jsonl'} does not exist"


async def test_process_isolation_searches_and_runs_python_in_every_session():
    # Each session's process loads the data from the cache and gives its sandboxes user ids of its
    # own: two processes starting from the same id once made the second sandbox fail to fork.
    async with GymServer([DeepSearchEnv], port=0, isolation="process") as server, GymClient(server.url) as client:
        for index in range(3):
            async with client.session("deepsearch", split="test", index=index) as session:
                found = await session.step("<search>Paris</search>")
                ran = await session.step("<python>print(6 * 7)</python>")
                assert "(Title: Paris)" in found.observation.text
                assert ran.observation.text == "<output>\n42\n</output>\n[finished]"
