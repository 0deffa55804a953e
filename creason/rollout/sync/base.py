"""What every weight transport shares: the weights' shape on the wire, the two ends' interfaces,
and the retry around an actor that Ray is restarting. Imports no transport."""

from __future__ import annotations

import time
from typing import Any, Callable, Protocol

from ray.exceptions import ActorUnavailableError, RayActorError
from torch import Tensor

NamedTensors = list[tuple[str, Tensor]]  # (Hugging Face name, tensor), in state-dict order


class WeightSync(Protocol):
    """The trainer's end (rank 0) of a transport."""

    name: str  # the registry's key, and what the actor is told the payload came by

    def push(self, named_tensors: NamedTensors, version: int, complete: bool = True) -> dict:
        """Load `named_tensors` (Hugging Face names) into every actor and stamp them `version`;
        returns when all have loaded, with {"seconds", "bytes", "load_seconds_max", "version", ...}.
        `complete`: the whole model; else only some of its weights (those that train), the others
        kept as the last complete push left them."""
        ...

    def catch_up(self, actor: Any) -> float:
        """Load the latest weights into one actor that Ray restarted (it came back with the base
        weights): the last complete push, then the latest one (`PushLog`); waits for it to be up.
        Returns seconds."""
        ...


class PushLog:
    """The pushes that rebuild the latest weights from the base model's, in order: the last
    complete push, then the latest push where that one was partial (its weights are the only ones
    that changed since). A transport keeps one to catch a restarted actor up."""

    def __init__(self) -> None:
        self.pushes: list[Any] = []

    def record(self, push: Any, complete: bool) -> None:
        self.pushes = [push] if complete or not self.pushes else [self.pushes[0], push]

    def replay(self) -> list[Any]:
        if not self.pushes:
            raise RuntimeError("catch_up before the first push: nothing to send")
        return list(self.pushes)


class WeightReceiver(Protocol):
    """An actor's end of a transport (`RolloutWorker.receive_weights` holds one per transport)."""

    def receive(self, payload: Any) -> NamedTensors:
        """The tensors that a push sent, from what its sender passed the actor (`payload`)."""
        ...


def retry_while_restarting(call: Callable[[], Any], died_attempts: int = 3, timeout_s: float = 600.0) -> Any:
    """`call()`, again while an actor it calls is restarting. Ray says "temporarily unavailable"
    (`ActorUnavailableError`) while it restarts one, for as long as its start takes (a vLLM engine:
    tens of seconds): retried until `timeout_s`. `ActorDiedError` also comes once for a call caught
    by the death itself, and always once restarts are exhausted: retried `died_attempts` times."""
    deadline, died = time.monotonic() + timeout_s, 0
    while True:
        try:
            return call()
        except ActorUnavailableError:
            if time.monotonic() > deadline:
                raise
        except RayActorError:
            died += 1
            if died >= died_attempts:
                raise
        time.sleep(1.0)
