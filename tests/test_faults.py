"""The fault-injection helper: roles match the class names Ray and creason really use, the actor
table is filtered and ordered as documented, and a real actor found by role dies when killed."""

from __future__ import annotations

import signal
import time

import pytest

from creason import faults


def _actor(cls: str, state: str = "ALIVE", pid: int = 100, actor_id: str = "a1", name: str = "", node: str = "n1") -> dict:
    """One row of the GCS actor table, as `ray._private.state.actors()` returns it."""
    return {"ActorClassName": cls, "State": state, "Pid": pid, "ActorID": actor_id, "Name": name,
            "Address": {"IPAddress": "10.0.0.1", "Port": 1, "NodeID": node}}


def test_roles_match_the_class_names_of_ray_and_creason():
    from ray.serve._private.common import DeploymentID
    from ray.train.v2._internal.execution.worker_group.worker_group import WorkerGroup

    from creason.evaluate.actor import EvalWorker
    from creason.rollout.actor import RolloutWorker

    replica = DeploymentID(name="CreasonServer", app_name="creason-test").to_replica_actor_class_name()
    assert faults.role_of(replica) == "replica"
    assert faults.role_of(WorkerGroup._worker_cls.__name__) == "train_worker"
    assert faults.role_of(RolloutWorker.__name__) == "rollout_actor"
    assert faults.role_of(EvalWorker.__name__) == "eval_actor"
    for other in ("ServeController", "ProxyActor", "ServeReplica:creason:Other", "RolloutWorkerX", "TrainController"):
        assert faults.role_of(other) is None


def test_processes_in_keeps_live_ones_of_the_role_in_a_stable_order():
    table = [
        _actor("ServeReplica:app:CreasonServer", pid=12, actor_id="c", name="SERVE_REPLICA::app#CreasonServer#zz"),
        _actor("ServeReplica:app:CreasonServer", pid=11, actor_id="b", name="SERVE_REPLICA::app#CreasonServer#aa", node="n2"),
        _actor("ServeReplica:app:CreasonServer", state="DEAD", pid=10, actor_id="a"),
        _actor("ServeReplica:app:CreasonServer", state="RESTARTING", pid=0, actor_id="d"),
        _actor("ServeController", pid=9, actor_id="e"),
    ]
    found = faults.processes_in(table, "replica")
    assert [p.pid for p in found] == [11, 12]
    assert found[0] == faults.ProcessInfo(role="replica", pid=11, node_id="n2", actor_id="b",
                                          class_name="ServeReplica:app:CreasonServer", name="SERVE_REPLICA::app#CreasonServer#aa")
    assert faults.processes_in(list(reversed(table)), "replica") == found
    assert faults.processes_in([_actor("RolloutWorker")], "rollout_actor")[0].name is None
    with pytest.raises(ValueError, match="unknown role 'replicas'"):
        faults.processes_in(table, "replicas")


def test_kill_without_such_a_process_names_the_role_and_what_was_found(monkeypatch):
    monkeypatch.setattr(faults, "alive_actors", lambda: [_actor("EvalWorker", pid=77)])
    with pytest.raises(faults.NoSuchProcess, match=r"no eval_actor process #1 .*live ones: #0 pid 77"):
        faults.kill("eval_actor", index=1)
    with pytest.raises(faults.NoSuchProcess, match=r"no train_worker process #0 .*live ones: none"):
        faults.kill("train_worker")


def test_cli_arguments():
    import argparse

    parser = argparse.ArgumentParser()
    faults.add_kill_arguments(parser)
    args = parser.parse_args(["--role", "replica", "--index", "1", "--signal", "TERM", "--address", "10.0.0.1:6379"])
    assert (args.role, args.index, faults.SIGNALS[args.signal], args.address, args.list) == ("replica", 1, signal.SIGTERM, "10.0.0.1:6379", False)
    with pytest.raises(SystemExit):
        parser.parse_args(["--role", "driver"])


# ---- a real kill on the local cluster ----------------------------------------------------------


class RolloutWorker:
    """Stands in for creason's rollout actor: the role is recognised by the class name alone."""

    def pid(self) -> int:
        import os

        return os.getpid()


def _wait_gone(actor_id: str, role: str, timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if actor_id not in {p.actor_id for p in faults.find_processes(role)}:
            return True
        time.sleep(0.2)
    return False


@pytest.mark.ray
def test_find_and_kill_real_actors(ray_local, capsys):
    import argparse

    ray = ray_local
    cls = ray.remote(num_cpus=0, max_restarts=0)(RolloutWorker)
    actors = [cls.remote() for _ in range(2)]
    pids = ray.get([a.pid.remote() for a in actors])
    ids = [a._actor_id.hex() for a in actors]
    found = {p.actor_id: p for p in faults.find_processes("rollout_actor")}
    assert set(ids) <= set(found) and [found[i].pid for i in ids] == pids
    assert found[ids[0]].node_id == ray.get_runtime_context().get_node_id()

    parser = argparse.ArgumentParser()
    faults.add_kill_arguments(parser)
    assert faults.cmd_kill(parser.parse_args(["--list", "--role", "rollout_actor"])) == 0
    assert str(pids[0]) in capsys.readouterr().out
    assert faults.cmd_kill(parser.parse_args(["--role", "rollout_actor", "--index", "99"])) == 1
    assert "no rollout_actor process #99" in capsys.readouterr().err

    faults.kill_process(found[ids[0]])  # same node: a direct signal
    faults.signal_on_node(found[ids[1]].node_id, pids[1], signal.SIGKILL)  # the path used for other nodes
    for actor, actor_id in zip(actors, ids):
        with pytest.raises(ray.exceptions.ActorDiedError):
            ray.get(actor.pid.remote(), timeout=30)
        assert _wait_gone(actor_id, "rollout_actor")
