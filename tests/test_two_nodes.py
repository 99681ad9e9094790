"""Two hosts on this machine: two network namespaces joined by a veth pair, each node with its own copy of DATA and
the manifests and its own working folder, so that nothing is shared but the network. torchrun runs across them
(c10d rendezvous, gloo), as README's "Several GPUs or machines" describes.

Traffic stays on the veth pair made here (10.213.77.1 and .2 exist only inside the two namespaces); the namespaces
and the link are removed at the end, also on failure. Needs root and `ip netns`: skipped with the reason elsewhere."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import build_noisy_folder, tiny
from emlc_cli.run_folder.layout import STATE_FILE, staging_path
from test_distributed import ACCURACY_TOLERANCE, label_accuracy

pytestmark = pytest.mark.slow
RECIPE = ["--recipe", "quick", *tiny("train.epochs=4", "meta.warmup_epochs=1"), "--device", "cpu", "--seed", "3"]
HEAD, OTHER = "10.213.77.1", "10.213.77.2"
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                    "EMLC_TEST_PAUSE_AT", "EMLC_TEST_PAUSE_FILE")


def _cannot_make_hosts() -> str:
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    probe = f"emlcprobe{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` is not allowed here: {made.stderr.strip()[:200]}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return ""


@dataclass
class Node:
    namespace: str
    interface: str
    address: str
    home: Path

    def torchrun(self, port: int, *args: str, join_timeout: int = 60, **env: str) -> subprocess.Popen:
        """`torchrun --nnodes 2 ... -m emlc_cli clean images --clean clean.csv --out runs/r ARGS` on this node.
        is_host and --local-addr: the namespaces share the machine's host name, which resolves to neither address."""
        launch = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                  "--rdzv-backend", "c10d", "--rdzv-endpoint", f"{HEAD}:{port}", "--local-addr", self.address,
                  "--rdzv-conf", f"join_timeout={join_timeout},is_host={int(self.address == HEAD)}", "--log-dir", "logs"]
        command = [*launch, "-m", "emlc_cli", "clean", "images", "--clean", "clean.csv", "--out", "runs/r", *RECIPE, *args]
        variables = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}
        variables.update(OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME=self.interface, EMLC_CACHE_DIR=str(self.home / "store"),
                         EMLC_DIST_TIMEOUT="60", **env)
        return subprocess.Popen(["ip", "netns", "exec", self.namespace, *command], cwd=self.home, env=variables,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def hosts():
    """Two namespaces (unique names) joined by a veth pair, each end with its own address and `lo` up."""
    reason = _cannot_make_hosts()
    if reason:
        pytest.skip(reason)
    tag = secrets.token_hex(3)
    names, links = [f"emlc{tag}n0", f"emlc{tag}n1"], [f"emlc{tag}v0", f"emlc{tag}v1"]
    try:
        for name in names:
            _ip("netns", "add", name)
        _ip("link", "add", links[0], "type", "veth", "peer", "name", links[1])
        for name, link, address in zip(names, links, (HEAD, OTHER)):
            _ip("link", "set", link, "netns", name)
            _ip("-n", name, "addr", "add", f"{address}/30", "dev", link)
            _ip("-n", name, "link", "set", link, "up")
            _ip("-n", name, "link", "set", "lo", "up")
        yield list(zip(names, links, (HEAD, OTHER)))
    finally:
        for name in names:  # deleting a namespace deletes the veth end inside it, and with it the pair
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        subprocess.run(["ip", "link", "del", links[0]], capture_output=True)  # still here if setup stopped early


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> dict:
    return build_noisy_folder(tmp_path_factory.mktemp("dataset"))


def make_nodes(hosts, dataset: dict, where: Path) -> tuple[Node, Node]:
    """Each node's own working folder holding its own copy of DATA (`images`) and the manifest."""
    nodes = []
    for (namespace, interface, address), name in zip(hosts, ("node0", "node1")):
        home = where / name
        shutil.copytree(dataset["root"], home / "images")
        shutil.copy(dataset["clean"], home / "clean.csv")
        nodes.append(Node(namespace, interface, address, home))
    return nodes[0], nodes[1]


def finish(*procs: subprocess.Popen) -> list[tuple[int, str]]:
    """Each process's exit code and output, once it ended (torchrun's bounded waits end it)."""
    logs = [p.communicate(timeout=300)[0] for p in procs]
    return [(p.returncode, log) for p, log in zip(procs, logs)]


def listing(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def outputs(run: Path) -> tuple[str, list]:
    summary = json.loads((run / "summary.json").read_text())
    return (run / "corrected.csv").read_text(), [round(e["score"], 6) for e in summary["epochs"]]


@pytest.fixture(scope="module")
def two_node_run(hosts, dataset, tmp_path_factory):
    """The uninterrupted two-node run, and its wall time against one process on the same data."""
    node0, node1 = make_nodes(hosts, dataset, tmp_path_factory.mktemp("run"))
    data_before = listing(node1.home / "images")
    started = time.perf_counter()
    (code0, log0), (code1, log1) = finish(node0.torchrun(29501), node1.torchrun(29501))
    seconds = time.perf_counter() - started
    assert (code0, code1) == (0, 0), log0[-3000:] + log1[-3000:]
    single = tmp_path_factory.mktemp("single")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "emlc_cli", "clean", str(dataset["root"]), "--clean", str(dataset["clean"]),
                    "--out", str(single / "r"), *RECIPE, "-q"], check=True, timeout=300,
                   env={**os.environ, "OMP_NUM_THREADS": "1", "EMLC_CACHE_DIR": str(single / "store")})
    print(f"\ntwo nodes: {seconds:.1f} s wall (torchrun to exit); one process: {time.perf_counter() - started:.1f} s")
    return {"nodes": (node0, node1), "logs": (log0, log1), "single": single / "r", "data_before": data_before}


