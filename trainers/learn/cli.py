"""`gymwire collect` and `gymwire learn {sft,dpo,evolve,convert}` (gymwire.commands plugins)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

from gymwire.sdk.errors import SetupError, UsageError, check_not_all_failed

__all__ = ["register_collect", "register_learn"]


def parse_indices(text: str, size: int | None = None) -> list[int]:
    """"0-99,150" -> indices; "all" -> every index of a split of `size`. A bare number is refused:
    `gymwire eval --tasks N` plays a sample of N tasks, and here it would be the one task N."""
    if text.isdigit():
        first = f"0-{int(text) - 1} for the first {text} tasks, or " if int(text) > 0 else ""
        raise UsageError(
            f"--tasks {text}: a bare number is a sample of {text} tasks in gymwire eval, not an index here; "
            f"write {first}{text}-{text} for task {text} alone"
        )
    if text == "all":
        if size is None:
            raise UsageError("--tasks all needs the split's size")
        return list(range(size))
    chosen: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        try:
            start, end = int(first), int(last or first)
        except ValueError:
            raise UsageError(f"--tasks: write indices and ranges like 0-99,150 or all, got {text!r}") from None
        if end < start:  # else an empty range: nothing played, and no word of why
            raise UsageError(f"--tasks: the range {part} runs backwards; write it as {end}-{start}")
        chosen.extend(range(start, end + 1))
    return chosen


@contextlib.contextmanager
def env_server(env: str, server: str | None) -> Iterator[tuple[str, str]]:
    """(url, name to open sessions with): the given server, or `env` served in-process."""
    if server:
        yield server, env
        return
    from gymwire.sdk.registry import resolve_env
    from gymwire.sdk.server import GymServer

    try:
        cls = resolve_env(env)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    with GymServer.private([cls]).run_in_thread() as url:
        yield url, cls.name


def make_player(policy: str, base_url: str | None, temperature: float, top_p: float, turn_tokens: int,
                episode_tokens: int, concurrency: int, device: str = "cpu", threads: int | None = None) -> Any:
    """The expert, or a model through the project's one model/policy factory (trainers/models/backends.py)."""
    from .collect import ExpertPlayer, ModelPlayer

    if policy == "expert":
        return ExpertPlayer()
    from gymwire.trainers.models.backends import ModelError, load_model, make_policy
    from gymwire.trainers.policy import Sampling

    sampling = Sampling(temperature, top_p)
    if base_url:
        backend = make_policy("openai", policy, base_url=base_url, concurrency=concurrency)
        return ModelPlayer(policy, backend, None, sampling, turn_tokens, episode_tokens)
    import torch

    if threads:
        torch.set_num_threads(threads)
    try:
        model, tokenizer, _ = load_model(policy, device)
    except ModelError as exc:
        raise UsageError(str(exc)) from exc
    model.eval()
    backend = make_policy("transformers", model, tokenizer, max_batch=concurrency)
    return ModelPlayer(policy, backend, tokenizer, sampling, turn_tokens, episode_tokens)


# -- gymwire collect --------------------------------------------------------------------------------


def register_collect(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "collect",
        help="play a policy (an expert solver, a model) on an environment's tasks and write trajectories",
        description="Write trajectories (JSON lines; docs/learning.md) of an expert or a model on ENV's tasks. "
        "Running it again with the same --output resumes.",
    )
    parser.add_argument("env", help="environment: a built-in name (babyai, textcraft, sciworld, deepsearch, miniwob) or as served at --server")
    parser.add_argument("--policy", default="expert", help="expert (the env's scripted solver), a model (smollm2, a .gguf, a checkpoint folder), or the model name at --base-url")
    parser.add_argument("--base-url", help="an OpenAI-compatible endpoint serving --policy")
    parser.add_argument("--server", help="a running gym server ws://host:port (default: ENV served in-process)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--tasks", default="0-99", help="task indices: ranges and lists like 0-99,150, or all (default 0-99)")
    parser.add_argument("--samples", type=int, default=1, help="episodes per task (default 1)")
    parser.add_argument("--label", choices=["expert"], help="DAgger: the expert labels every state the policy reaches")
    parser.add_argument("--success-only", action="store_true", help="keep only successful episodes")
    parser.add_argument("--min-reward", type=float, help="keep only episodes with at least this total reward")
    parser.add_argument("--max-turns", type=int, help="turn limit (default: the environment's)")
    parser.add_argument("--options", default="{}", help="session options as YAML, e.g. '{depth: 1}'")
    parser.add_argument("--temperature", type=float, default=1.0, help="model sampling temperature (0: greedy; default 1)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--turn-tokens", type=int, default=64)
    parser.add_argument("--episode-tokens", type=int, default=4096)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0, help="torch seed for sampling")
    parser.add_argument("--output", required=True, help="trajectories file (JSON lines), appended to")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(handler=_collect)


