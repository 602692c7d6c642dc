"""Run ``transformers serve`` on loopback, offline, for tests, benchmarks and the offline demo.

``transformers serve`` (the ``transformers[serving]`` extra) is a real OpenAI-compatible
server that runs on CPU: the same protocol as vLLM, SGLang, Ray Serve LLM and llm-d. Given a
model folder (e.g. one built by :mod:`chatwidget.testing.models`) it serves that model under
the folder's path as its id, with ``HF_HUB_OFFLINE=1`` so nothing is fetched::

    with run_transformers_serve(folder) as served:
        client = OpenAI(base_url=served.base_url, api_key="EMPTY")
        client.chat.completions.create(model=served.model_id, messages=[...])

It is up about 5-25 s after the start, depending on the machine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("chatwidget.testing.transformers_serve")

_CLI = (
    "import sys; from transformers.cli.transformers import main; "
    "sys.argv[0] = 'transformers'; sys.exit(main())"
)
_POLL_S = 0.1
_START_ATTEMPTS = 3  # a free port picked here may be taken before the server binds it


@dataclass(frozen=True)
class ServedModel:
    """A running ``transformers serve``: its URL, the OpenAI base URL, and the model's id."""

    url: str  # e.g. http://127.0.0.1:41234
    model_id: str  # the id /v1/models lists (the folder's path)
    pid: int
    log_path: Path

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL (``url + "/v1"``)."""
        return self.url + "/v1"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def run_transformers_serve(
    model_dir: Path | str,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    start_timeout: float = 180.0,
    extra_args: tuple[str, ...] = (),
) -> Iterator[ServedModel]:
    """Start ``transformers serve MODEL_DIR`` offline on ``host``; yield it once it answers.

    The server is terminated (then killed if it lingers) when the block ends. Its output goes
    to a log file, whose tail is in the error if it does not come up within ``start_timeout``.
    """
    model_id = str(Path(model_dir))
    if not (Path(model_id) / "config.json").is_file():
        raise FileNotFoundError(f"{model_id} has no config.json: build a model folder first.")
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
    env.setdefault("OMP_NUM_THREADS", "1")
    log_dir = Path(tempfile.mkdtemp(prefix="chatwidget-serve-"))
    for attempt in range(1, _START_ATTEMPTS + 1):
        chosen = port if port is not None else free_port(host)
        log_path = log_dir / f"serve-{attempt}.log"
        cmd = [sys.executable, "-c", _CLI, "serve", model_id, "--host", host, "--port", str(chosen)]
        cmd += ["--log-level", "warning", *extra_args]
        with log_path.open("wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            url = f"http://{host}:{chosen}"
            if _wait_healthy(proc, url, start_timeout):
                logger.info("transformers serve (pid %d) serves %s at %s", proc.pid, model_id, url)
                yield ServedModel(url=url, model_id=model_id, pid=proc.pid, log_path=log_path)
                return
            tail = log_path.read_text(errors="replace")[-2000:]
            port_taken = proc.poll() is not None and "address already in use" in tail.lower()
            if port_taken and port is None and attempt < _START_ATTEMPTS:
                continue
            raise RuntimeError(
                f"transformers serve did not answer on {url} within {start_timeout:.0f} s "
                f"(exit code {proc.poll()}). Its log ends with:\n{tail}"
            )
        finally:
            _stop(proc)
    raise AssertionError("unreachable")  # pragma: no cover


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as reply:
                if reply.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(_POLL_S)
    return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
