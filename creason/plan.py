"""Memory plan: what each role of a run needs per device, before anything starts. No Ray, no torch.

`creason plan --config FILE` (creason/cli.py) calls `plan_run`, then `render`. The model's size comes
from its config.json (`Architecture.from_hf_config`), or from `KNOWN_ARCHITECTURES` when the model
is not a local folder (`microsoft/phi-4` of `--config paper`): no weights are loaded.

Units: parameter counts in elements, memory in bytes inside the formulas and GiB (2**30) in `Need`.
Notation of the docstrings: P parameters, T trainable parameters (`train.trainable_layers`), W
training workers (data-parallel ranks), b bytes per weight (4 fp32, 2 bf16), L decoder layers,
h hidden size, i intermediate size, V vocabulary, q = heads * head_dim, kv = kv_heads * head_dim.
docs/cluster.md ("Memory plan") gives the same formulas, and how the CPU constants were fitted.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GIB = 2**30
BYTES = {"fp32": 4, "bf16": 2, "float32": 4, "bfloat16": 2, "float16": 2}

# DeepSpeed settings of creason/train/engine.py that size its buffers (elements).
BUCKET_ELEMENTS = 50_000_000     # reduce / allgather / stage-3 prefetch buckets (engine.BUCKET_ELEMENTS)
SUB_GROUP_ELEMENTS = 1_000_000_000  # ZeRO-3 `sub_group_size` (DeepSpeed's default): fp32 grads at the step

# vLLM defaults that size an engine's activation workspace.
ENGINE_BATCHED_TOKENS = 8192     # max_num_batched_tokens: tokens of one prefill chunk
ENGINE_MAX_SEQS = 256            # max_num_seqs: rows of the sampler's float32 logits

# Constants that are not formulas. GPU ones are estimates (no GPU has run this yet); the CPU ones
# are fitted to the measured per-process PSS of the quickstart (docs/benchmarks/grpo_step*.json),
# see docs/cluster.md: they hold what the formulas leave out (libraries, allocator, copies).
GPU_TRAIN_RUNTIME_GIB = 1.0      # CUDA context, cuBLAS and NCCL workspaces, allocator slack
GPU_ENGINE_RUNTIME_GIB = 1.5     # CUDA context, CUDA graphs (captured when enforce_eager is off)
CPU_TRAIN_RUNTIME_GIB = 2.5      # fitted: Ray Train worker measured 6.66-6.95 GiB, formulas 4.29
CPU_ENGINE_RUNTIME_GIB = 1.15    # fitted: rollout actor measured 2.76-2.89 GiB, formulas 1.71
CPU_RAY_PROCESSES_GIB = 1.7      # driver, raylet, GCS, dashboard, Train controller (grpo_step.json)
LOGIT_BYTES = 12                 # per response token and vocabulary entry; see `training_worker`


@dataclass(frozen=True)
class Architecture:
    """The shape of a Llama-like decoder (Llama, Qwen, Mistral, Phi-3/4): all a plan needs."""

    layers: int
    hidden: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    tied: bool
    head_dim: int | None = None  # None: hidden // heads
    attention_bias: bool = False

    @classmethod
    def from_hf_config(cls, c: dict[str, Any]) -> "Architecture":
        """From a Hugging Face config.json's fields."""
        return cls(layers=c["num_hidden_layers"], hidden=c["hidden_size"], intermediate=c["intermediate_size"],
                   vocab=c["vocab_size"], heads=c["num_attention_heads"],
                   kv_heads=c.get("num_key_value_heads") or c["num_attention_heads"],
                   tied=bool(c.get("tie_word_embeddings", False)), head_dim=c.get("head_dim"),
                   attention_bias=bool(c.get("attention_bias", False)))

    @property
    def q_dim(self) -> int:
        return self.heads * (self.head_dim or self.hidden // self.heads)

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * (self.head_dim or self.hidden // self.heads)

    def layer_params(self) -> int:
        """One decoder block: q, k, v, o projections (+ q/k/v biases), gate/up/down MLP, 2 norms:
        h*q + 2*h*kv + q*h + 3*h*i + 2*h."""
        bias = self.q_dim + 2 * self.kv_dim if self.attention_bias else 0
        return 2 * self.hidden * self.q_dim + 2 * self.hidden * self.kv_dim + bias + 3 * self.hidden * self.intermediate + 2 * self.hidden

    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    def params(self) -> int:
        """P = V*h (embeddings) + L * layer + h (final norm) + V*h unless the head is tied."""
        head = 0 if self.tied else self.embedding_params()
        return self.embedding_params() + self.layers * self.layer_params() + self.hidden + head

    def trainable_params(self, trainable_layers: int | None) -> int:
        """T: all of P, or with `train.trainable_layers` = k < L the top k blocks, the final norm and
        the head unless tied (tied embeddings stay frozen), as creason/train/freeze.py freezes."""
        if trainable_layers is None or trainable_layers >= self.layers:
            return self.params()
        head = 0 if self.tied else self.embedding_params()
        return trainable_layers * self.layer_params() + self.hidden + head

    def activation_elements(self) -> int:
        """Elements one decoder block keeps per token for backward (no checkpointing):
        4h (both norms' inputs and outputs) + 2q (q after RoPE, attention output) + 2kv (k, v)
        + 4i (gate, up, silu(gate), their product)."""
        return 4 * self.hidden + 2 * self.q_dim + 2 * self.kv_dim + 4 * self.intermediate


KNOWN_ARCHITECTURES = {
    # Phi-4 (14.7 B): config.json of microsoft/phi-4, not on disk here.
    "microsoft/phi-4": Architecture(layers=40, hidden=5120, intermediate=17920, vocab=100352, heads=40, kv_heads=10,
                                    tied=False),
    # SmolLM2-135M-Instruct, as `creason fetch-model` writes it (134,515,008 parameters).
    "HuggingFaceTB/SmolLM2-135M-Instruct": Architecture(layers=30, hidden=576, intermediate=1536, vocab=49152, heads=9,
                                                        kv_heads=3, tied=True, head_dim=64),
}


def load_architecture(model_path: str | Path) -> tuple[Architecture, str]:
    """(architecture, where it came from): a local folder's config.json, else the known table."""
    config = Path(model_path) / "config.json"
    if config.is_file():
        return Architecture.from_hf_config(json.loads(config.read_text())), str(config)
    for name, arch in KNOWN_ARCHITECTURES.items():
        if str(model_path).rstrip("/").lower() in (name.lower(), name.split("/")[-1].lower()):
            return arch, f"known architecture {name}"
    raise FileNotFoundError(f"{model_path}: no config.json there and not a known architecture "
                            f"({', '.join(KNOWN_ARCHITECTURES)}); give model.path a local model folder")


@dataclass(frozen=True)
class Need:
    """Memory one process of a role needs on its device, term by term (GiB)."""

    role: str
    count: int
    gpus_each: float            # 0: the role runs on CPUs and its memory is host memory
    terms: dict[str, float]
    detail: str
    knobs: str                  # what to change when it does not fit

    @property
    def total(self) -> float:
        return sum(self.terms.values())


def training_worker(arch: Architecture, *, precision: str, zero_stage: int, world: int, micro_batch: int,
                    prompt_tokens: int, completion_tokens: int, group_size: int, share_prompt: bool,
                    gradient_checkpointing: bool, trainable_layers: int | None, reference: bool,
                    gpu: bool) -> dict[str, float]:
    """Bytes by term of one training worker (one data-parallel rank), ZeRO as in Rajbhandari et al.
    2020, with the buffers of DeepSpeed's implementation on top.

    - weights P*b (/W at ZeRO-3); gradients T*b (/W from ZeRO-2); optimizer (Adam) T*8 for the two
      fp32 moments, + T*4 fp32 master weights in bf16 (/W from ZeRO-1): 16 bytes a parameter at
      ZeRO-0 in either precision (4+4+8, 2+2+12 as the ZeRO paper).
    - DeepSpeed on top: bf16 at ZeRO-0 accumulates gradients in fp32 (4T); at ZeRO 1-3 it keeps
      an fp32 copy of the weight partition even in fp32 (4T/W), a float32 gradient partition for
      the step in bf16 (4T/W at ZeRO 1-2, one sub-group, min(1e9, T/W)*4, at ZeRO-3), buckets of
      5e7 elements (2 at ZeRO 1-2, the prefetch one at ZeRO-3) and at ZeRO-3 the largest module
      gathered whole (a block, the embeddings or the head).
    - reference (algorithm.beta > 0): P*b on every worker, P*b/W at ZeRO-3 where it is
      partitioned like the policy (`creason.train.engine.build_reference`).
    - activations of one micro-batch: tokens * layers_in_graph * `activation_elements` * b, with
      tokens = (prompts in the micro-batch) * p + mb * c when the shared-prompt forward runs, else
      mb * (p + c); only the top `trainable_layers` blocks are in the graph. With gradient
      checkpointing each block keeps only its input (h per token) and one block is recomputed at a
      time: tokens * (layers_in_graph * h + activation_elements) * b.
    - logits: only response tokens are scored (mb * c rows of V): LOGIT_BYTES = 12 bytes each, the
      logits and their tempered copy (4 + 4 in fp32; 2 + 2 + a float32 row in bf16) and their
      gradient (4).
    - on CPU the weights gathered for the weight sync (rank 0: a full copy P*b) sit in the same
      host memory; on a GPU they go to host memory, not counted here.
    """
    b = BYTES[precision]
    P, T, W = arch.params(), arch.trainable_params(trainable_layers), world
    opt_shard = W if zero_stage >= 1 else 1
    terms = {
        "weights": P * b / (W if zero_stage == 3 else 1),
        "gradients": T * b / (W if zero_stage >= 2 else 1),
        "optimizer": T * (8 + (4 if precision == "bf16" else 0)) / opt_shard,
    }
    if zero_stage == 0:
        extra = 4 * T if precision == "bf16" else 0
    else:
        extra = 4 * T / W  # fp32 copy of the weight partition (fp32), or fp32 gradients at the step (bf16)
        if zero_stage == 3:
            if precision == "bf16":
                extra = min(SUB_GROUP_ELEMENTS, T / W) * 4
            largest = max(arch.layer_params(), arch.embedding_params())
            extra += (BUCKET_ELEMENTS + largest) * b
        else:
            extra += 2 * min(BUCKET_ELEMENTS, T) * b
    terms["DeepSpeed buffers"] = extra
    if reference:
        terms["reference"] = P * b / (W if zero_stage == 3 else 1)
    in_graph = min(trainable_layers or arch.layers, arch.layers)
    prompts = math.ceil(micro_batch / group_size) if share_prompt else micro_batch
    tokens = prompts * prompt_tokens + micro_batch * completion_tokens
    per_token = (in_graph * arch.hidden + arch.activation_elements()) if gradient_checkpointing \
        else in_graph * arch.activation_elements()
    terms["activations"] = tokens * per_token * b
    terms["logits"] = micro_batch * completion_tokens * arch.vocab * LOGIT_BYTES
    if not gpu:
        terms["weights for sync"] = P * b
    return terms


def engine_process(arch: Architecture, *, dtype: str, kv_cache_gib: float, tensor_parallel: int = 1,
                   gpu: bool) -> dict[str, float]:
    """Bytes by term of one vLLM engine (rollout actor, evaluation actor, Serve replica) per device.

    - weights P*b / tensor_parallel (creason's engines run tensor parallel 1: one device each).
    - KV cache: `kv_cache_gib` as set (vLLM's `kv_cache_memory_bytes` is per device).
    - activations of a prefill chunk and the sampler: ENGINE_BATCHED_TOKENS * (2i + 4h) * b
      + ENGINE_MAX_SEQS * V * 4 (float32 logits).
    - on CPU, vLLM re-packs every matmul weight for oneDNN: a second P*b.
    """
    b = BYTES[dtype]
    terms = {
        "weights": arch.params() * b / tensor_parallel,
        "KV cache": kv_cache_gib * GIB,
        "activations": ENGINE_BATCHED_TOKENS * (2 * arch.intermediate + 4 * arch.hidden) * b
        + ENGINE_MAX_SEQS * arch.vocab * 4,
    }
    if not gpu:
        terms["oneDNN packed weights"] = arch.params() * b
    return terms


def _gib(terms: dict[str, float], runtime_gib: float) -> dict[str, float]:
    """Bytes by term to GiB, with the role's runtime constant."""
    return {**{k: v / GIB for k, v in terms.items()}, "runtime": runtime_gib}


@dataclass(frozen=True)
class Offer:
    """What the cluster offers: GPUs, memory per GPU, host memory per node (GiB)."""

    gpus: int
    gpu_gib: float
    host_gib: float
    source: str


#: GiB of one GPU by Ray's `accelerator_type:<name>` resource, where the name tells it (A100 does not).
GPU_GIB_BY_TYPE = {"H100": 80, "H200": 141, "B200": 180, "L4": 24, "A10G": 24, "L40S": 48, "V100": 16}


def offer_from_cluster(resources: dict[str, float], node_memory_bytes: list[float], gpu_gib: float | None,
                       host_gib: float | None) -> Offer:
    """An `Offer` from `ray.cluster_resources()` and each alive node's `memory` resource (bytes Ray
    schedules with). GPU memory is not a Ray resource: `gpu_gib`, else known from the accelerator
    type, else an error asking for it."""
    gpus = int(resources.get("GPU", 0))
    if gpu_gib is None and gpus:
        types = [k.split(":", 1)[1] for k in resources if k.startswith("accelerator_type:")]
        known = {GPU_GIB_BY_TYPE.get(t) for t in types}
        if len(known) != 1 or None in known:
            raise ValueError(f"the cluster's GPUs ({', '.join(types) or 'type unknown'}) do not tell their memory: "
                             "give --gpu-gib")
        gpu_gib = float(known.pop())
    host = host_gib if host_gib is not None else max(node_memory_bytes, default=0) / GIB
    return Offer(gpus, gpu_gib or 0.0, host, "ray.cluster_resources()")


@dataclass
class Plan:
    model: str
    params: int
    trainable: int
    offer: Offer
    needs: list[Need]
    problems: list[str] = field(default_factory=list)
    phases: dict[str, tuple[float, float]] = field(default_factory=dict)  # phase: (GPUs, host GiB of CPU roles)

    @property
    def fits(self) -> bool:
        return not self.problems


def _engine_dtype(precision: str, gpu: bool) -> str:
    """"auto" (evaluate.precision, serve.dtype) as an engine resolves it: bf16 on GPUs, fp32 on
    CPUs (bf16 only with AMX units, which a plan cannot see: fp32 is the larger)."""
    return ("bf16" if gpu else "fp32") if precision == "auto" else precision


def training_need(cfg, arch: Architecture, prompt_tokens: int, world: int | None = None) -> Need:
    """The training worker of `cfg` (a CreasonConfig); `world` replaces train.num_workers."""
    t, r = cfg.train, cfg.rollout
    world = world or t.num_workers
    top = getattr(t, "trainable_layers", None)  # a config without the field trains every block
    gpu = t.gpus_per_worker > 0
    share = t.share_prompt_forward and t.zero_stage < 3 and not t.gradient_checkpointing  # loop.shares_prompt_forward
    terms = training_worker(
        arch, precision=cfg.model.precision, zero_stage=t.zero_stage, world=world, micro_batch=t.micro_batch_size,
        prompt_tokens=prompt_tokens, completion_tokens=r.max_new_tokens, group_size=r.group_size, share_prompt=share,
        gradient_checkpointing=t.gradient_checkpointing, trainable_layers=top,
        reference=cfg.algorithm.beta > 0, gpu=gpu)
    detail = (f"{cfg.model.precision}, ZeRO-{t.zero_stage} over {world}, micro-batch {t.micro_batch_size} x "
              f"({prompt_tokens} + {r.max_new_tokens}) tokens{', shared prompt' if share else ''}"
              f"{', gradient checkpointing' if t.gradient_checkpointing else ''}"
              f"{f', top {top} blocks train' if top else ''}"
              f"{f', reference (beta {cfg.algorithm.beta:g})' if cfg.algorithm.beta > 0 else ''}")
    knobs = ", ".join(k for k, on in (
        ("train.num_workers", t.zero_stage > 0), ("train.zero_stage", t.zero_stage < 3),
        ("train.gradient_checkpointing", not t.gradient_checkpointing), ("train.micro_batch_size", t.micro_batch_size > 1),
        ("train.trainable_layers", hasattr(t, "trainable_layers")),
        ("algorithm.beta (0: no reference)", cfg.algorithm.beta > 0)) if on)
    runtime = GPU_TRAIN_RUNTIME_GIB if gpu else CPU_TRAIN_RUNTIME_GIB
    return Need("training worker", world, t.gpus_per_worker, _gib(terms, runtime), detail, knobs)


def engine_need(role: str, arch: Architecture, *, count: int, gpus_each: float, precision: str, kv_cache_gib: float,
                section: str) -> Need:
    gpu = gpus_each > 0
    dtype = _engine_dtype(precision, gpu)
    terms = engine_process(arch, dtype=dtype, kv_cache_gib=kv_cache_gib, gpu=gpu)
    runtime = GPU_ENGINE_RUNTIME_GIB if gpu else CPU_ENGINE_RUNTIME_GIB
    knobs = f"{section}.kv_cache_gib" + (", model.precision" if section == "rollout" else
                                         ", serve.dtype" if section == "serve" else ", evaluate.precision")
    return Need(role, count, gpus_each, _gib(terms, runtime), f"{dtype}, KV cache {kv_cache_gib:g} GiB", knobs)


def plan_run(cfg, arch: Architecture, offer: Offer, *, model: str, prompt_tokens: int | None = None) -> Plan:
    """Every role of `cfg` against `offer`. prompt_tokens None: the longest prompt the engine admits
    (rollout.max_model_len - rollout.max_new_tokens), the worst case."""
    r, e, s = cfg.rollout, cfg.evaluate, cfg.serve
    prompt_tokens = prompt_tokens if prompt_tokens is not None else max(0, r.max_model_len - r.max_new_tokens)
    train = training_need(cfg, arch, prompt_tokens)
    rollout = engine_need("rollout actor", arch, count=r.num_actors, gpus_each=r.gpus_per_actor,
                          precision=cfg.model.precision, kv_cache_gib=r.kv_cache_gib, section="rollout")
    evaluate = engine_need("evaluation actor", arch, count=e.num_actors, gpus_each=e.gpus_per_actor,
                           precision=e.precision, kv_cache_gib=e.kv_cache_gib, section="evaluate")
    serve = engine_need("serve replica", arch, count=max(1, s.min_replicas), gpus_each=s.gpus_per_replica,
                        precision=s.dtype, kv_cache_gib=s.kv_cache_gib, section="serve")
    plan = Plan(model, arch.params(), arch.trainable_params(getattr(cfg.train, "trainable_layers", None)), offer,
                [train, rollout, evaluate, serve])
    for need in plan.needs:
        plan.problems += device_problems(need, offer, cfg, arch, prompt_tokens)
    phases = {"training": [train, rollout], "evaluation": [evaluate], "serving": [serve]}
    for phase, needs in phases.items():
        plan.problems += phase_problems(phase, needs, offer)
        plan.phases[phase] = (sum(n.count * n.gpus_each for n in needs), host_need(needs))
    return plan


def device_problems(need: Need, offer: Offer, cfg, arch: Architecture, prompt_tokens: int) -> list[str]:
    """A GPU role whose process needs more than its share of a GPU (a fraction g < 1 shares one),
    with what one change of a knob would make of it."""
    if need.gpus_each <= 0:
        return []
    have = offer.gpu_gib * min(need.gpus_each, 1.0)
    if need.total <= have:
        return []
    if need.role == "training worker":
        fixes = training_fixes(cfg, arch, prompt_tokens, have)
        hint = f" (alone, each of these fits: {'; '.join(fixes)})" if fixes else " (no one of them fits alone)"
    elif need.total - need.terms["KV cache"] < have:
        hint = f" (at most {have - (need.total - need.terms['KV cache']):.1f} GiB of KV cache fits)"
    else:
        hint = " (the weights alone do not fit)"
    return [f"{need.role}: needs {need.total:.1f} GiB a GPU, {have:.1f} GiB offered; change {need.knobs}{hint}"]


def training_fixes(cfg, arch: Architecture, prompt_tokens: int, have: float) -> list[str]:
    """Single changes that bring the training worker under `have` GiB, each with its need."""
    def need_with(key: str, value) -> float:
        changed = cfg.model_copy(deep=True)
        section, name = key.split(".")
        setattr(getattr(changed, section), name, value)
        return training_need(changed, arch, prompt_tokens).total

    t, fixes = cfg.train, []
    if t.zero_stage > 0:
        fits = [w for w in range(t.num_workers + 1, 257) if need_with("train.num_workers", w) <= have]
        fixes += [f"train.num_workers={fits[0]} ({need_with('train.num_workers', fits[0]):.1f} GiB; more GPUs)"] if fits else []
    for key, value, on in (("train.zero_stage", 3, t.zero_stage < 3), ("train.gradient_checkpointing", True,
                            not t.gradient_checkpointing), ("train.micro_batch_size", 1, t.micro_batch_size > 1),
                           ("algorithm.beta", 0.0, cfg.algorithm.beta > 0)):
        if on and need_with(key, value) <= have:
            fixes.append(f"{key}={value} ({need_with(key, value):.1f} GiB)")
    if hasattr(t, "trainable_layers"):
        layers = [k for k in range(arch.layers - 1, 0, -1) if need_with("train.trainable_layers", k) <= have]
        if layers and (t.trainable_layers is None or layers[0] < t.trainable_layers):
            fixes.append(f"train.trainable_layers={layers[0]} ({need_with('train.trainable_layers', layers[0]):.1f} GiB)")
    return fixes


def phase_problems(phase: str, needs: list[Need], offer: Offer) -> list[str]:
    """Roles that run at the same time: enough GPUs, and host memory for the CPU roles of a node."""
    problems = []
    gpus = sum(n.count * n.gpus_each for n in needs)
    if gpus > offer.gpus:
        names = " + ".join(f"{n.count} x {n.gpus_each:g} ({n.role})" for n in needs if n.gpus_each)
        problems.append(f"{phase}: needs {gpus:g} GPUs ({names}), {offer.gpus} offered; change "
                        + ", ".join(KNOB_OF_COUNT[n.role] for n in needs if n.gpus_each))
    cpu = [n for n in needs if n.gpus_each == 0]
    host = host_need(needs)
    if cpu and host > offer.host_gib:
        problems.append(f"{phase}: CPU processes need {host:.1f} GiB of host memory, {offer.host_gib:.1f} GiB "
                        f"offered; change " + ", ".join(f"{KNOB_OF_COUNT[n.role]} or {n.knobs}" for n in cpu))
    return problems


def host_need(needs: list[Need]) -> float:
    """GiB of host memory the CPU roles of a phase need on one node, with Ray's own processes
    (CPU_RAY_PROCESSES_GIB); 0 when every role of the phase is on GPUs."""
    cpu = [n for n in needs if n.gpus_each == 0]
    return sum(n.count * n.total for n in cpu) + CPU_RAY_PROCESSES_GIB if cpu else 0.0


KNOB_OF_COUNT = {"training worker": "train.num_workers", "rollout actor": "rollout.num_actors",
                 "evaluation actor": "evaluate.num_actors", "serve replica": "serve.min_replicas"}


def render(plan: Plan) -> str:
    """The plan as text: each role's terms, its total against its device, then the verdict."""
    o = plan.offer
    lines = [f"model: {plan.model}: {plan.params / 1e9:.3f} B parameters ({plan.trainable / 1e9:.3f} B trainable)",
             f"offered: {o.gpus} GPUs x {o.gpu_gib:g} GiB, host {o.host_gib:.1f} GiB a node ({o.source})", ""]
    for n in plan.needs:
        where = f"{n.gpus_each:g} GPU each" if n.gpus_each else "CPU, host memory"
        lines.append(f"{n.role} x {n.count} ({where}): {n.detail}")
        lines += [f"  {name:<22} {gib:8.2f} GiB" for name, gib in n.terms.items() if gib >= 0.005]
        have = f" of {o.gpu_gib * min(n.gpus_each, 1):.1f} GiB a GPU" if n.gpus_each else " of host memory"
        ok = "fits" if not n.gpus_each or n.total <= o.gpu_gib * min(n.gpus_each, 1) else "DOES NOT FIT"
        lines.append(f"  {'total':<22} {n.total:8.2f} GiB{have}: {ok}" if n.gpus_each else
                     f"  {'total':<22} {n.total:8.2f} GiB{have}")
        lines.append("")
    for phase, (gpus, host) in plan.phases.items():
        lines.append(f"{phase:<11} {gpus:g} of {o.gpus} GPUs" + (f"; CPU processes {host:.2f} GiB of {o.host_gib:.1f} "
                                                                 f"GiB host memory (Ray's own included)" if host else ""))
    lines.append("")
    if plan.fits:
        lines.append("verdict: every role fits")
    else:
        lines.append("verdict: does not fit")
        lines += [f"  - {p}" for p in plan.problems]
    return "\n".join(lines)
