"""Tiny real models, a store per test, file-editing helpers for fault injection, and a "zygote":
one helper process that imports torch and ecseq once and forks a fresh child per job, so tests
can SIGKILL publishers many times without paying for a Python start-up each time."""

from __future__ import annotations

import hashlib
import io
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ecseq.artifacts import ArtifactStore, ModelBundle, Published
from ecseq.encoders.models import LSTMEncoder, SequenceEncoder
from ecseq.features import FeatureSpec
from ecseq.gnn import RelationGNN, RelationModel
from ecseq.graph import Attachment, CompressedGraph

REPO = Path(__file__).resolve().parents[3]
WINDOW, HIDDEN, NODES = 6, 8, 20


def make_spec(seed: int = 0) -> FeatureSpec:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"amount": rng.exponential(30.0, 300), "gap": rng.normal(5.0, 2.0, 300),
                          "kind": rng.choice(["a", "b", "c", "d"], 300)})
    frame.loc[::17, "gap"] = np.nan
    return FeatureSpec.fit(frame, ("amount", "gap"), ("kind",))


def make_windows(spec: FeatureSpec, n: int, seed: int) -> np.ndarray:
    """(n, WINDOW, dim) featurised windows of random events, some left-padded like short histories."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"amount": rng.exponential(30.0, n * WINDOW), "gap": rng.normal(5.0, 2.0, n * WINDOW),
                          "kind": rng.choice(["a", "b", "c", "x"], n * WINDOW)})
    windows = spec.transform(frame).reshape(n, WINDOW, spec.dim)
    windows[: n // 4, : WINDOW // 2] = 0.0
    return windows


def make_bundle(seed: int = 0, encoder: SequenceEncoder | None = None, layer: str = "sage_mean") -> ModelBundle:
    spec = make_spec()
    torch.manual_seed(seed)
    encoder = encoder if encoder is not None else LSTMEncoder(spec.dim, HIDDEN)
    hidden = encoder.embedding_dim
    rng = np.random.default_rng(seed + 1)
    embeddings = rng.normal(size=(200, hidden)).astype(np.float32)
    labels = (rng.random(200) < 0.2).astype(np.int64)
    graph = CompressedGraph.from_assignment(embeddings, labels, np.arange(200) % NODES)
    gnn = RelationGNN(hidden, hidden + 1, layer, residual=True, use_label_rate=True)  # as relation._new_gnn
    with torch.no_grad():  # an untrained residual GNN outputs exactly the encoder's score; make it differ
        gnn.out.weight.normal_(0.0, 0.5)
        gnn.out.bias.fill_(0.05)
    return ModelBundle(spec, WINDOW, encoder.eval(), RelationModel(graph, gnn.eval(), Attachment(-1.0, 3)))


@pytest.fixture(scope="session")
def bundle() -> ModelBundle:
    return make_bundle()


@pytest.fixture(scope="session")
def golden(bundle) -> np.ndarray:
    return make_windows(bundle.feature_spec, 24, seed=5)


@pytest.fixture
def store(tmp_path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "store", keep=3)


def publish(store: ArtifactStore, bundle: ModelBundle, golden: np.ndarray, **kwargs) -> Published:
    args = {"parent": None, "encoder_version": None, "data": {"rows": 100}, "metrics": {"ap": 0.5}}
    return store.publish(bundle, golden, **{**args, **kwargs})


# -- editing a published version (fault injection) -----------------------------------------------


def read_manifest(vdir: Path) -> dict:
    return json.loads((vdir / "manifest.json").read_text())


def write_manifest(vdir: Path, manifest: dict) -> None:
    (vdir / "manifest.json").write_text(json.dumps(manifest, indent=1))


def rewrite(vdir: Path, name: str, data: bytes, rehash: bool = True) -> None:
    """Replace a file; with `rehash` also fix its manifest entry, so the deeper checks are reached."""
    (vdir / name).write_bytes(data)
    if rehash:
        manifest = read_manifest(vdir)
        manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        write_manifest(vdir, manifest)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def savez_bytes(arrays: dict, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=allow_pickle, **arrays)
    return buf.getvalue()


def edit_npz(vdir: Path, name: str, edit) -> None:
    arrays = load_npz(vdir / name)
    edit(arrays)
    rewrite(vdir, name, savez_bytes(arrays))


# -- the zygote -----------------------------------------------------------------------------------

ZYGOTE = r"""
import json, os, signal, sys, time, traceback
import numpy as np
import torch
torch.set_num_threads(1)
from ecseq.artifacts import ArtifactStore

signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped automatically

def say(**msg):
    msg["pid"] = os.getpid()
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()

def loop(root, keep, count):
    store = ArtifactStore(root, keep=keep)
    loaded = store.load()
    with np.load(loaded.path / "golden.npz", allow_pickle=False) as npz:
        golden = npz["windows"]
    say(ready=True)
    i = 0
    while count is None or i < count:
        started = time.perf_counter()
        p = store.publish(loaded.bundle, golden, parent=loaded.version, encoder_version=loaded.version,
                          data={"i": i}, metrics={}, extra_files={"report.json": b"{}" * 4096})
        say(published=p.version, seconds=time.perf_counter() - started)
        i += 1

def hold(root, seconds):
    store = ArtifactStore(root)
    with store.build_lock():
        say(held=True)
        time.sleep(seconds)
    say(released=True)

say(zygote=True)
for line in sys.stdin:
    job = json.loads(line)
    child = os.fork()
    if child == 0:
        code = 0
        try:
            if job["cmd"] == "loop":
                loop(job["root"], job["keep"], job.get("count"))
            elif job["cmd"] == "hold":
                hold(job["root"], job["seconds"])
            say(done=True)
        except BaseException:
            say(error=traceback.format_exc())
            code = 1
        finally:
            os._exit(code)
    say(forked=child, seq=job["seq"])
"""


def message(pid: int, key: str):
    """Matches child `pid`'s message carrying `key` (ready, published, held, done)."""
    return lambda m: m.get("pid") == pid and key in m


class Zygote:
    def __init__(self, log_path: Path, stderr) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE], cwd=REPO, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=stderr, text=True, bufsize=1)
        self.log_path = log_path
        self._messages: queue.Queue = queue.Queue()
        self._seen: list[dict] = []
        self._seq = 0
        self.children: set[int] = set()
        threading.Thread(target=self._read, daemon=True).start()
        self.wait(lambda m: m.get("zygote"), timeout=60)

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._messages.put(json.loads(line))

    def wait(self, predicate, timeout: float = 30.0) -> dict:
        """The first message (seen before or arriving within `timeout`) that matches `predicate`."""
        for msg in self._seen:
            if predicate(msg):
                self._seen.remove(msg)
                return msg
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"zygote: no matching message in {timeout}s; seen {self._seen[-5:]}; "
                                     f"stderr: {self.log_path.read_text()[-2000:]}")
            try:
                msg = self._messages.get(timeout=left)
            except queue.Empty:
                continue
            if "error" in msg:
                raise AssertionError(f"zygote child {msg['pid']} failed:\n{msg['error']}")
            if predicate(msg):
                return msg
            self._seen.append(msg)

    def spawn(self, **job) -> int:
        self._seq += 1
        seq = self._seq
        self.proc.stdin.write(json.dumps({**job, "seq": seq}) + "\n")
        self.proc.stdin.flush()
        pid = self.wait(lambda m: m.get("seq") == seq)["forked"]
        self.children.add(pid)
        return pid

    def kill(self, pid: int, timeout: float = 10.0) -> None:
        """SIGKILL a child and wait until it is gone (the zygote reaps it)."""
        try:
            os.kill(pid, 9)
        except ProcessLookupError:  # already exited (and reaped by the zygote)
            self.children.discard(pid)
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                self.children.discard(pid)
                return
            time.sleep(0.002)
        raise AssertionError(f"child {pid} still alive {timeout}s after SIGKILL")

    def close(self) -> None:
        for pid in list(self.children):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="session")
def zygote(tmp_path_factory):
    log_path = tmp_path_factory.mktemp("zygote") / "stderr.log"
    with open(log_path, "w") as stderr:
        z = Zygote(log_path, stderr)
        try:
            yield z
        finally:
            z.close()
