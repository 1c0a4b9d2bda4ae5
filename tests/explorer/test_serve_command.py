"""``cnnlab serve`` as a command: it prints its address, answers, and Ctrl-C stops it
cleanly (exit 0, no traceback, the port free again); it warns when it binds beyond this
machine; a model named wrongly is one line of error."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from cnnlab.cli import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("run")
    assert main(["train", "--data", "mnist1d", "--model", "mnist1d-cnn", "--steps", "20",
                 "--checkpoint", str(folder), "--no-progress"]) == 0
    return folder


def _start(*args: str) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-m", "cnnlab", "serve", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    line = process.stdout.readline()  # "cnnlab serve: NAME at http://HOST:PORT/ ..."
    assert " at http://" in line, (line, process.stderr.read() if process.poll() else "")
    return process, line.split(" at ")[1].split()[0]


def test_ctrl_c_stops_it_cleanly_and_frees_the_port(checkpoint):
    process, url = _start("--checkpoint", str(checkpoint), "--port", "0")
    try:
        with urllib.request.urlopen(url + "api/model", timeout=30) as response:
            info = json.load(response)
        assert info["name"] == "mnist1d-cnn" and info["input_shape"] == [1, 40]
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill() if process.poll() is None else None
    assert process.returncode == 0, err
    assert "stopped" in out
    assert "Traceback" not in err and "Traceback" not in out
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    with socket.socket() as probe:  # released: a new server can bind it
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))


def test_it_warns_when_it_binds_beyond_this_machine(checkpoint):
    process, url = _start("--checkpoint", str(checkpoint), "--port", "0", "--host",
                          "0.0.0.0")
    try:
        time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        process.kill() if process.poll() is None else None
    assert "warning: serving on 0.0.0.0" in err
    assert url.startswith("http://127.0.0.1:")


def test_a_wrongly_named_model_is_one_line_of_error(capsys, checkpoint):
    assert main(["serve", "--torch-model", "no_such_module:Net", "--state-dict", "x",
                 "--input-shape", "1", "28", "28"]) == 2
    assert "cannot import 'no_such_module'" in capsys.readouterr().err
    assert main(["serve", "--checkpoint", str(checkpoint), "--input-shape", "1", "4"]) == 2
    assert "--input-shape go with --torch-model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", "--checkpoint", str(checkpoint), "--port", "70000"])
    assert "port 0..65535" in capsys.readouterr().err
