"""What the Python end-to-end tests share: a fedge-coordinator on loopback (plaintext) with
its state directory, enrollment token and operator tokens; shards and fedge-client devices
beside it; checks that print what held; and every process stopped at the end, pass or fail.

    with Fleet(bin_dir, work, roles=("operator", "viewer"), console=True) as fleet:
        shards = fleet.partition(clients=3, train_examples=3000)
        fleet.start_client(0, shards)
        admin = fleet.admin("operator")
        fleet.wait_registered(admin, 1)
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from typing import Callable, Dict, List, Optional, Sequence

import fedge


def check(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(what)
    print(f"ok: {what}", flush=True)


def wait_for(what: str, fn: Callable, timeout: float = 30.0, every: float = 0.05):
    """fn()'s first true value; exceptions count as not yet, until the timeout."""
    end = time.time() + timeout
    while True:
        try:
            v = fn()
            if v:
                return v
        except AssertionError:  # a check that failed for good (a process exited)
            raise
        except Exception:  # a page mid-update, a coordinator not up yet
            if time.time() > end:
                raise
        if time.time() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def write_secret(path: str, text: str) -> str:
    """Writes a token file readable by its owner only (the coordinator refuses others)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def free_ports(n: int) -> List[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Fleet:
    def __init__(self, bin_dir: str, work: str, roles: Sequence[str] = ("operator",),
                 console: bool = False):
        self.bin_dir, self.work = bin_dir, work
        self.procs: List[subprocess.Popen] = []
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        self.state = os.path.join(work, "state")
        os.makedirs(self.state)
        self.token_file = write_secret(os.path.join(work, "enrollment-token"),
                                       "test-enrollment-token\n")
        self.tokens: Dict[str, str] = {}
        for role in roles:
            out = subprocess.run([self.bin("fedge-coordinator"), "operators", "add",
                                  f"test-{role}", "--role", role, "--state-dir", self.state],
                                 check=True, capture_output=True, text=True)
            self.tokens[role] = out.stdout.strip()
        port, admin_port, console_port = free_ports(3)
        self.addr, self.admin_addr = f"127.0.0.1:{port}", f"127.0.0.1:{admin_port}"
        self.console_url: Optional[str] = None
        argv = [self.bin("fedge-coordinator"), "--listen", self.addr, "--admin-listen",
                self.admin_addr, "--state-dir", self.state, "--enrollment-token-file",
                self.token_file, "--insecure"]
        if console:
            argv += ["--console-listen", f"127.0.0.1:{console_port}"]
            self.console_url = f"http://127.0.0.1:{console_port}"
        self.coordinator = self.spawn("coordinator", argv)
        log = os.path.join(work, "coordinator.log")
        try:
            wait_for("the coordinator", lambda: self._alive(self.coordinator) and
                     "serving on" in open(log).read(), timeout=60, every=0.1)
        except BaseException:
            self.stop()
            raise

    def bin(self, name: str) -> str:
        return os.path.join(self.bin_dir, name)

    def _alive(self, p: subprocess.Popen) -> bool:
        if p.poll() is not None:
            raise AssertionError(f"{p.args[0]} exited ({p.returncode}); see {self.work}/*.log")
        return True

    def spawn(self, name: str, argv: List[str]) -> subprocess.Popen:
        with open(os.path.join(self.work, f"{name}.log"), "w") as log:
            p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def partition(self, clients: int, train_examples: int, seed: int = 0) -> str:
        shards = os.path.join(self.work, "shards")
        subprocess.run([self.bin("partition_fmnist"), "--clients", str(clients), "--scheme",
                        "iid", "--seed", str(seed), "--train-examples", str(train_examples),
                        "--out", shards], check=True, stdout=subprocess.DEVNULL)
        return shards

    @staticmethod
    def shard(shards: str, i: int) -> str:
        return os.path.join(shards, f"client-{i:05d}.shard")

    def start_client(self, i: int, shards: str) -> subprocess.Popen:
        return self.spawn(f"client-{i}", [
            self.bin("fedge-client"), "--coordinator", self.addr, "--insecure",
            "--enrollment-token-file", self.token_file, "--shard", self.shard(shards, i),
            "--state-dir", os.path.join(self.work, f"client-{i}")])

    def admin(self, role: str = "operator") -> fedge.Admin:
        return fedge.Admin(self.admin_addr, token=self.tokens[role], insecure=True)

    def wait_registered(self, admin: fedge.Admin, n: int,
                        watch: Sequence[subprocess.Popen] = ()) -> None:
        """Until n devices are registered; fails at once if the coordinator or a watched
        process exits."""
        wait_for(f"{n} registered devices",
                 lambda: all(self._alive(p) for p in (self.coordinator, *watch)) and
                 len(admin.clients()) >= n, timeout=60, every=0.2)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        end = time.time() + 10
        for p in self.procs:
            try:
                p.wait(max(0.1, end - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def __enter__(self) -> "Fleet":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
