"""The run directory's bookkeeping: the resolved ``config.json`` (a rerun with another config is refused) and the
lock that keeps one run per workdir.

**Lock** (``<workdir>/run.lock``): process 0 of a run holds an exclusive ``flock`` on it for the run's life and
writes who holds it (host, pid, start time). A second run on the same workdir is refused with a message naming the
holder. The operating system drops the lock when its process dies, so a lock file left by a killed run is not held
by anyone: the next run takes it over and says so. (On file systems without ``flock`` the holder's pid is checked
instead, on the same host.)

**Lock on an object store** (a ``gs://`` workdir, where there is no ``flock``): ``run.lock`` is an object holding
the owner (host, pid, start time, a random token) and a heartbeat time that a background thread refreshes every
``HEARTBEAT_S`` seconds. A run finding a held lock refreshed less than ``STALE_S`` seconds ago is refused, naming the
holder (unless the holder is a dead process on the same host); an older one is taken over, with a message. After
writing its lock the run reads it back ``SETTLE_S`` later and gives up if another run's token is there instead.
This is weaker than ``flock``: two runs started within the settle time of each other could both believe they hold
it, and a run that loses its connection for ``STALE_S`` can be taken over; an object store offers no stronger
primitive through ``epath``.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

import jax
import ml_collections

from lra.data.files import as_path, is_local, write_text_atomic

# Fields that do not change what a run computes: a resumed run may change them (config.json records the new value).
RUN_INDEPENDENT = ("progress_bar", "max_nonfinite_steps", "profile_steps", "prefetch", "wandb.project", "wandb.entity",
                   "wandb.name", "wandb.mode")
HEARTBEAT_S = 60.0  # object-store lock: how often the holder refreshes it
STALE_S = 600.0  # object-store lock: not refreshed for this long = its run is gone
SETTLE_S = 2.0  # object-store lock: wait before reading a freshly written lock back


class WorkdirLocked(RuntimeError):
    """Another live run holds the workdir."""


def config_to_dict(config) -> dict:
    return json.loads(config.to_json_best_effort()) if isinstance(config, ml_collections.ConfigDict) else config


def flatten(d, prefix="") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def has_checkpoint(workdir: Path) -> bool:
    d = as_path(workdir) / "checkpoints"
    return d.is_dir() and any(p.name.isdigit() for p in d.iterdir())


def write_config(config, workdir: Path) -> None:
    """Write the resolved config; refuse to resume a checkpointed workdir whose config differs in a field that
    changes the run (naming the fields). A workdir without a checkpoint (a run that failed before its first one)
    takes the new config; fields in ``RUN_INDEPENDENT`` may change between resumes."""
    resolved = config_to_dict(config)
    path = as_path(workdir) / "config.json"
    if path.exists() and has_checkpoint(workdir):
        old = flatten(json.loads(path.read_text()))
        new = flatten(resolved)
        diff = sorted(k for k in set(old) | set(new)
                      if old.get(k, "<absent>") != new.get(k, "<absent>") and k not in RUN_INDEPENDENT)
        if diff:
            lines = ", ".join(f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}" for k in diff)
            raise ValueError(f"{workdir} holds a run with another config ({lines}); use a new --workdir to start "
                             f"a different run, or the same config to resume this one")
        if old == new:
            return
    if jax.process_index() == 0:
        write_text_atomic(path, json.dumps(resolved, indent=2, sort_keys=True) + "\n")


def device_description() -> str:
    """What the run ran on, e.g. ``"1 x cpu (2 cores)"`` or ``"8 x NVIDIA H100 80GB HBM3 (2 processes)"``."""
    devices = jax.devices()
    kind = devices[0].device_kind if devices[0].platform != "cpu" else "cpu"
    extra = []
    if devices[0].platform == "cpu":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        extra.append(f"{cores} cores")
    if jax.process_count() > 1:
        extra.append(f"{jax.process_count()} processes")
    return f"{len(devices)} x {kind}" + (f" ({', '.join(extra)})" if extra else "")


def read_run_info(workdir) -> dict:
    path = as_path(workdir) / "run_info.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def write_run_info(workdir, info: dict) -> None:
    """``run_info.json``: where and how long the run ran (process 0; written aside, then renamed)."""
    if jax.process_index() != 0:
        return
    write_text_atomic(as_path(workdir) / "run_info.json", json.dumps(info, indent=2, sort_keys=True) + "\n")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WorkdirLock:
    """``with WorkdirLock(workdir):`` holds the workdir for one run (process 0 only; other processes hold nothing)."""

    NAME = "run.lock"

    def __init__(self, workdir, enabled: bool | None = None):
        self.local = is_local(workdir)
        self.path = (Path(workdir) if self.local else as_path(workdir)) / self.NAME
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.fd = None
        self.took_over = None  # what a stale lock said, when one was taken over
        self.token = None  # object-store lock: ours while we hold it
        self._stop = None
        self._beat = None

    def _read(self) -> dict:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def acquire(self) -> "WorkdirLock":
        if not self.enabled:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.local:
            return self._acquire_object()
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    holder = self._read()
                    raise WorkdirLocked(
                        f"{self.path.parent} is in use by another run (process {holder.get('pid', '?')} on host "
                        f"{holder.get('host', '?')}, started {holder.get('started', '?')}); wait for it to finish, "
                        f"stop it, or use another --workdir") from None
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP):  # no flock here: fall back to the pid check
                    raise
                holder = self._read()
                if (holder.get("host") == socket.gethostname() and holder.get("pid") not in (None, os.getpid())
                        and holder.get("state") == "held" and _pid_alive(int(holder["pid"]))):
                    raise WorkdirLocked(f"{self.path.parent} is in use by process {holder['pid']} on this host")
            # the file may have been removed and re-created by a releasing holder between open and flock
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            break
        previous = self._read()
        if previous.get("state") == "held":
            self.took_over = previous
            print(f"{self.path}: taking over a lock left by process {previous.get('pid')} on host "
                  f"{previous.get('host')} (started {previous.get('started')}), which no longer holds it", flush=True)
        self.fd = fd
        info = {"state": "held", "pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        os.fsync(fd)
        return self

    def _info(self) -> dict:
        return {"state": "held", "pid": os.getpid(), "host": socket.gethostname(), "token": self.token,
                "started": self.started, "heartbeat": time.time()}

    def _acquire_object(self) -> "WorkdirLock":
        holder = self._read()
        if holder.get("state") == "held":
            age = time.time() - float(holder.get("heartbeat", 0))
            dead_here = (holder.get("host") == socket.gethostname() and holder.get("pid") is not None
                         and not _pid_alive(int(holder["pid"])))
            if age < STALE_S and not dead_here:
                raise WorkdirLocked(
                    f"{self.path.parent} is in use by another run (process {holder.get('pid', '?')} on host "
                    f"{holder.get('host', '?')}, started {holder.get('started', '?')}, lock refreshed {age:.0f} s "
                    f"ago; it is taken over once {STALE_S:.0f} s old, or delete {self.path} if that run is gone)")
            self.took_over = holder
            print(f"{self.path}: taking over a lock left by process {holder.get('pid')} on host "
                  f"{holder.get('host')} (started {holder.get('started')}), which no longer refreshes it", flush=True)
        self.token = uuid.uuid4().hex
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        write_text_atomic(self.path, json.dumps(self._info()) + "\n")
        time.sleep(SETTLE_S)
        now = self._read()
        if now.get("token") != self.token:
            self.token = None
            raise WorkdirLocked(f"{self.path.parent} was locked by another run starting at the same time (process "
                                f"{now.get('pid', '?')} on host {now.get('host', '?')})")
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name="lra-lock-heartbeat", daemon=True)
        self._beat.start()
        return self

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                if self._read().get("token") != self.token:
                    print(f"warning: {self.path} no longer holds this run's token: another run took the workdir "
                          f"over", flush=True)
                    return
                write_text_atomic(self.path, json.dumps(self._info()) + "\n")
            except OSError as e:  # a transient store error: try again at the next beat
                print(f"warning: could not refresh {self.path}: {e}", flush=True)

    def release(self) -> None:
        if self.token is not None:
            self._stop.set()
            self._beat.join()
            try:
                if self._read().get("token") == self.token:
                    self.path.unlink()
            except FileNotFoundError:
                pass
            self.token = None
            return
        if self.fd is None:
            return
        try:
            self.path.unlink()  # while still holding it: a waiting opener then sees another inode and retries
        except FileNotFoundError:
            pass
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