def test_two_nodes_clean_like_one_process_and_only_node_0_writes(two_node_run, dataset):
    node0, node1 = two_node_run["nodes"]
    run = node0.home / "runs" / "r"
    acc_two, paths = label_accuracy(run, dataset["truth"])
    acc_one, _ = label_accuracy(two_node_run["single"], dataset["truth"])
    assert sorted(paths) == sorted(set(paths)) == sorted(p.relative_to(dataset["root"]).as_posix()
                                                         for p in dataset["root"].rglob("*.png"))
    assert acc_two >= acc_one - ACCURACY_TOLERANCE, (acc_one, acc_two)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["processes"] == {"count": 2, "backend": "gloo", "max_weight_difference": 0.0}
    assert sorted(p.name for p in node1.home.iterdir()) == ["clean.csv", "images", "logs"]  # no run folder, no store
    assert listing(node1.home / "images") == two_node_run["data_before"]
    assert "waiting for the 2 processes to join at 10.213.77.1:" in two_node_run["logs"][1]


def test_across_nodes_the_image_store_is_not_used(two_node_run):
    """README: the store is shared by the processes of one machine; across machines each decodes for the run."""
    for node in two_node_run["nodes"]:
        assert not (node.home / "store").exists() or not any((node.home / "store").rglob("images.npy"))


def test_stopped_on_node_0_then_resumed_on_both_gives_the_uninterrupted_labels(two_node_run, hosts, dataset, tmp_path_factory):
    node0, node1 = make_nodes(hosts, dataset, tmp_path_factory.mktemp("stopped"))
    paused = node0.home / "paused"
    first = node0.torchrun(29502, EMLC_TEST_PAUSE_AT="2:1", EMLC_TEST_PAUSE_FILE=str(paused))
    second = node1.torchrun(29502)
    deadline = time.monotonic() + 300
    while not paused.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert paused.exists(), f"node 0 never reached the pause point: {finish(first, second)}"
    os.kill(int(paused.read_text()), signal.SIGTERM)  # node 0's rank, not its torchrun
    (code0, log0), (code1, log1) = finish(first, second)
    assert code0 != 0 and code1 != 0 and "--resume" in log0, log0[-2000:]
    assert (staging_path(node0.home / "runs" / "r") / STATE_FILE).is_file() and not (node1.home / "runs").exists()
    (code0, log0), (code1, log1) = finish(node0.torchrun(29503, "--resume"), node1.torchrun(29503, "--resume"))
    assert (code0, code1) == (0, 0), log0[-3000:] + log1[-3000:]
    node0_before = two_node_run["nodes"][0]
    assert outputs(node0.home / "runs" / "r") == outputs(node0_before.home / "runs" / "r")
    assert sorted(p.name for p in node1.home.iterdir()) == ["clean.csv", "images", "logs"]


def test_a_node_with_another_copy_of_data_is_refused_on_both_nodes(hosts, dataset, tmp_path_factory):
    node0, node1 = make_nodes(hosts, dataset, tmp_path_factory.mktemp("different"))
    changed = sorted((node1.home / "images").rglob("*.png"))[5]
    Image.fromarray(np.full((16, 16, 3), 128, dtype=np.uint8)).save(changed)  # one image replaced by a grey one
    name = changed.relative_to(node1.home / "images").as_posix()
    (code0, log0), (code1, log1) = finish(node0.torchrun(29504), node1.torchrun(29504))
    assert code0 != 0 and code1 != 0
    expected = f"rank 1's inputs differ from rank 0's: {name} is "
    assert f"error: {expected}" in log0 and f"error: rank 1: {expected}" in log1, log0[-2000:] + log1[-2000:]
    assert "Traceback" not in log0.split("error:")[0]
    assert not (node0.home / "runs").exists() and not (node1.home / "runs").exists()


def test_a_node_that_never_starts_ends_node_0_after_the_rendezvous_timeout(hosts, dataset, tmp_path_factory):
    """Before the rendezvous completes emlc is not running yet: torchrun's own join_timeout bounds the wait."""
    node0, _ = make_nodes(hosts, dataset, tmp_path_factory.mktemp("alone"))
    ((code, log),) = finish(node0.torchrun(29505, join_timeout=5))
    assert code != 0 and "RendezvousTimeoutError" in log, log[-2000:]
    assert not (node0.home / "runs").exists()