def _collect(args: argparse.Namespace) -> int:
    import yaml

    from gymwire.protocol import ProtocolError

    from .collect import CollectSettings, collect
    from .experts import EXPERTS, shutdown

    if args.policy == "expert" and args.label:
        raise UsageError("--label expert relabels a model's states; with --policy expert there is nothing to relabel")
    if (args.policy == "expert" or args.label) and args.env not in EXPERTS:
        raise UsageError(f"no expert for {args.env!r}; experts: {', '.join(sorted(EXPERTS))}")
    options = yaml.safe_load(args.options) or {}
    if not isinstance(options, dict):
        raise UsageError("--options is a YAML mapping, e.g. '{depth: 1}'")
    token = os.environ.get("GYMWIRE_TOKEN")
    with env_server(args.env, args.server) as (url, name):
        size = None
        if args.tasks == "all":
            size = _split_size(url, name, args.split, token)
        settings = CollectSettings(
            env=name, indices=parse_indices(args.tasks, size), split=args.split, samples=args.samples, options=options,
            max_turns=args.max_turns, concurrency=args.concurrency, label=args.label, success_only=args.success_only,
            min_reward=args.min_reward, progress=not args.no_progress,
        )
        import torch

        torch.manual_seed(args.seed)
        player = make_player(args.policy, args.base_url, args.temperature, args.top_p, args.turn_tokens,
                             args.episode_tokens, args.concurrency, threads=args.threads)
        try:
            counts = asyncio.run(collect(url, player, settings, args.output, token))
        except (ValueError, ProtocolError) as exc:
            raise UsageError(str(exc)) from exc
        except OSError as exc:
            raise SetupError(f"cannot reach the gym server: {exc}") from exc
        finally:
            shutdown()
    first_error = f" (first: {counts['first_error']})" if counts["errors"] else ""
    print(f"collect {name}: played {counts['played']} episodes ({counts['skipped']} already done), "
          f"{counts['successes']} successful, {counts['errors']} errors{first_error}; kept {counts['kept']} in {args.output}")
    check_not_all_failed(name, counts["played"], counts["errors"], counts["first_error"])
    return 0


def _split_size(url: str, env: str, split: str, token: str | None) -> int:
    from gymwire.sdk.client import GymClient

    async def ask() -> int:
        async with GymClient(url, token=token) as client:
            info = await client.describe(env)
        if split not in info.splits:
            raise UsageError(f"{env} has no split {split!r}; it has {sorted(info.splits)}")
        return info.splits[split]

    return asyncio.run(ask())


# -- gymwire learn ----------------------------------------------------------------------------------


