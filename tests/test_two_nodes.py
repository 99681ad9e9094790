"""Two hosts on this machine: two network namespaces joined by a veth pair, each node with its own copy of DATA and
the manifests and its own working folder (its own TMPDIR too), so that nothing is shared but the network. The
machines meet as README's "Several GPUs or machines" describes: `emlc clean --nnodes 2 --rdzv-endpoint ...`, and
once by hand with torchrun (c10d rendezvous, gloo).

Traffic stays on the veth pair made here (10.213.77.1 and .2 exist only inside the two namespaces); the namespaces
and the link are removed at the end, also on failure. Needs root and `ip netns`: skipped with the reason elsewhere."""
from __future__ import annotations

import json
import os
import resource
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
RECIPE = ["--recipe", "quick", *tiny("train.epochs=3", "meta.warmup_epochs=1"), "--device", "cpu", "--seed", "3"]
HEAD, OTHER = "10.213.77.1", "10.213.77.2"
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                    "EMLC_TEST_PAUSE_AT", "EMLC_TEST_PAUSE_FILE", "GLOO_SOCKET_IFNAME", "TMPDIR")
NODE_1_WRITES = ["clean.csv", "images", "tmp"]  # its copy of the inputs, and its TMPDIR


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

    def emlc(self, port: int, *args: str, **env: str) -> subprocess.Popen:
        """`emlc clean images --clean clean.csv --out runs/r ... --nnodes 2 --rdzv-endpoint HEAD:PORT --local-addr
        ADDR` on this node (--local-addr: the namespaces share the machine's host name, which resolves to neither)."""
        machines = ["--nnodes", "2", "--rdzv-endpoint", f"{HEAD}:{port}", "--local-addr", self.address]
        return self._start([sys.executable, "-m", "emlc_cli", *_clean(*args), *machines], env)

    def torchrun(self, port: int, *args: str) -> subprocess.Popen:
        """The same by hand: `torchrun --nnodes 2 ... -m emlc_cli clean ...`, with what --local-addr does for emlc."""
        launch = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                  "--rdzv-backend", "c10d", "--rdzv-endpoint", f"{HEAD}:{port}", "--local-addr", self.address,
                  "--rdzv-conf", f"is_host={int(self.address == HEAD)}", "--log-dir", "tmp/logs"]
        return self._start([*launch, "-m", "emlc_cli", *_clean(*args)], {"GLOO_SOCKET_IFNAME": self.interface})

    def _start(self, command: list[str], env: dict[str, str]) -> subprocess.Popen:
        variables = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}
        variables.update({"OMP_NUM_THREADS": "1", "EMLC_CACHE_DIR": str(self.home / "store"),
                          "TMPDIR": str(self.home / "tmp"), "EMLC_DIST_TIMEOUT": "60", **env})
        return subprocess.Popen(["ip", "netns", "exec", self.namespace, *command], cwd=self.home, env=variables,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def wrote_nothing(self) -> bool:
        """Only its inputs, and in its TMPDIR torch's own folders: torchrun's logs and the empty cache folder that
        torch makes on the first optimizer step (torchinductor_USER), nothing of emlc's."""
        tmp = self.home / "tmp"
        folders = {p.name.split("_")[0] for p in tmp.iterdir()}
        files = {p.relative_to(tmp).parts[0].split("_")[0] for p in tmp.rglob("*") if p.is_file()}
        inputs = sorted(p.name for p in self.home.iterdir()) == NODE_1_WRITES
        return inputs and folders <= {"torchelastic", "torchinductor", "logs"} and files <= {"torchelastic", "logs"}


def _clean(*args: str) -> list[str]:
    return ["clean", "images", "--clean", "clean.csv", "--out", "runs/r", *RECIPE, *args]


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
    """Each node's own working folder holding its own copy of DATA (`images`) and the manifest, and its TMPDIR."""
    nodes = []
    for (namespace, interface, address), name in zip(hosts, ("node0", "node1")):
        home = where / name
        shutil.copytree(dataset["root"], home / "images")
        shutil.copy(dataset["clean"], home / "clean.csv")
        (home / "tmp").mkdir()
        nodes.append(Node(namespace, interface, address, home))
    return nodes[0], nodes[1]


def finish(*procs: subprocess.Popen) -> list[tuple[int, str]]:
    """Each process's exit code and output, once it ended (the bounded waits end it). Past 300 s each launcher is
    stopped, which stops the workers it started (torchrun's handling of SIGTERM), so that none outlives the test."""
    try:
        logs = [p.communicate(timeout=300)[0] for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        raise
    return [(p.returncode, log) for p, log in zip(procs, logs)]


def listing(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def outputs(run: Path) -> tuple[str, list]:
    summary = json.loads((run / "summary.json").read_text())
    return (run / "corrected.csv").read_text(), [round(e["score"], 6) for e in summary["epochs"]]


def cpu_seconds() -> float:
    """CPU time of the processes this test started and waited for (their own children included)."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


@pytest.fixture(scope="module")
def two_node_run(hosts, dataset, tmp_path_factory):
    """The uninterrupted two-node run, by hand with torchrun, and one process on the same data: their wall times."""
    node0, node1 = make_nodes(hosts, dataset, tmp_path_factory.mktemp("run"))
    data_before = listing(node1.home / "images")
    started, cpu = time.perf_counter(), cpu_seconds()
    (code0, log0), (code1, log1) = finish(node0.torchrun(29501), node1.torchrun(29501))
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    assert (code0, code1) == (0, 0), log0[-3000:] + log1[-3000:]
    single = tmp_path_factory.mktemp("single")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "emlc_cli", "clean", str(dataset["root"]), "--clean", str(dataset["clean"]),
                    "--out", str(single / "r"), *RECIPE, "-q"], check=True, timeout=300,
                   env={**os.environ, "OMP_NUM_THREADS": "1", "EMLC_CACHE_DIR": str(single / "store")})
    print(f"\ntwo nodes: {seconds:.1f} s wall ({cpu:.1f} s CPU), start to exit; one process: "
          f"{time.perf_counter() - started:.1f} s")
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
    assert node1.wrote_nothing()  # no run folder, no store
    assert listing(node1.home / "images") == two_node_run["data_before"]
    assert "waiting for the 2 processes to join at 10.213.77.1:" in two_node_run["logs"][1]


def test_across_nodes_the_image_store_is_not_used(two_node_run):
    """README: the store is shared by the processes of one machine; across machines each decodes for the run."""
    for node in two_node_run["nodes"]:
        assert not (node.home / "store").exists() or not any((node.home / "store").rglob("images.npy"))


def test_stopped_on_node_0_then_resumed_on_both_gives_the_uninterrupted_labels(two_node_run, hosts, dataset, tmp_path_factory):
    """With emlc's own --nnodes launch; the uninterrupted run it is compared with was launched by hand."""
    node0, node1 = make_nodes(hosts, dataset, tmp_path_factory.mktemp("stopped"))
    paused = node0.home / "paused"
    first = node0.emlc(29502, EMLC_TEST_PAUSE_AT="2:1", EMLC_TEST_PAUSE_FILE=str(paused))
    second = node1.emlc(29502)
    deadline = time.monotonic() + 300
    while not paused.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert paused.exists(), f"node 0 never reached the pause point: {finish(first, second)}"
    os.kill(int(paused.read_text()), signal.SIGTERM)  # node 0's rank, not the emlc process that launched it
    (code0, log0), (code1, log1) = finish(first, second)
    assert (code0, code1) == (130, 130) and "--resume" in log0, log0[-2000:] + log1[-2000:]
    assert (staging_path(node0.home / "runs" / "r") / STATE_FILE).is_file() and not (node1.home / "runs").exists()
    (code0, log0), (code1, log1) = finish(node0.emlc(29503, "--resume"), node1.emlc(29503, "--resume"))
    assert (code0, code1) == (0, 0), log0[-3000:] + log1[-3000:]
    node0_before = two_node_run["nodes"][0]
    assert outputs(node0.home / "runs" / "r") == outputs(node0_before.home / "runs" / "r")
    assert node1.wrote_nothing()


def test_other_data_on_node_1_or_no_node_1_at_all_ends_each_node_with_one_line(hosts, dataset, tmp_path_factory):
    """Node 1 with one image changed is refused on both nodes. Node 1 never starting: node 0 holds the rendezvous
    and gives up after EMLC_DIST_TIMEOUT; the other way round, node 1 cannot reach the endpoint. The machines left
    alone only wait, so they run alongside the refused pair."""
    node0, node1 = make_nodes(hosts, dataset, tmp_path_factory.mktemp("different"))
    alone0, alone1 = make_nodes(hosts, dataset, tmp_path_factory.mktemp("alone"))
    changed = sorted((node1.home / "images").rglob("*.png"))[5]
    Image.fromarray(np.full((16, 16, 3), 128, dtype=np.uint8)).save(changed)  # one image replaced by a grey one
    name = changed.relative_to(node1.home / "images").as_posix()
    waiting = alone0.emlc(29505, EMLC_DIST_TIMEOUT="3"), alone1.emlc(29506, EMLC_DIST_TIMEOUT="3")
    (code0, log0), (code1, log1) = finish(node0.emlc(29504, "-q"), node1.emlc(29504, "-q"))
    expected = f"rank 1's inputs differ from rank 0's: {name} is "
    assert (code0, code1) == (2, 2), log0[-2000:] + log1[-2000:]
    (line0,), (line1,) = emlc_lines(log0), emlc_lines(log1)
    assert line0.startswith(f"error: {expected}") and line1.startswith(f"error: rank 1: {expected}"), log0 + log1
    assert not (node0.home / "runs").exists() and node1.wrote_nothing()

    (code0, log0), (code1, log1) = finish(*waiting)
    assert (code0, code1) == (2, 2), log0[-2000:] + log1[-2000:]
    assert log0 == (f"error: the 2 machines did not all join at --rdzv-endpoint {HEAD}:29505 within 3 s "
                    "(EMLC_DIST_TIMEOUT): start the same command, with --nnodes 2 and --rdzv-endpoint "
                    f"{HEAD}:29505, on every machine, or raise EMLC_DIST_TIMEOUT\n"), log0[-2000:]
    assert log1.startswith(f"error: cannot reach or hold the rendezvous of 2 machines at --rdzv-endpoint {HEAD}:29506 "
                           "(EMLC_DIST_TIMEOUT=3 s a try): ") and log1.count("\n") == 1, log1[-2000:]
    assert not (alone0.home / "runs").exists() and alone1.wrote_nothing()


def emlc_lines(log: str) -> list[str]:
    """The lines emlc printed: torch's own C++ warnings (`[W1206 ...`; here that the namespaces cannot look up a
    host name) left out."""
    return [line for line in log.splitlines() if not line.startswith("[W")]
