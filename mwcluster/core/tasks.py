"""A job's tasks, held compactly: nothing per task until a record first changes it.

A job of 100,000 tasks used to be 100,000 Task objects (each with its own counters dict and
failures list) and a SortedSet of 100,000 pending indexes, all built while the master's loop
applied the JobSubmit, plus one hash per task built from each Task's row, and every full
collection of the garbage collector walked those objects again. Here:

- `TaskList` keeps a Task object only for the tasks a record has touched since the submit
  (`made[index]`, None until then). A task never touched is pending at attempt 0 with every
  other field at its default, so it is fully described by its index, input and params: it
  is kept as their msgpack encoding (one bytes object, which the garbage collector does not
  walk). `tasks[i]` returns the task's own object (decoded on the first access, then kept:
  it is the one the transitions change); iteration and slices give the untouched tasks as
  fresh objects that nobody keeps (reads only; decoded 1,024 to a msgpack call), so a walk
  over a big job does not make it keep 100,000 objects; `rows()` gives the state image its
  rows without making objects; `touched()` walks only the tasks that were. Inputs and params
  come back as msgpack decodes them (as after a restart): arrays as lists.
- `PendingSet` is one byte per task (1: pending) plus the count, with the lowest possibly
  pending index kept as a hint: ascending iteration is `bytearray.find`, in C.
- `submitted(job_id, pairs)` builds that list and the sum of the new tasks' hashes, exactly
  the hashes Task.hash() gives them (the digest is unchanged, docs/formats.md), with one
  msgpack call and one BLAKE2b state copy per task, no Task and no row;
  `TaskList.finish_untouched` does the same for a cancel of the untouched tasks.

Pure: no clock, no I/O. Derived structures only; the state image still holds one row per task.
"""

from __future__ import annotations

from array import array
from enum import StrEnum
from functools import partial
from hashlib import blake2b
from itertools import compress
from operator import itemgetter, not_
from sys import byteorder
from typing import Any, Iterable, Iterator

import msgpack

from mwcluster.core.digest import MASK, entry_hash
from mwcluster.errors import InvalidRecord


class TaskState(StrEnum):
    PENDING = "pending"
    ASSIGNED = "assigned"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE_TASK = (TaskState.ASSIGNED, TaskState.RUNNING)
FINISHED_TASK = (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED)
_PENDING = TaskState.PENDING

_pack = msgpack.Packer(use_bin_type=True).pack


class Task:
    __slots__ = ("job_id", "index", "input", "params", "state", "attempt", "worker",
                 "progress", "counters", "result", "error", "assigned_ms", "started_ms",
                 "finished_ms", "failures")

    def __init__(self, job_id: str, index: int, input: Any, params: dict) -> None:
        self.job_id = job_id
        self.index = index
        self.input = input
        self.params = params
        self.state = _PENDING
        self.attempt = 0
        self.worker: str | None = None
        self.progress = 0.0
        self.counters: dict = {}
        self.result: Any = None
        self.error: str | None = None
        self.assigned_ms: int | None = None
        self.started_ms: int | None = None
        self.finished_ms: int | None = None
        self.failures: list = []  # [attempt, worker, error, now_ms] per failed attempt

    def row(self) -> list:
        # `_value_`, not `.value`: the enum's property costs a Python call per task
        return [self.index, self.input, self.params, self.state._value_, self.attempt,
                self.worker, self.progress, self.counters, self.result, self.error,
                self.assigned_ms, self.started_ms, self.finished_ms, self.failures]

    @classmethod
    def from_row(cls, job_id: str, row: list) -> "Task":
        task = cls(job_id, row[0], row[1], row[2])
        (task.state, task.attempt, task.worker, task.progress, task.counters, task.result,
         task.error, task.assigned_ms, task.started_ms, task.finished_ms,
         task.failures) = TaskState(row[3]), *row[4:]
        return task

    def hash(self) -> int:
        return entry_hash(b"t", _pack([self.job_id, *self.row()]))

    def to_dict(self) -> dict:
        return {"job_id": self.job_id, "index": self.index, "input": self.input,
                "params": self.params, "state": self.state._value_, "attempt": self.attempt,
                "worker": self.worker, "progress": self.progress, "counters": self.counters,
                "result": self.result, "error": self.error, "assigned_ms": self.assigned_ms,
                "started_ms": self.started_ms, "finished_ms": self.finished_ms,
                "failures": self.failures}