def register_learn(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "learn",
        help="learn from trajectories: behaviour cloning / SFT, DPO, AgentEvol; convert trajectory files",
        description="Supervised and preference learning on trajectories written by gymwire collect (docs/learning.md).",
    )
    sub = parser.add_subparsers(dest="learn_command", metavar="ACTION")
    sub.required = True

    sft = sub.add_parser("sft", help="behaviour cloning / SFT: loss on the agent's tokens only (TRL)")
    _data_arguments(sft)
    _training_arguments(sft, lr=1e-4, epochs=1.0)
    sft.set_defaults(handler=_sft)

    dpo = sub.add_parser("dpo", help="DPO on pairs of one task: a rewarded and an unrewarded episode (TRL)")
    _data_arguments(dpo)
    _training_arguments(dpo, lr=5e-6, epochs=1.0)
    dpo.add_argument("--beta", type=float, default=0.1)
    dpo.add_argument("--pairs-per-task", type=int, default=4)
    dpo.set_defaults(handler=_dpo)

    evolve = sub.add_parser("evolve", help="AgentEvol: explore with the model, keep rewarded episodes, learn on them and the base data, repeat")
    _data_arguments(evolve)
    _training_arguments(evolve, lr=5e-5, epochs=1.0)
    evolve.add_argument("--env", required=True, help="built-in environment to explore (or as served at --server)")
    evolve.add_argument("--server", help="a running gym server ws://host:port (default: ENV served in-process)")
    evolve.add_argument("--iterations", type=int, default=2)
    evolve.add_argument("--tasks", default="0-999", help="train tasks to draw each iteration's tasks from (default 0-999)")
    evolve.add_argument("--tasks-per-iteration", type=int, default=100)
    evolve.add_argument("--samples", type=int, default=2, help="episodes per task (default 2)")
    evolve.add_argument("--temperature", type=float, default=1.0)
    evolve.add_argument("--min-reward", type=float, help="keep episodes with at least this reward (default: successful ones)")
    evolve.add_argument("--from-base", action="store_true", help="learn each iteration from --model (the paper), not from the last iteration's model")
    evolve.add_argument("--base-replay", type=int, help="learn on at most this many base episodes per iteration")
    evolve.add_argument("--max-turns", type=int)
    evolve.add_argument("--options", default="{}", help="session options as YAML")
    evolve.add_argument("--turn-tokens", type=int, default=48)
    evolve.add_argument("--concurrency", type=int, default=8)
    evolve.add_argument("--no-progress", action="store_true", help="no progress bar while exploring (one line per iteration)")
    evolve.set_defaults(handler=_evolve)

    convert = sub.add_parser("convert", help="trajectories to AgentTraj, or to the SFT / DPO rows TRL and OpenRLHF read")
    convert.add_argument("data", nargs="+", help="trajectory files (gymwire JSONL or AgentTraj JSON)")
    convert.add_argument("--to", required=True, choices=["agenttraj", "jsonl", "sft", "dpo"],
                         help="agenttraj: AgentGym's JSON list; jsonl: gymwire's trajectories; sft: {messages} rows "
                         "(OpenRLHF --input_key messages --apply_chat_template --multiturn); dpo: {prompt, chosen, rejected} rows")
    convert.add_argument("--output", required=True)
    convert.add_argument("--history", type=int, help="dpo: turns of context before the compared reply (default: all)")
    convert.add_argument("--instructions", default="", help="AgentTraj input: the environment's instructions to split off")
    convert.set_defaults(handler=_convert)


def _data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", nargs="+", help="trajectory files (gymwire JSONL or AgentGym's AgentTraj JSON)")
    parser.add_argument("--model", default="smollm2", help="model to start from: smollm2, a .gguf or a checkpoint folder")
    parser.add_argument("--output", required=True, help="run folder: metrics.jsonl, config.json, model/")
    parser.add_argument("--max-tokens", type=int, default=1024, help="longest row; longer episodes go on in a next row (default 1024)")
    parser.add_argument("--history", type=int, default=2, help="turns of context a continued row or a relabelled turn keeps (default 2)")
    parser.add_argument("--max-episode-turns", help="use only episodes of at most this many turns; one number, or one per file: 40,10")
    parser.add_argument("--episodes", help="use at most this many episodes of each file (a seeded sample); one number, or one per file: 114,40")
    parser.add_argument("--instructions", default=None, help="AgentTraj files: the environment's instructions to split off the first turn")


def _training_arguments(parser: argparse.ArgumentParser, lr: float, epochs: float) -> None:
    parser.add_argument("--epochs", type=float, default=epochs)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--batch-rows", type=int, default=8, help="rows per optimizer step (default 8)")
    parser.add_argument("--train-layers", type=int, help="train only the top N decoder layers (default: all)")
    parser.add_argument("--lora-rank", type=int, default=0, help="train LoRA adapters of this rank (PEFT), merged when saved")
    parser.add_argument("--time-limit", type=float, help="stop training after this many seconds, and save")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)


