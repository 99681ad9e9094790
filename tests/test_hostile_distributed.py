"""Hostile or broken torchrun variables: one line naming the variable, exit 2, and a bounded wait for the others."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from emlc_cli.errors import UsageError
from emlc_cli.runtime.device import DEFAULT_TIMEOUT_S, LAUNCH_ENV, TIMEOUT_ENV, launch_env

GOOD = {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def without_launch_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (*LAUNCH_ENV, "LOCAL_WORLD_SIZE", TIMEOUT_ENV)}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def clean(folder: dict, *extra: str, env: dict[str, str], out: str = "run") -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "emlc_cli", "clean", str(folder["root"]), "--clean", str(folder["clean"]),
           "--out", str(folder["tmp"] / out), "--device", "cpu", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("changes,named", [
    ({"WORLD_SIZE": "abc"}, "WORLD_SIZE='abc'"),
    ({"WORLD_SIZE": ""}, "WORLD_SIZE=''"),
    ({"WORLD_SIZE": "0"}, "WORLD_SIZE='0'"),
    ({"RANK": "x"}, "RANK='x'"),
    ({"RANK": "2"}, "RANK='2'"),
    ({"LOCAL_RANK": "-1"}, "LOCAL_RANK='-1'"),
    ({"LOCAL_WORLD_SIZE": "3"}, "LOCAL_WORLD_SIZE='3'"),
    ({"MASTER_PORT": "notaport"}, "MASTER_PORT='notaport'"),
    ({"MASTER_PORT": "70000"}, "MASTER_PORT='70000'"),
    ({"MASTER_ADDR": " "}, "MASTER_ADDR=' '"),
    ({TIMEOUT_ENV: "nan"}, f"{TIMEOUT_ENV}='nan'"),
    ({TIMEOUT_ENV: "-5"}, f"{TIMEOUT_ENV}='-5'"),
    ({"RANK": None}, "RANK"),
    ({"MASTER_ADDR": None, "MASTER_PORT": None}, "MASTER_ADDR, MASTER_PORT not set"),
])
def test_a_bad_torchrun_variable_is_one_line_even_on_a_dry_run(monkeypatch, changes, named):
    for name, value in {**GOOD, **changes}.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    with pytest.raises(UsageError, match=named.replace("(", r"\(")):
        launch_env()


def test_the_cli_names_the_variable_and_exits_2(noisy_folder):
    for changes, named in (({"WORLD_SIZE": "abc"}, "WORLD_SIZE='abc'"), ({"WORLD_SIZE": ""}, "WORLD_SIZE=''"),
                           ({**GOOD, "RANK": "x"}, "RANK='x'"), ({**GOOD, "MASTER_PORT": "notaport"}, "MASTER_PORT")):
        done = clean(noisy_folder, "--dry-run", env=without_launch_env(**changes))
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr and named in done.stderr.strip().splitlines()[-1], done.stderr
    assert not (noisy_folder["tmp"] / "run").exists()


def test_valid_variables_are_read_once_into_one_record(monkeypatch):
    for name, value in {**GOOD, "LOCAL_WORLD_SIZE": "1", TIMEOUT_ENV: "2.5"}.items():
        monkeypatch.setenv(name, value)
    launch = launch_env()
    assert (launch.world_size, launch.rank, launch.local_rank, launch.local_world_size) == (2, 1, 0, 1)
    assert launch.endpoint == "127.0.0.1:29500" and launch.timeout_s == 2.5
    monkeypatch.delenv(TIMEOUT_ENV)
    assert launch_env().timeout_s == DEFAULT_TIMEOUT_S
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "x")  # one process: the rest is not torchrun's and not read
    assert not launch_env().distributed


def test_a_lone_rank_says_what_it_waits_for_and_gives_up_after_the_timeout(noisy_folder):
    """WORLD_SIZE=2 with nobody else: torch alone would wait 30 minutes without a word."""
    port = str(free_port())
    env = without_launch_env(**{**GOOD, "RANK": "0", "MASTER_PORT": port, TIMEOUT_ENV: "3"})
    done = clean(noisy_folder, env=env)
    assert done.returncode == 2, done.stderr
    assert f"waiting for the 2 processes to join at 127.0.0.1:{port}" in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "Traceback" not in done.stderr
    assert f"within 3 s ({TIMEOUT_ENV})" in last and "WORLD_SIZE=2" in last and f"MASTER_ADDR:MASTER_PORT=127.0.0.1:{port}" in last
    assert not (noisy_folder["tmp"] / "run").exists() and not list(noisy_folder["tmp"].glob(".run*"))


@pytest.mark.parametrize("other,named", [
    ((["a.png", "b.png"], [0, 1], [10, 99]), "b.png is 99 bytes there and 20 bytes on rank 0"),
    ((["a.png", "b.png"], [0, 0], [10, 20]), "b.png has another given label there"),
    ((["a.png", "c.png"], [0, 1], [10, 20]), "image 2 is c.png there and b.png on rank 0"),
    ((["a.png"], [0], [10]), "DATA holds 1 images there and 2 on rank 0"),
])
def test_a_node_with_other_inputs_is_told_which_row_differs(other, named):
    from emlc_cli.prepare.same_inputs import _first_row

    assert _first_row((["a.png", "b.png"], [0, 1], [10, 20]), other) == named


# ---- emlc clean --nnodes N --rdzv-endpoint HOST:PORT [--local-addr ADDR] --------------------------------------
@pytest.mark.parametrize("nnodes,endpoint,local_addr,named", [
    (2, None, None, "--nnodes 2: add --rdzv-endpoint HOST:PORT"),
    (2, "head-node", None, "--rdzv-endpoint 'head-node': expected HOST:PORT"),
    (2, "head-node:0", None, "--rdzv-endpoint 'head-node:0'"),
    (2, "head-node:70000", None, "--rdzv-endpoint 'head-node:70000'"),
    (2, ":29500", None, "--rdzv-endpoint ':29500'"),
    (2, "head node:29500", None, "--rdzv-endpoint 'head node:29500'"),
    (1, "head-node:29500", None, "--rdzv-endpoint is for several machines: add --nnodes N"),
    (1, None, "127.0.0.1", "--local-addr is for several machines"),
    (2, "head-node:29500", "", "--local-addr '': expected this machine's address"),
    (2, "head-node:29500", "203.0.113.7", "--local-addr 203.0.113.7: no network interface of this machine has this address"),
])
def test_bad_machine_options_are_one_line_naming_the_option(monkeypatch, nnodes, endpoint, local_addr, named):
    from emlc_cli.runtime.nodes import check_nodes

    monkeypatch.delenv("GLOO_SOCKET_IFNAME", raising=False)
    with pytest.raises(UsageError, match=named.replace("(", r"\(")):
        check_nodes(nnodes, endpoint, local_addr)


def test_machine_options_become_torchruns_with_every_wait_bounded(monkeypatch):
    """The machine whose --local-addr is the endpoint's host holds the rendezvous; gloo is told the interface."""
    from emlc_cli.runtime.nodes import check_nodes

    monkeypatch.delenv("GLOO_SOCKET_IFNAME", raising=False)
    monkeypatch.setenv(TIMEOUT_ENV, "7.5")
    head = check_nodes(2, "127.0.0.1:29500", "127.0.0.1")
    assert head.torchrun_args() == ["--nnodes", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:29500",
                                    "--rdzv-conf", "join_timeout=8,read_timeout=8,is_host=1", "--local-addr", "127.0.0.1"]
    assert os.environ["GLOO_SOCKET_IFNAME"] == "lo"
    other = check_nodes(3, "head-node:29500", None)
    assert other.torchrun_args()[-2:] == ["--rdzv-conf", "join_timeout=8,read_timeout=8"]
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "eth7")  # the user's choice stands, address checked or not
    assert check_nodes(2, "head-node:29500", "203.0.113.7").local_addr == "203.0.113.7"
    assert os.environ["GLOO_SOCKET_IFNAME"] == "eth7"
    assert check_nodes(1, None, None).torchrun_args() == ["--standalone"]