# --- a submitted job's tasks, packed, and their digest ----------------------------------------

# A task's hash is entry_hash(b"t", msgpack([job_id, index, input, params, *rest])) where, for
# a task never touched, `rest` is always the same 11 defaults. That array has 15 elements
# (header byte 0x9f), and the triple (index, input, params) packed alone has the same bytes
# after its own header, so the hashed bytes are
#     b"t\x9f" + pack(job_id)  |  pack((index, input, params))[1:]  |  pack(rest)[1:].
# The first part is hashed once per job and its state copied per task (cheaper than a BLAKE2b
# constructor with keywords), and the packed triple is what the TaskList keeps of the task.
_REST = _pack(Task("", 0, None, None).row()[3:])[1:]
_ROW_HEADER = b"t" + bytes([0x90 | 15])
_unpack = partial(msgpack.unpackb, raw=False, strict_map_key=False, use_list=True)
_array_header = msgpack.Packer(use_bin_type=True).pack_array_header
_DEFAULTS = Task("", 0, None, None).row()[3:]    # an untouched task's row after its triple
_CHUNK = 1024      # untouched tasks decoded per msgpack call when walking


def _decode_many(triples: list[bytes]) -> list[list]:
    """[index, input, params] of each packed triple, in one msgpack call."""
    return _unpack(_array_header(len(triples)) + b"".join(triples)) if triples else []


def submitted(job_id: str, pairs: list) -> tuple["TaskList", int]:
    """The TaskList of a job submitted with these [input, params] pairs, and the sum (mod
    2**64) of Task.hash() of a fresh task for each: exactly what the digest adds for them.

    Raises InvalidRecord if a pair is not a two-element array (before anything changed)."""
    if pairs and (not set(map(type, pairs)) <= {list, tuple} or set(map(len, pairs)) != {2}):
        raise InvalidRecord("every task must be [input, params]")   # admission says which
    packed = list(map(_pack, zip(range(len(pairs)), map(itemgetter(0), pairs),
                                 map(itemgetter(1), pairs))))
    tasks = TaskList(job_id)
    tasks.packed = packed
    tasks.made = [None] * len(packed)
    return tasks, _hash_sum(job_id, packed, _REST)


def _hash_sum(job_id: str, triples: Iterable[bytes], rest: bytes) -> int:
    """The sum (mod 2**64) of the hashes of tasks whose rows are a packed (index, input,
    params) triple followed by the fields packed in `rest` (without its array header)."""
    copy = blake2b(_ROW_HEADER + _pack(job_id), digest_size=8).copy
    digests = bytearray()
    extend = digests.extend
    for triple in triples:
        h = copy()
        h.update(triple[1:])
        h.update(rest)
        extend(h.digest())
    hashes = array("Q")
    hashes.frombytes(digests)
    if byteorder != "little":
        hashes.byteswap()
    return sum(hashes) & MASK


# --- the pending set ------------------------------------------------------------------------

class PendingSet:
    """Indexes of a job's pending tasks: one byte per task, ascending iteration in C."""

    __slots__ = ("_flags", "_count", "_low")

    def __init__(self, size: int = 0, pending: bool = False) -> None:
        self._flags = bytearray(b"\x01" if pending else b"\x00") * size
        self._count = size if pending else 0
        self._low = 0      # no index below this one is pending (a hint, kept low enough)

    def add(self, index: int) -> None:
        flags = self._flags
        if index >= len(flags):
            flags.extend(bytes(index + 1 - len(flags)))
        if not flags[index]:
            flags[index] = 1
            self._count += 1
            if index < self._low:
                self._low = index

    def discard(self, index: int) -> None:
        flags = self._flags
        if 0 <= index < len(flags) and flags[index]:
            flags[index] = 0
            self._count -= 1

    def update(self, indexes: Iterable[int]) -> None:
        for index in indexes:
            self.add(index)

    def __contains__(self, index: object) -> bool:
        return type(index) is int and 0 <= index < len(self._flags) and \
            self._flags[index] == 1

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[int]:
        find = self._flags.find
        index = find(1, self._low)
        if index < 0:
            self._low = len(self._flags)
            return
        self._low = index
        while index >= 0:
            yield index
            index = find(1, index + 1)

    def __repr__(self) -> str:
        return f"PendingSet({list(self)})"


# --- the task list --------------------------------------------------------------------------

