"""The command-line round trip of issue 2: build and serve with the CLIs, load in a new process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from chatwidget.testing.hub import run_hub_process
from chatwidget.testing.models import DEMO_GATED_TOKEN

MODELS_CLI = (sys.executable, "-m", "chatwidget.testing.models")
LOAD_SCRIPT = """
import json, sys
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("demo/tiny")
tok = AutoTokenizer.from_pretrained("demo/tiny")
print(json.dumps({"cls": type(model).__name__, "params": model.num_parameters(),
                  "eos": tok.eos_token}))
"""


def _status(url: str, headers: dict[str, str] | None = None) -> int:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return err.code


@pytest.mark.slow
def test_cli_built_model_loads_by_id_in_a_fresh_process(tmp_path: Path, hf_home: Path) -> None:
    root = tmp_path / "root"
    build = subprocess.run(
        [*MODELS_CLI, "build", str(root), "--size", "tiny", "--name", "demo/tiny"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    assert build.stdout.strip() == str(root / "demo" / "tiny")
    with run_hub_process(root) as url:
        env = {**os.environ, "HF_ENDPOINT": url, "HF_HOME": str(tmp_path / "fresh-home")}
        load = subprocess.run(
            [sys.executable, "-c", LOAD_SCRIPT],
            capture_output=True,
            text=True,
            env=env,
            timeout=180,
            check=False,
        )
    assert load.returncode == 0, load.stderr
    result = json.loads(load.stdout.strip().splitlines()[-1])
    assert result == {"cls": "LlamaForCausalLM", "params": result["params"], "eos": "<|im_end|>"}
    assert result["params"] > 0
    assert list((tmp_path / "fresh-home" / "hub").glob("models--demo--tiny"))


@pytest.mark.slow
def test_serve_demo_builds_repos_gates_one_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    root = tmp_path / "demo-root"
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatwidget.testing.hub", "serve", str(root), "--demo"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert _status(f"{url}/api/models/demo/tiny-chat/revision/main") == 200
        assert _status(f"{url}/api/models/demo/small-chat/revision/main") == 200
        assert _status(f"{url}/api/models/gated/tiny-chat/revision/main") == 401
        auth = {"Authorization": f"Bearer {DEMO_GATED_TOKEN}"}
        assert _status(f"{url}/api/models/gated/tiny-chat/revision/main", auth) == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(15)
        if proc.stdout is not None:
            proc.stdout.close()


def test_serve_rejects_a_missing_root_with_a_hint(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "chatwidget.testing.hub", "serve", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--demo" in result.stderr


def test_hub_process_applies_rate_and_gate_options(hub_root: Path) -> None:
    with run_hub_process(hub_root, rate=50_000, gated={"demo/tiny-chat-b": "secret"}) as url:
        assert _status(f"{url}/api/models/demo/tiny-chat-b/revision/main") == 401
        assert _status(f"{url}/api/models/demo/tiny-chat/revision/main") == 200
        weights = f"{url}/demo/tiny-chat/resolve/main/model.safetensors"
        started = time.monotonic()
        with urllib.request.urlopen(weights, timeout=60) as resp:
            size = len(resp.read())
        # 117 KB at 50 KB/s: about two seconds; generous bounds.
        assert size / 50_000 * 0.6 < time.monotonic() - started < size / 50_000 * 10


def test_hub_process_that_fails_to_start_says_so(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="did not print its URL"):  # noqa: SIM117
        with run_hub_process(tmp_path / "missing", start_timeout=60):
            pass
