"""A network namespace for the agent, joined to this one by a veth pair, that a test can
partition (iptables) and make slow and lossy (tc, iptables) — made and removed by the test itself.

The addresses are a link-local /30 (169.254.0.0/16, one no interface here uses): the two ends
of one veth link, both on this machine, in a namespace this test made; nothing is routed
anywhere else. The agent runs inside
(``ip netns exec``) and reaches the broker's TLS listener on the host end; its Modbus line is a
pseudo-terminal (a file, not a socket), so a partition cuts the cloud link and nothing else,
like a site whose uplink fails while its RS-485 bus carries on.

Root and ``ip netns`` are needed: without them :func:`agent_namespace` raises with a clear
message (the test fails; it never skips). The namespace, its rules and both veth ends go on
exit however the test ended (deleting the namespace deletes its rules and the pair).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

IP = shutil.which("ip") or "/usr/sbin/ip"
PREFIX = 30
#: Link-local /30 blocks to choose from: 169.254.1.0-169.254.168.255 (RFC 3927 reserves the
#: first and last /24; 169.254.169.0/24 holds the cloud metadata address, never used here).
FIRST_BLOCK, LAST_BLOCK = 256 // 4, 169 * 256 // 4 - 1


class NetnsUnavailable(RuntimeError):
    """This machine cannot make the namespace (not root, no iproute2/iptables, no netns)."""


def _run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


@dataclass
class AgentNamespace:
    """The namespace ``name``; ``host_if`` is the veth end in this namespace (addressed
    ``host_address``), ``agent_if`` the end inside (``agent_address``)."""

    name: str
    host_if: str
    agent_if: str
    host_address: str = ""
    agent_address: str = ""

    def exec_prefix(self) -> list[str]:
        """Put before a command to run it inside the namespace."""
        return [IP, "netns", "exec", self.name]

    def _in(self, *args: str) -> str:
        return _run(*self.exec_prefix(), *args)

    def partition(self, port: int) -> None:
        """Drop every packet between the agent and ``port`` on the host end, both ways:
        established connections hang (no RST, no FIN) as on a dead uplink, and new ones
        time out — the broker notices only by keepalive and publishes the Last Will."""
        for chain, direction in (("OUTPUT", "--dport"), ("INPUT", "--sport")):
            self._in("iptables", "-w", "-I", chain, "-p", "tcp", direction, str(port), "-j", "DROP")

    def heal(self, port: int) -> None:
        for chain, direction in (("OUTPUT", "--dport"), ("INPUT", "--sport")):
            self._in("iptables", "-w", "-D", chain, "-p", "tcp", direction, str(port), "-j", "DROP")

    def dropped(self) -> int:
        """Packets the partition rules dropped so far (proof the partition bit)."""
        total = 0
        for chain in ("OUTPUT", "INPUT"):
            listing = self._in("iptables", "-w", "-L", chain, "-v", "-x", "-n")
            for line in listing.splitlines():
                fields = line.split()
                if len(fields) > 2 and fields[2] == "DROP":
                    total += int(fields[0])
        return total

    def degrade(self, port: int, *, rate: str = "256kbit", loss: float = 0.05) -> None:
        """A slow, lossy uplink to ``port``: ``tc`` token-bucket shaping of everything the
        agent sends (a 2G/3G site modem) and ``iptables`` dropping a random ``loss`` share
        of the packets both ways. (``tc netem`` would do both, but its kernel module is not
        on every machine that runs this suite; ``tbf`` and the statistic match are.)"""
        self._in(
            "tc",
            "qdisc",
            "replace",
            "dev",
            self.agent_if,
            "root",
            "tbf",
            "rate",
            rate,
            "burst",
            "32kbit",
            "latency",
            "400ms",
        )
        for rule in self._loss_rules(port, loss):
            self._in("iptables", "-w", "-I", *rule)

    def restore(self, port: int, *, loss: float = 0.05) -> None:
        subprocess.run(
            [*self.exec_prefix(), "tc", "qdisc", "del", "dev", self.agent_if, "root"],
            capture_output=True,
            check=False,
        )
        for rule in self._loss_rules(port, loss):
            subprocess.run(
                [*self.exec_prefix(), "iptables", "-w", "-D", *rule],
                capture_output=True,
                check=False,
            )

    @staticmethod
    def _loss_rules(port: int, loss: float) -> list[list[str]]:
        random_drop = [
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            str(loss),
            "-j",
            "DROP",
        ]
        return [
            ["OUTPUT", "-p", "tcp", "--dport", str(port), *random_drop],
            ["INPUT", "-p", "tcp", "--sport", str(port), *random_drop],
        ]


def free_block() -> tuple[str, str]:
    """A link-local /30 no interface here uses: two runs side by side (CI and a developer)
    must not route each other's agent. Starts from this process's id."""
    shown = subprocess.run(
        [IP, "-o", "-4", "addr", "show"], capture_output=True, text=True, check=False
    ).stdout
    used = {
        int(ipaddress.ip_address(f.split("/")[0])) >> 2
        for f in shown.split()
        if f.startswith("169.254.") and "/" in f
    }
    span = LAST_BLOCK - FIRST_BLOCK + 1
    for step in range(span):
        block = FIRST_BLOCK + (os.getpid() + step) % span
        base = int(ipaddress.ip_address("169.254.0.0")) + block * 4
        if base >> 2 not in used:
            return str(ipaddress.ip_address(base + 1)), str(ipaddress.ip_address(base + 2))
    raise NetnsUnavailable("every link-local /30 is in use on this machine")


def remove_stale() -> None:
    """Namespaces (and their veth ends) left by a run that was killed before its cleanup:
    named for a process that no longer exists."""
    listing = subprocess.run([IP, "netns", "list"], capture_output=True, text=True, check=False)
    for line in listing.stdout.splitlines():
        name = line.split(" ", 1)[0]
        pid = name.removeprefix("cm-e2e-")
        if name.startswith("cm-e2e-") and pid.isdigit() and not Path(f"/proc/{pid}").exists():
            subprocess.run([IP, "link", "del", f"cmh{pid}"], capture_output=True, check=False)
            subprocess.run([IP, "netns", "del", name], capture_output=True, check=False)


@contextmanager
def agent_namespace() -> Iterator[AgentNamespace]:
    """A fresh namespace (named for this process, so parallel runs do not meet) with the
    veth pair up and addressed; removed on exit."""
    suffix = str(os.getpid())
    name, host_if, agent_if = f"cm-e2e-{suffix}", f"cmh{suffix}", f"cma{suffix}"
    if os.geteuid() != 0:
        raise NetnsUnavailable("the chaos suite needs root for `ip netns add` (run as root)")
    for tool in ("ip", "iptables", "tc"):
        if shutil.which(tool) is None:
            raise NetnsUnavailable(
                f"{tool} is not installed: run `make bootstrap` (it installs iproute2, iptables)"
            )
    remove_stale()
    try:
        _run(IP, "netns", "add", name)
    except RuntimeError as exc:
        raise NetnsUnavailable(f"cannot make a network namespace here: {exc}") from exc
    host_address, agent_address = free_block()
    ns = AgentNamespace(name, host_if, agent_if, host_address, agent_address)
    try:
        _run(IP, "link", "add", host_if, "type", "veth", "peer", "name", agent_if)
        _run(IP, "link", "set", agent_if, "netns", name)
        _run(IP, "addr", "add", f"{host_address}/{PREFIX}", "dev", host_if)
        _run(IP, "link", "set", host_if, "up")
        ns._in(IP, "addr", "add", f"{agent_address}/{PREFIX}", "dev", agent_if)
        ns._in(IP, "link", "set", agent_if, "up")
        ns._in(IP, "link", "set", "lo", "up")
        yield ns
    finally:
        # The host end goes with its peer; deleting it first also covers a namespace whose
        # deletion is refused because a process still runs inside.
        subprocess.run([IP, "link", "del", host_if], capture_output=True, check=False)
        subprocess.run([IP, "netns", "del", name], capture_output=True, check=False)