def load_trajectories(paths: list[str], episodes: str | int | None = None, max_turns: str | int | None = None,
                      seed: int = 0, instructions: str = "") -> list[Any]:
    """Trajectories of every file (gymwire JSONL or AgentTraj by content), filtered and sampled:
    `episodes` and `max_turns` are one number for every file or a comma list, one per file."""
    import random

    from .trajectories import FormatError, read_agenttraj, read_trajectories

    counts = _per_file("--episodes", episodes, len(paths), "114,40")
    turn_limits = _per_file("--max-episode-turns", max_turns, len(paths), "40,10")
    chosen: list[Any] = []
    for path, count, turn_limit in zip(paths, counts, turn_limits):
        if not Path(path).exists():
            raise UsageError(f"no such file: {path}")
        try:
            head = Path(path).read_text(encoding="utf-8")[:1].strip()
            found = read_agenttraj(path, instructions) if head == "[" else read_trajectories(path)
        except FormatError as exc:
            raise UsageError(str(exc)) from exc
        if turn_limit is not None:
            found = [t for t in found if len(t.turns) <= turn_limit]
        if count is not None and len(found) > count:
            found = random.Random(seed).sample(found, count)
        chosen += found
    return chosen


def _per_file(option: str, value: str | int | None, files: int, example: str) -> list[int | None]:
    """An option that is one number for every file or a comma list of one number per file."""
    if value is None:
        return [None] * files
    try:
        given = [int(part) for part in str(value).split(",")]
    except ValueError:
        raise UsageError(f"{option} is a number or one number per file (e.g. {example}), got {value!r}") from None
    if len(given) not in (1, files):
        raise UsageError(f"{option} gives {len(given)} numbers for {files} files: give one, or one per file")
    return given * files if len(given) == 1 else given


def learnable(trajectories: list[Any]) -> list[Any]:
    """What supervised learning uses: rewarded episodes, and the labelled turns of any episode."""
    return [t for t in trajectories if t.success or any(turn.label is not None for turn in t.turns)]


def rows_for(trajectories: list[Any], tokenizer: Any, max_tokens: int, history: int) -> list[Any]:
    from gymwire.trainers.chat import ChatFormat

    from .tokens import token_rows

    chat = ChatFormat(tokenizer)
    rows = []
    for trajectory in learnable(trajectories):
        rows += token_rows([trajectory], chat, max_tokens, history, learn_replies=trajectory.success)
    return rows


def _sft(args: argparse.Namespace) -> int:
    from gymwire.trainers.models.backends import ModelError, load_tokenizer

    from .sft import SFTSettings, train_sft

    trajectories = load_trajectories(args.data, args.episodes, args.max_episode_turns, args.seed, args.instructions or "")
    try:
        tokenizer, _ = load_tokenizer(args.model)
    except (ModelError, OSError) as exc:
        raise UsageError(f"--model {args.model}: {exc}") from exc
    rows = rows_for(trajectories, tokenizer, args.max_tokens, args.history)
    if not rows:
        raise UsageError("no rows to learn from: the files hold no successful episode and no labelled turn")
    settings = SFTSettings(epochs=args.epochs, lr=args.lr, batch_rows=args.batch_rows, train_layers=args.train_layers,
                           lora_rank=args.lora_rank, time_limit_s=args.time_limit, threads=args.threads, seed=args.seed)
    print(f"learn sft: {len(trajectories)} episodes -> {len(rows)} rows, {sum(len(r.input_ids) for r in rows)} tokens "
          f"({sum(sum(r.completion_mask) for r in rows)} agent tokens) per epoch", flush=True)
    model = train_sft(args.model, rows, args.output, settings)
    print(f"learn sft: saved {model} (gymwire eval {model} ENV)")
    return 0


