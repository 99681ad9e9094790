"""Several machines, one run: `emlc clean --nnodes N --rdzv-endpoint HOST:PORT [--local-addr ADDR]`, checked before
torch is imported and turned into torchrun's arguments (distributed.launch runs torchrun in this process, so that
a rendezvous that fails is one line, not torchrun's traceback).

Torch-free: a bad endpoint or address answers before anything starts."""
from __future__ import annotations

import math
import os
import socket
import struct
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from emlc_cli.errors import UsageError
from emlc_cli.runtime.device import TIMEOUT_ENV, join_timeout_s

INTERFACE_ENV = "GLOO_SOCKET_IFNAME"
_SIOCGIFADDR = 0x8915  # Linux: the IPv4 address of an interface


@dataclass(frozen=True)
class Nodes:
    """The machines of a launch: how many, where they meet (HOST:PORT), this machine's address, the wait."""

    count: int = 1
    endpoint: str = ""
    local_addr: str = ""
    timeout_s: float = 0.0

    @property
    def host(self) -> str:
        return self.endpoint.rpartition(":")[0]

    def torchrun_args(self) -> list[str]:
        """c10d rendezvous at the endpoint, every wait bounded by the timeout; the machine whose --local-addr is
        the endpoint's host holds the rendezvous (torchrun otherwise decides that from the host name)."""
        if self.count == 1:
            return ["--standalone"]
        wait = math.ceil(self.timeout_s)
        conf = f"join_timeout={wait},read_timeout={wait}" + (",is_host=1" if self.local_addr == self.host else "")
        local = ["--local-addr", self.local_addr] if self.local_addr else []
        return ["--nnodes", str(self.count), "--rdzv-backend", "c10d", "--rdzv-endpoint", self.endpoint,
                "--rdzv-conf", conf, *local]


def check_nodes(nnodes: int, endpoint: str | None, local_addr: str | None) -> Nodes:
    """The options checked together: one UsageError naming the option and what it should hold."""
    if nnodes == 1:
        given = "--rdzv-endpoint" if endpoint is not None else "--local-addr" if local_addr is not None else ""
        if given:
            raise UsageError(f"{given} is for several machines: add --nnodes N (N >= 2), the same on every machine")
        return Nodes()
    if endpoint is None:
        raise UsageError(f"--nnodes {nnodes}: add --rdzv-endpoint HOST:PORT, one machine's address and a port free "
                         "there, the same on every machine")
    _check_endpoint(endpoint)
    if local_addr is not None:
        _check_local_addr(local_addr)
    return Nodes(nnodes, endpoint, local_addr or "", join_timeout_s())


def _check_endpoint(endpoint: str) -> None:
    host, _, port = endpoint.rpartition(":")
    if not _is_host_name(host) or not (port.isdigit() and 1 <= int(port) <= 65535):
        raise UsageError(f"--rdzv-endpoint {endpoint!r}: expected HOST:PORT, one machine's host name or address "
                         "and a port from 1 to 65535 (e.g. head-node:29500)")


def _check_local_addr(address: str) -> None:
    """This machine's address as the others reach it; gloo is told which interface holds it (gloo otherwise binds to
    whatever the host name resolves to, on many systems 127.0.1.1), unless GLOO_SOCKET_IFNAME names one."""
    if not _is_host_name(address):
        raise UsageError(f"--local-addr {address!r}: expected this machine's address as the other machines reach it")
    if os.environ.get(INTERFACE_ENV):
        return
    interface = interface_of(address)
    if interface is None:
        raise UsageError(f"--local-addr {address}: no network interface of this machine has this address; give this "
                         f"machine's own IPv4 address, or set {INTERFACE_ENV} to the interface to use")
    os.environ[INTERFACE_ENV] = interface


def _is_host_name(text: str) -> bool:
    return 0 < len(text) <= 253 and not any(c.isspace() or c in "/,=" for c in text)


def interface_of(address: str) -> str | None:
    """The name of the network interface holding `address` (IPv4, or a name resolving to one), None if none does
    or the system cannot tell (Linux only)."""
    try:
        wanted = socket.inet_aton(socket.gethostbyname(address))
    except OSError:
        return None
    if not sys.platform.startswith("linux"):
        return None
    import fcntl

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            try:
                answer = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:  # an interface without an IPv4 address
                continue
            if answer[20:24] == wanted:
                return name
    return None


@contextmanager
def torch_log_lines_off() -> Iterator[None]:
    """Import torch for the launcher with torch's C++ log lines off (torch reads the level once, on import): a
    rendezvous it cannot reach is one line, not every retry with its stack frames. The workers it starts keep their
    level; EMLC_DEBUG or a TORCH_CPP_LOG_LEVEL of the user's keeps the launcher's too."""
    if os.environ.get("EMLC_DEBUG") or "TORCH_CPP_LOG_LEVEL" in os.environ:
        yield
        return
    os.environ["TORCH_CPP_LOG_LEVEL"] = "FATAL"
    try:
        yield
    finally:
        del os.environ["TORCH_CPP_LOG_LEVEL"]


def rendezvous_failure(nodes: Nodes, error: BaseException) -> str:
    """One line for a rendezvous that did not complete: the endpoint, the machines expected, the wait."""
    seconds, where = math.ceil(nodes.timeout_s), f"--rdzv-endpoint {nodes.endpoint}"
    name = type(error).__name__
    if name == "RendezvousTimeoutError":
        return (f"the {nodes.count} machines did not all join at {where} within {seconds} s ({TIMEOUT_ENV}): start "
                f"the same command, with --nnodes {nodes.count} and {where}, on every machine, or raise {TIMEOUT_ENV}")
    cause = " ".join(str(error.__cause__ or error).split())[:200]
    if name == "RendezvousConnectionError":
        return (f"cannot reach or hold the rendezvous of {nodes.count} machines at {where} ({TIMEOUT_ENV}={seconds} s "
                f"a try): start the machine at {nodes.host} with the same command, check that this "
                f"machine reaches it and that the port is free there ({cause})")
    return f"the rendezvous of {nodes.count} machines at {where} failed: {cause}"
