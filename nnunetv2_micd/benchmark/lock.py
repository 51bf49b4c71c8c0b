"""One benchmark at a time per work folder: two would train the same run into the same checkpoints.

The lock is an exclusive POSIX file lock on ``<work>/benchmark.lock``. The operating system releases it when the
process ends, however it ends, so an interrupted benchmark never leaves a stale lock behind. While held, the file
names the holder's process and the run it is working on, which ``micd benchmark --status`` reports. A training
started under the lock inherits it (:meth:`WorkFolderLock.fileno`), so a benchmark killed alone does not free the
folder while its ``nnUNetv2_train`` still writes checkpoints there.

POSIX file locks do not exist on Windows: there ``micd benchmark`` says so, and the other micd commands, which need
no lock, still import.
"""
import json
import os
import time
from typing import Optional

from batchgenerators.utilities.file_and_folder_operations import isfile, join

from nnunetv2_micd.errors import MicdError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_FILE = "benchmark.lock"


class WorkFolderBusy(MicdError, RuntimeError):
    """Another benchmark holds the work folder."""


class LockUnsupported(MicdError, RuntimeError):
    """The system has no POSIX file locks."""


def _require_file_locks() -> None:
    if fcntl is None:
        raise LockUnsupported("micd benchmark needs POSIX file locks (Linux or macOS) to keep two benchmarks out of "
                              "one work folder; train and predict with nnU-Net's own commands on this system")


class WorkFolderLock:
    def __init__(self, work_folder: str):
        self.path = join(work_folder, LOCK_FILE)
        self._file = None

    def __enter__(self) -> "WorkFolderLock":
        _require_file_locks()
        lock_file = open(self.path, "a+")
        for _ in range(10):  # ``--status`` takes the lock for an instant to see whether it is free
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(0.1)
        else:
            lock_file.close()
            holder = running_benchmark(os.path.dirname(self.path)) or {}
            raise WorkFolderBusy(f"another micd benchmark (process {holder.get('pid') or '?'}) is running in "
                                 f"{os.path.dirname(self.path)}; wait for it, or stop it, before starting one there")
        self._file = lock_file
        self.working_on(None)
        return self

    def fileno(self) -> int:
        """For ``subprocess.Popen(pass_fds=...)``: a child holding it keeps the folder locked until it ends."""
        return self._file.fileno()

    def working_on(self, run_name: Optional[str]) -> None:
        self._file.seek(0)
        self._file.truncate()
        json.dump({"pid": os.getpid(), "run": run_name}, self._file)
        self._file.flush()

    def __exit__(self, *exc_info) -> None:
        self._file.close()  # releases the lock
        self._file = None


def running_benchmark(work_folder: str) -> Optional[dict]:
    """``{"pid": ..., "run": ...}`` of the benchmark holding the work folder's lock (``run`` is None between runs);
    None when no benchmark is running there."""
    _require_file_locks()
    path = join(work_folder, LOCK_FILE)
    if not isfile(path):
        return None
    with open(path) as lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return json.loads(lock_file.read())
            except ValueError:  # being written
                return {"pid": None, "run": None}
    return None
