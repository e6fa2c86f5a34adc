"""Before a study is submitted to Slurm: does every job fit some node of its partition?

Slurm accepts a job that asks more CPUs, memory or GPUs than any node of its partition has (for
example when nodes are defined larger than they are, or the partition's limits are not enforced),
and it then stays PENDING for ever while Snakemake waits without a word. :func:`check_cluster` reads
the nodes (``scontrol -o show node``) and partitions (``scontrol -o show partition``) once and
names, per rule, the first job that cannot run anywhere, before anything is submitted.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

from prunebench.errors import PrunebenchError


@dataclass(frozen=True)
class Node:
    """A node as Slurm describes it: CPUs, memory (MB), GPUs and the partitions it belongs to."""

    name: str
    cpus: int
    memory_mb: int
    gpus: int
    partitions: tuple[str, ...]


@dataclass(frozen=True)
class Request:
    """What one job asks: CPUs, memory (MB), GPUs, run time (minutes) and partition (None: default)."""

    job: str
    cpus: int
    memory_mb: int
    gpus: int
    runtime_min: int | None = None
    partition: str | None = None

    def describe(self) -> str:
        time = f", {self.runtime_min} min" if self.runtime_min else ""
        return f"{self.cpus} CPUs, {self.memory_mb} MB, {self.gpus} GPUs{time}"


def _fields(line: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in line.split() if "=" in part)


def _gpus(gres: str) -> int:
    """GPUs in a Gres string such as ``gpu:2``, ``gpu:a100:4(S:0-1)`` or ``gpu:a100:2,gpu:v100:1``."""
    return sum(int(m.group(1)) for m in re.finditer(r"gpu(?::[^:,(]+)?:(\d+)", gres))


def parse_nodes(text: str) -> list[Node]:
    """Nodes from ``scontrol -o show node`` (one line per node)."""
    nodes = []
    for line in text.splitlines():
        f = _fields(line)
        if "NodeName" not in f:
            continue
        nodes.append(
            Node(
                f["NodeName"],
                int(f.get("CPUTot", "0")),
                int(f.get("RealMemory", "0")),
                _gpus(f.get("Gres", "")),
                tuple(p for p in f.get("Partitions", "").split(",") if p),
            )
        )
    return nodes


def _minutes(limit: str) -> int | None:
    """Slurm's time limit (``UNLIMITED``, ``MM``, ``HH:MM:SS``, ``D-HH:MM:SS``) in minutes."""
    if limit in ("UNLIMITED", "INFINITE", ""):
        return None
    days, _, rest = limit.rpartition("-")
    parts = [int(x) for x in rest.split(":")]
    hours, minutes, seconds = ([0] * (3 - len(parts)) + parts) if len(parts) > 1 else (0, parts[0], 0)
    return (int(days or 0) * 24 + hours) * 60 + minutes + (1 if seconds else 0)


def parse_partitions(text: str) -> tuple[dict[str, int | None], str | None]:
    """Per partition its MaxTime in minutes (None: unlimited), and the default partition."""
    limits, default = {}, None
    for line in text.splitlines():
        f = _fields(line)
        if "PartitionName" in f:
            limits[f["PartitionName"]] = _minutes(f.get("MaxTime", "UNLIMITED"))
            if f.get("Default") == "YES":
                default = f["PartitionName"]
    return limits, default


def unschedulable(
    requests: list[Request], nodes: list[Node], max_times: dict[str, int | None], default: str | None
) -> list[str]:
    """One line for the first job of each rule that no node of its partition can run, by rule name."""
    lines: dict[str, str] = {}
    for req in requests:
        rule = req.job.split(" ", 1)[0]
        if rule in lines:
            continue
        partition = req.partition or default
        if partition is not None and partition not in max_times:
            lines[rule] = f"job {req.job} asks for partition {partition!r}, which the cluster lacks"
            continue
        pool = [n for n in nodes if partition is None or partition in n.partitions]
        fits = [n for n in pool if n.cpus >= req.cpus and n.memory_mb >= req.memory_mb and n.gpus >= req.gpus]
        limit = max_times.get(partition) if partition else None
        where = f"partition {partition}" if partition else "the cluster"
        if not fits:
            largest = ", ".join(f"{n.name}: {n.cpus} CPUs, {n.memory_mb} MB, {n.gpus} GPUs" for n in pool[:3])
            lines[rule] = (
                f"job {req.job} asks {req.describe()}; no node of {where} has that ({largest or 'no nodes'})"
            )
        elif limit is not None and req.runtime_min and req.runtime_min > limit:
            lines[rule] = f"job {req.job} asks {req.runtime_min} min; {where} allows at most {limit} min"
    return [lines[rule] for rule in sorted(lines)]


def _scontrol(*args: str) -> str:
    try:
        return subprocess.run(
            ["scontrol", "-o", *args], capture_output=True, text=True, check=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise PrunebenchError(
            f"cannot ask Slurm for its nodes (scontrol -o {' '.join(args)}): {exc}"
        ) from None


def check_cluster(requests: list[Request]) -> None:
    """Every job of ``requests`` fits a node of its partition, else one ``PrunebenchError`` naming,
    per rule, the first job that cannot be scheduled and what the nodes have. Nothing is checked
    where ``scontrol`` is not installed (the executor then reports its own error)."""
    if shutil.which("scontrol") is None:
        return
    nodes = parse_nodes(_scontrol("show", "node"))
    max_times, default = parse_partitions(_scontrol("show", "partition"))
    lines = unschedulable(requests, nodes, max_times, default)
    if lines:
        raise PrunebenchError(
            "jobs the cluster cannot schedule (they would stay PENDING): "
            + "; ".join(lines)
            + ". Lower mem_mb / runtime / threads in the profile's set-resources or use a larger partition"
        )