class TaskList:
    """A job's tasks in index order (see the module docstring)."""

    __slots__ = ("job_id", "packed", "made")

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        # per task: msgpack of (index, input, params) while it is untouched (bytes, which the
        # garbage collector never walks, unlike a list or tuple per task kept as long as the
        # job), b"" once it has its object in `made`
        self.packed: list[bytes] = []
        self.made: list[Task | None] = []

    def append(self, task: Task) -> None:
        """Add the next task (loading an image): kept as the object it is."""
        self.packed.append(b"")
        self.made.append(task)

    def __len__(self) -> int:
        return len(self.made)

    def _fresh(self, index: int) -> Task:
        index, input_value, params = _unpack(self.packed[index])
        return Task(self.job_id, index, input_value, params)

    def __getitem__(self, index):
        if type(index) is slice:
            return self._walk(range(*index.indices(len(self.made))))
        task = self.made[index]
        if task is None:
            task = self.made[index] = self._fresh(index)
            self.packed[index] = b""
        return task

    def at(self, index: int) -> Task:
        """The task at `index` for reading: a fresh object, not kept, if never touched."""
        task = self.made[index]
        return self._fresh(index) if task is None else task

    def _walk(self, indexes: range) -> Iterator[Task]:
        """The tasks at `indexes` for reading: untouched ones as fresh objects, not kept
        (decoded _CHUNK at a time, as the chunk was when the walk reached it)."""
        made, packed, job_id = self.made, self.packed, self.job_id
        for lo in range(0, len(indexes), _CHUNK):
            chunk = indexes[lo:lo + _CHUNK]
            objects = [made[i] for i in chunk]
            decoded = iter(_decode_many([packed[i] for i, task in zip(chunk, objects)
                                         if task is None]))
            for task in objects:
                if task is None:
                    index, input_value, params = next(decoded)
                    task = Task(job_id, index, input_value, params)
                yield task

    def rows(self) -> list[list]:
        """Every task's row (Task.row()), for packing only: the rows of untouched tasks are
        built from their decoded triples and share their default counters and failures."""
        rows: list[list] = []
        made, packed = self.made, self.packed
        for lo in range(0, len(made), _CHUNK):
            objects = made[lo:lo + _CHUNK]
            decoded = iter(_decode_many(list(compress(packed[lo:lo + _CHUNK],
                                                      map(not_, objects)))))
            rows.extend(next(decoded) + _DEFAULTS if task is None else task.row()
                        for task in objects)
        return rows

    def __iter__(self) -> Iterator[Task]:
        return self._walk(range(len(self.made)))

    def touched(self) -> Iterator[Task]:
        """The tasks a record changed since the submit (or loaded from an image): the others
        are pending at attempt 0 with no progress, counters, failures or times."""
        return filter(None, self.made)

    def untouched(self) -> int:
        """How many tasks have no object yet."""
        return self.made.count(None)

    def finish_untouched(self, state: TaskState, now_ms: int) -> tuple[int, int, list[int]]:
        """Move every untouched task to the finished `state` at `now_ms` (a job cancelled or
        failed); return the sums of their hashes before and after, and their indexes.

        The same tasks as moving each one, but the hashes come from the packed triples (a
        BLAKE2b state copy each) instead of two rows per task."""
        made, packed = self.made, self.packed
        indexes = [i for i, task in enumerate(made) if task is None]
        triples = [packed[i] for i in indexes]
        done = Task("", 0, None, None)
        done.state, done.finished_ms = state, now_ms
        before = _hash_sum(self.job_id, triples, _REST)
        after = _hash_sum(self.job_id, triples, _pack(done.row()[3:])[1:])
        job_id = self.job_id
        for i, triple in zip(indexes, triples):
            index, input_value, params = _unpack(triple)
            task = made[i] = Task(job_id, index, input_value, params)
            task.state, task.finished_ms = state, now_ms
            packed[i] = b""
        return before, after, indexes

    def validate(self) -> list[str]:
        problems = []
        if len(self.packed) != len(self.made):
            problems.append(f"job {self.job_id}: {len(self.packed)} packed tasks for "
                            f"{len(self.made)} slots")
        for index, (task, packed) in enumerate(zip(self.made, self.packed)):
            if task is None:
                if _unpack(packed)[0] != index:
                    problems.append(f"job {self.job_id}: the packed task at {index} is not "
                                    "its own")
            elif task.index != index or task.job_id != self.job_id or packed:
                problems.append(f"job {self.job_id} holds task {task.job_id}/{task.index} "
                                f"at index {index}")
        return problems