def _pairs(args: argparse.Namespace) -> list[dict[str, Any]]:
    from .trajectories import preference_rows

    trajectories = load_trajectories(args.data, args.episodes, args.max_episode_turns, args.seed, args.instructions or "")
    return list(preference_rows(trajectories, args.history, args.pairs_per_task))


def _dpo(args: argparse.Namespace) -> int:
    from .dpo import DPOSettings, train_dpo

    pairs = _pairs(args)
    if not pairs:
        raise UsageError("no pairs: DPO needs tasks with both a successful and a failed episode (collect --samples N)")
    print(f"learn dpo: {len(pairs)} pairs", flush=True)
    settings = DPOSettings(beta=args.beta, epochs=args.epochs, lr=args.lr, batch_rows=args.batch_rows,
                           threads=args.threads, seed=args.seed, time_limit_s=args.time_limit)
    model = train_dpo(args.model, pairs, args.output, settings)
    print(f"learn dpo: saved {model} (gymwire eval {model} ENV)")
    return 0


def _evolve(args: argparse.Namespace) -> int:
    import yaml

    from gymwire.trainers.models.backends import load_tokenizer

    from .evolve import EvolveSettings, agent_evol, collect_explorer
    from .sft import SFTSettings, train_sft

    base = load_trajectories(args.data, args.episodes, args.max_episode_turns, args.seed, args.instructions or "")
    tokenizer, _ = load_tokenizer(args.model)
    settings = EvolveSettings(
        env=args.env, iterations=args.iterations, tasks_per_iteration=args.tasks_per_iteration,
        task_pool=parse_indices(args.tasks), samples=args.samples, temperature=args.temperature,
        min_reward=args.min_reward, from_current=not args.from_base, max_turns=args.max_turns,
        options=yaml.safe_load(args.options) or {}, base_replay=args.base_replay, seed=args.seed,
    )
    sft_settings = SFTSettings(epochs=args.epochs, lr=args.lr, batch_rows=args.batch_rows, train_layers=args.train_layers,
                               lora_rank=args.lora_rank, time_limit_s=args.time_limit, threads=args.threads, seed=args.seed)

    def learn(start: str, trajectories: list[Any], folder: Path) -> str:
        rows = rows_for(trajectories, tokenizer, args.max_tokens, args.history)
        print(f"learn evolve: {folder.name}: {len(trajectories)} episodes -> {len(rows)} rows", flush=True)
        return str(train_sft(start, rows, folder, sft_settings))

    with env_server(args.env, args.server) as (url, name):
        settings.env = name
        explore = collect_explorer(settings, url, args.concurrency, args.turn_tokens, args.threads,
                                   progress=not args.no_progress)
        final = agent_evol(args.model, base, args.output, settings, explore, learn)
    print(f"learn evolve: {args.iterations} iterations; last model {final}; per iteration: {args.output}/evolve.jsonl")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from .trajectories import conversation_messages, preference_rows, write_agenttraj, write_trajectories

    trajectories = load_trajectories(args.data, instructions=args.instructions)
    if args.to == "agenttraj":
        write_agenttraj(args.output, trajectories)
        count = len(trajectories)
    elif args.to == "jsonl":
        write_trajectories(args.output, trajectories)
        count = len(trajectories)
    else:
        if args.to == "sft":
            rows = [{"messages": conversation_messages(t), "item_id": t.item_id} for t in learnable(trajectories)]
        else:
            rows = list(preference_rows(trajectories, args.history))
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        with open(args.output, "w", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
        count = len(rows)
    print(f"learn convert: wrote {count} {'rows' if args.to in ('sft', 'dpo') else 'trajectories'} to {args.output}")
    return 0
