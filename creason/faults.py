"""Fault injection: find one of creason's processes by its role and kill it, to rehearse failures.

    creason kill --list                          # every process of every role, with its index
    creason kill --role replica [--index 1]      # SIGKILL a Serve replica
    creason kill --role rollout_actor --signal TERM --address ray://head:10001

    from creason.faults import find_processes, kill
    victim = kill("train_worker", index=1)       # ProcessInfo of the process that was killed

Processes are Ray actors, recognised by their class name in the cluster's actor table. The table
is read from the GCS, not through `ray.util.state.list_actors`: in Ray 2.60 the state API is
served by the dashboard (without one it fails with "Failed to connect to API server"), and the
test cluster and many small clusters run without a dashboard. The kill is a signal to the
process id; for a process on another node a zero-CPU Ray task pinned to that node sends it, so
this works on a multi-node cluster from any driver.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import signal
import sys

from pydantic import BaseModel, ConfigDict

# Role -> the actor class names that make a process one (a shell-style pattern).
ROLES: dict[str, str] = {
    "train_worker": "RayTrainWorker",  # Ray Train's worker actors (V2, the default in Ray 2.60; V1 too)
    "rollout_actor": "RolloutWorker",  # creason.rollout.actor
    "eval_actor": "EvalWorker",  # creason.evaluate.actor
    "replica": "ServeReplica:*:CreasonServer",  # Serve: `ServeReplica:<app>:<deployment>`, creason.serve.app
}
SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "INT": signal.SIGINT}


class ProcessInfo(BaseModel):
    """One live process of a role, as the actor table describes it."""

    model_config = ConfigDict(frozen=True)

    role: str
    pid: int
    node_id: str
    actor_id: str
    class_name: str
    name: str | None = None  # the actor's name, if it has one (Serve replicas: `SERVE_REPLICA::<app>#<deployment>#<id>`)


class NoSuchProcess(LookupError):
    """No live process of the role (or not that many)."""


def role_of(class_name: str) -> str | None:
    """The role an actor class name belongs to, or None."""
    return next((role for role, pattern in ROLES.items() if fnmatch.fnmatchcase(class_name, pattern)), None)


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")


def alive_actors() -> list[dict]:
    """ALIVE actors of the whole cluster (every job), as the GCS actor table lists them."""
    from ray._private.state import actors

    return list(actors(actor_state_name="ALIVE").values())


def processes_in(table: list[dict], role: str) -> list[ProcessInfo]:
    """The ALIVE processes of `role` in an actor table, sorted by class, name and actor id (an
    index names the same process from one call to the next while nothing changes)."""
    _check_role(role)
    found = [
        ProcessInfo(role=role, pid=a["Pid"], node_id=a["Address"]["NodeID"], actor_id=a["ActorID"],
                    class_name=a["ActorClassName"], name=a.get("Name") or None)
        for a in table
        if a["State"] == "ALIVE" and a["Pid"] and role_of(a["ActorClassName"]) == role
    ]
    return sorted(found, key=lambda p: (p.class_name, p.name or "", p.actor_id))


def find_processes(role: str) -> list[ProcessInfo]:
    """The live processes of `role` in the cluster this driver is connected to."""
    return processes_in(alive_actors(), role)


def _send_signal(pid: int, sig: int) -> None:
    os.kill(pid, sig)


def signal_on_node(node_id: str, pid: int, sig: int) -> None:
    """Send `sig` to `pid` from a zero-CPU task that Ray must run on `node_id` (soft=False: it
    fails rather than run elsewhere, where the pid would name another process)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0, max_retries=0)(_send_signal)
    ray.get(task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote(pid, int(sig)))


def kill_process(info: ProcessInfo, sig: int = signal.SIGKILL) -> None:
    """Send `sig` to the process: directly when it runs on this driver's node, else from a task
    pinned to its node."""
    import ray

    if info.node_id == ray.get_runtime_context().get_node_id():
        _send_signal(info.pid, sig)
    else:
        signal_on_node(info.node_id, info.pid, sig)


def kill(role: str, index: int = 0, sig: int = signal.SIGKILL) -> ProcessInfo:
    """Kill the `index`-th live process of `role` (in `find_processes` order); returns it."""
    found = find_processes(role)
    if not 0 <= index < len(found):
        listed = ", ".join(f"#{i} pid {p.pid} ({p.name or p.class_name})" for i, p in enumerate(found)) or "none"
        raise NoSuchProcess(f"no {role} process #{index} (pattern {ROLES[role]!r}); live ones: {listed}")
    kill_process(found[index], sig)
    return found[index]


# ---- `creason kill` -----------------------------------------------------------------------------


def add_kill_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `creason kill`."""
    parser.add_argument("--role", choices=list(ROLES), help="kind of process to kill (required unless --list)")
    parser.add_argument("--index", type=int, default=0, help="which one, in the order of --list (default 0)")
    parser.add_argument("--signal", choices=list(SIGNALS), default="KILL", help="signal to send (default KILL)")
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS", "auto"),
                        help="Ray cluster to join (default: $RAY_ADDRESS, else auto)")
    parser.add_argument("--list", action="store_true", help="list the live processes (of --role, else of every role) and exit")


def cmd_kill(args: argparse.Namespace) -> int:
    """Join the cluster, then list processes or kill one; 1 when there is none to kill."""
    import logging

    import ray

    if not ray.is_initialized():
        ray.init(address=args.address, logging_level=logging.ERROR)
    if args.list:
        table = alive_actors()
        for role in [args.role] if args.role else list(ROLES):
            for i, p in enumerate(processes_in(table, role)):
                print(f"{role:<14} #{i}  pid {p.pid:<8} node {p.node_id[:12]}  {p.name or p.class_name}")
        return 0
    if args.role is None:
        print("creason kill: --role is required (or --list)", file=sys.stderr)
        return 2
    try:
        p = kill(args.role, args.index, SIGNALS[args.signal])
    except NoSuchProcess as e:
        print(f"creason kill: {e}", file=sys.stderr)
        return 1
    print(f"sent SIG{args.signal} to {args.role} #{args.index}: pid {p.pid} on node {p.node_id[:12]} ({p.name or p.class_name})")
    return 0