def test_a_bad_endpoint_is_refused_before_anything_starts(noisy_folder):
    done = clean(noisy_folder, "--nnodes", "2", "--rdzv-endpoint", "head-node", env=without_launch_env())
    assert done.returncode == 2 and done.stderr.startswith("error: --rdzv-endpoint 'head-node': expected HOST:PORT")
    assert done.stderr.count("\n") == 1 and not (noisy_folder["tmp"] / "run").exists()


def test_a_machine_alone_gives_up_after_the_timeout_with_one_line_naming_the_endpoint(noisy_folder):
    """`emlc clean --nnodes 2` runs torchrun's rendezvous itself: nobody else comes, one line after EMLC_DIST_TIMEOUT
    (plain torchrun would wait 600 s and end in a traceback). tests/test_two_nodes.py does it across two hosts."""
    endpoint = f"127.0.0.1:{free_port()}"
    done = clean(noisy_folder, "--nnodes", "2", "--rdzv-endpoint", endpoint, env=without_launch_env(**{TIMEOUT_ENV: "2"}))
    assert done.returncode == 2, done.stderr
    assert done.stderr == (f"error: the 2 machines did not all join at --rdzv-endpoint {endpoint} within 2 s "
                           f"({TIMEOUT_ENV}): start the same command, with --nnodes 2 and --rdzv-endpoint {endpoint}, "
                           f"on every machine, or raise {TIMEOUT_ENV}\n")
    assert not (noisy_folder["tmp"] / "run").exists() and not list(noisy_folder["tmp"].glob(".run*"))


def test_a_rendezvous_that_fails_otherwise_is_one_line_naming_the_endpoint_and_the_cause():
    from torch.distributed.elastic.rendezvous import RendezvousClosedError, RendezvousConnectionError

    from emlc_cli.runtime.nodes import Nodes, rendezvous_failure

    nodes = Nodes(3, "head-node:29500", "", 4.2)
    try:
        raise RendezvousConnectionError("see the inner exception") from RuntimeError("EADDRINUSE\n port 29500")
    except RendezvousConnectionError as err:
        refused = rendezvous_failure(nodes, err)
    assert refused.startswith("cannot reach or hold the rendezvous of 3 machines at --rdzv-endpoint head-node:29500 "
                              f"({TIMEOUT_ENV}=5 s a try): start the machine at head-node with")
    assert refused.endswith("(EADDRINUSE port 29500)")
    closed = rendezvous_failure(nodes, RendezvousClosedError("closed"))
    assert closed == "the rendezvous of 3 machines at --rdzv-endpoint head-node:29500 failed: closed"
