"""One configuration tree: pydantic models, loaded from YAML, overridden from the command line.

    cfg = load_config("quickstart", ["data.num_patients=5000", "questions.mi_cutoff=0.4"])

Every field has a description; `docs/configuration.md` is generated from them. Unknown keys and
wrong types are errors that name the dotted key.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _bare_no(value):
    """YAML reads a bare `no` (in a file or a `--set`) as false: it means "no" here."""
    return "no" if value is False else value


MixedPrecision = Annotated[Literal["no", "bf16", "auto"], BeforeValidator(_bare_no)]


class DataConfig(_Section):
    """Where registry records come from."""

    source: Literal["synthetic", "files"] = Field(
        "synthetic", description="`synthetic`: generate the sepsis registry; `files`: read `paths` with `dictionary`."
    )
    num_patients: int = Field(10_000, ge=1, description="Synthetic patients to generate.")
    profile: str = Field(
        "compact", description="Dictionary profile: `full` (all variables) or a named subset such as `compact`."
    )
    block_size: int = Field(10_000, ge=100, description="Patients per generated block (one Ray task each).")
    paths: list[str] = Field(default_factory=list, description="CSV or Parquet files of a user's registry.")
    dictionary: str | None = Field(
        None, description="Data dictionary YAML; default: the built-in synthetic sepsis dictionary."
    )
    on_bad_row: Literal["fail", "reject"] = Field(
        "fail",
        description="A row that breaks the dictionary: `fail` stops the run naming file, row and column; "
        "`reject` leaves it out and records it with the reason in `rejected_rows.jsonl`.",
    )


class SplitConfig(_Section):
    """Fractions of patients per split (a patient is in exactly one)."""

    train: float = Field(0.8, ge=0, le=1, description="Share of patients in the training split.")
    validation: float = Field(0.1, ge=0, le=1, description="Share of patients in the validation split.")
    test: float = Field(0.1, ge=0, le=1, description="Share of patients in the test split.")

    @model_validator(mode="after")
    def _sums_to_one(self) -> "SplitConfig":
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must add up to 1, got {total:g}")
        return self


DEFAULT_SYSTEM_PROMPT = (
    "You are a clinician reasoning about a patient from a sepsis registry. "
    "Read the record, think step by step about what the findings imply, "
    "then give the letter of the single best option in \\boxed{}, for example \\boxed{B}."
)


class QuestionsConfig(_Section):
    """How records become multiple-choice questions (the C-Reason method)."""

    masked_per_patient: int = Field(1, ge=0, description="Masked-value questions per patient.")
    outcome_per_patient: int = Field(1, ge=0, description="Outcome questions per patient.")
    outcome_targets: list[str] = Field(
        default_factory=lambda: ["hospital_mortality", "septic_shock", "antibiotic_appropriate"],
        description="Variables asked about in outcome questions (outcome section removed from the record).",
    )
    max_options: int = Field(5, ge=2, le=5, description="Options per question (A-E at most).")
    answer_words: bool = Field(
        False, description="Options of a categorical or ordinal target in the data dictionary's `answers` words "
        "(`Died in hospital` / `Survived to discharge`, not `Yes` / `No`), so that the answers of different variables "
        "are not the same two words; off: the registry values themselves, as the study asks."
    )
    mi_cutoff: float = Field(
        0.5, ge=0, description="Variables whose normalised mutual information with the target exceeds this are removed."
    )
    mi_bins: int = Field(10, ge=2, le=64, description="Quantile bins used to discretise numeric variables for MI.")
    stats_sample_rows: int = Field(
        100_000, ge=100, description="Training rows sampled for column statistics and mutual information."
    )
    distractor_spacing_sd: float = Field(
        2.0, gt=0, description="Numeric distractors are this many SDs of the answer's mixture component apart."
    )
    mixture_components: int = Field(3, ge=1, le=8, description="Gaussian mixture components per numeric variable.")
    include_free_text: bool = Field(False, description="Show free-text variables in prompts (off: they may hold identifiers).")
    split: SplitConfig = Field(default_factory=SplitConfig)
    system_prompt: str = Field(DEFAULT_SYSTEM_PROMPT, description="System message of every prompt.")
    data_source: str = Field("creason/sepsis_synthetic", description="`data_source` column of the output.")


class RayConfig(_Section):
    """The Ray cluster a command runs on."""

    address: str | None = Field(
        None, description="Cluster address (`auto`: the one `ray start` runs on this machine); None: the job's "
        "cluster inside `ray job submit` (RAY_ADDRESS), else a new local cluster."
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a locally started cluster (default: all).")
    include_dashboard: bool = Field(
        True, description="Start Ray's dashboard with a locally started cluster. Its processes poll all the time: on "
        "2 cores, off made 2 question-building workers 1.66x one instead of 1.48x (docs/benchmarks.md). Off, the "
        "cluster's State API port is one that nothing serves, so no other cluster's dashboard answers for it."
    )
    data_concurrency: int = Field(2, ge=1, description="Parallel Ray Data workers per stage.")


class LoraSettings(_Section):
    """LoRA adapters on the policy through PEFT, the only weights the trainer trains (creason/models/lora.py).

    Rollout engines get the adapters or the merged weights after each step (`sync`); checkpoints'
    `policy/`, evaluation and serving get the merged model."""

    rank: int = Field(16, ge=1, description="Rank r of each adapter (B: out x r, A: r x in).")
    alpha: float = Field(32.0, gt=0, description="Scale numerator: the update is (alpha / r) B A.")
    dropout: float = Field(
        0.0, ge=0, lt=1, description="Dropout on the adapters' input. Keep 0 for GRPO: dropout makes the trainer's "
        "log-probs noisy, so the ratio is not 1 on the first pass and `mismatch` grows."
    )
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Names of the linear layers that get adapters (Llama/Phi/Qwen names: attention and MLP).",
    )
    sync: Literal["auto", "adapter", "merged"] = Field(
        "auto", description="What the rollout engines get after each step: `adapter` (vLLM runs the adapter with "
        "its LoRA kernels, `enable_lora`; a sync sends the adapters only), `merged` (the merged full weights; "
        "engines without LoRA) or `auto`: adapter where rollout actors have GPUs, merged on CPUs, where vLLM's "
        "LoRA kernels cost more in generation than the sync saves (docs/benchmarks.md, LoRA weight sync)."
    )

    def resolved_sync(self, gpus_per_actor: float) -> str:
        """`sync` with `auto` decided for rollout actors of `gpus_per_actor` GPUs."""
        if self.sync != "auto":
            return self.sync
        return "adapter" if gpus_per_actor > 0 else "merged"


class ModelConfig(_Section):
    """The policy model."""

    path: str | None = Field(
        None, description="Hugging Face model folder or name; None: SmolLM2-135M-Instruct from `creason fetch-model`."
    )
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="Training and rollout precision (fp32 on CPUs: bf16 is ~8x slower there; bf16 on GPUs)."
    )
    lora: LoraSettings | None = Field(
        None, description="Train LoRA adapters instead of the weights (None: full fine-tuning). Not with "
        "`train.trainable_layers` nor at ZeRO-3; the warm-up stage trains the full model."
    )


class RewardTerm(_Section):
    path: str = Field(description="Dotted path of a reward callable `(completions, ground_truth, options, **kw) -> "
                      "list[float]`; `options`: each completion's options as its prompt showed them.")
    weight: float = Field(1.0, description="Weight of this reward in the sum.")


class RolloutConfig(_Section):
    """Sampling completions with vLLM rollout actors."""

    backend: Literal["vllm", "hf"] = Field("vllm", description="`vllm` (default) or the Hugging Face `generate` fallback.")
    num_actors: int = Field(1, ge=1, description="Rollout actors, each owning one engine; prompts are spread over them.")
    cpus_per_actor: float = Field(1.0, gt=0, description="Logical CPUs each actor reserves.")
    threads_per_actor: int | None = Field(
        None, ge=1, description="torch threads of each actor's engine (real cores); None: the whole CPUs of "
        "`cpus_per_actor`. Sampling and training alternate, so an actor may use cores a worker holds."
    )
    gpus_per_actor: float = Field(0.0, ge=0, description="GPUs each actor reserves (tensor parallel is per actor).")
    custom_resources: dict[str, float] = Field(
        default_factory=dict, description="Extra Ray resources each actor reserves, e.g. `{creason_rollout: 1}` to "
        "keep the actors on the nodes that advertise it (a rollout pool apart from the training pool)."
    )
    max_restarts: int = Field(
        3, ge=-1, description="Times Ray restarts a dead actor (-1: always); a restarted actor is sent the current "
        "weights and the prompts it held are sampled again."
    )
    group_size: int = Field(7, ge=2, description="Completions sampled per prompt (G; the study used 7).")
    rotate_options: bool = Field(
        False, description="Spread each group's samples over the cyclic rotations of its question's options (as evenly "
        "as G allows): every letter is then right equally often within a group, so GRPO cannot gain by preferring a "
        "letter and learns only from which option the policy picks. Evaluation keeps each question's own order."
    )
    temperature: float = Field(0.9, gt=0, description="Sampling temperature (the study: 0.9).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling.")
    max_new_tokens: int = Field(512, ge=1, description="Completion length limit; longer completions are truncated.")
    max_model_len: int = Field(2048, ge=64, description="Prompt plus completion limit of the engine.")
    kv_cache_gib: float = Field(
        0.5, gt=0, description="KV cache per engine, set explicitly (on CPU the default is a fraction of all host memory)."
    )
    weight_sync: Literal["object_store", "broadcast"] = Field(
        "object_store", description="How new weights reach the actors: `object_store` (one `ray.put`, every actor "
        "reloads in place) or `broadcast` (a process group of the trainer's rank 0 and the actors: NCCL on GPUs, "
        "gloo on CPUs; no object-store copy)."
    )
    sync_frozen_weights: bool = Field(
        False, description="Send the frozen weights (below `train.trainable_layers`) at every weight sync, not only "
        "at the first: they never change, so by default later syncs carry the trainable weights alone (SmolLM2, top 8 "
        "of 30 blocks: 108 of 513 MiB; docs/benchmarks.md)."
    )
    enforce_eager: bool | None = Field(
        None, description="vLLM without CUDA graphs or torch.compile (start-up in seconds); None: on for CPU "
        "engines, off on GPUs (graphs captured at start-up, a minute or so, decode faster)."
    )


class AlgorithmConfig(_Section):
    """GRPO: advantages, loss, KL and rewards."""

    advantage: Literal["grpo", "dr_grpo", "grpo_batch_std"] = Field(
        "grpo", description="Group-relative advantage: group std (GRPO), none (Dr. GRPO), or batch std."
    )
    eps_low: float = Field(0.2, ge=0, description="Lower ratio clip: ratio >= 1 - eps_low.")
    eps_high: float = Field(0.2, ge=0, description="Upper ratio clip: ratio <= 1 + eps_high (0.28 is DAPO's clip-higher).")
    mu: int = Field(1, ge=1, description="Optimisation passes over each batch of rollouts.")
    loss_aggregation: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"] = Field(
        "token-mean", description="How per-token losses become one, over the global batch of all workers (verl's "
        "`agg_loss` modes): `token-mean` over all tokens (DAPO; TRL `dapo`), `seq-mean-token-mean` per sequence then "
        "over sequences (original GRPO; TRL `grpo`), `seq-mean-token-sum` token sums averaged over sequences, "
        "`seq-mean-token-sum-norm` token sums / `loss_norm_tokens` averaged over sequences (Dr. GRPO; TRL "
        "`dr_grpo`). The old names `token_mean` and `seq_mean_token_mean` are read as the new ones."
    )
    loss_norm_tokens: int | None = Field(
        None, ge=1, description="Dr. GRPO's constant normaliser for `seq-mean-token-sum-norm` (the maximum completion "
        "length); None: `rollout.max_new_tokens`."
    )
    clip_ratio_c: float | None = Field(
        None, gt=1, description="Dual-clip PPO bound for negative advantages: a token's loss is at most "
        "`clip_ratio_c * |A|` (Ye et al. 2020; verl uses 3.0); None: off."
    )
    tis_cap: float | None = Field(
        None, gt=0, description="Truncated importance sampling against the sampler's log-probs: each token's policy "
        "gradient is weighted by min(pi_trainer / pi_vllm, tis_cap) (Yao et al. 2025; typical: 2); None: off."
    )
    advantage_eps: float = Field(
        1e-6, gt=0, description="Added to the reward std that divides advantages (verl: 1e-6; TRL: 1e-4); > 0 keeps a "
        "group whose rewards are all equal at advantage 0."
    )
    beta: float = Field(0.0, ge=0, description="KL coefficient to the reference model; 0 skips the reference model.")
    kl_estimator: Literal["k1", "k2", "k3"] = Field("k3", description="KL estimator (k3: Schulman's unbiased, positive).")
    ref_refresh_every: int = Field(0, ge=0, description="Mix the policy into the reference every k steps (0: never; study: 64).")
    ref_refresh_alpha: float = Field(0.9, ge=0, le=1, description="ref = alpha * policy + (1 - alpha) * ref at a refresh.")
    filter_zero_variance: bool = Field(False, description="Drop groups whose rewards are all equal (dynamic sampling).")
    answer_balance: bool = Field(
        False, description="Scale each question's advantages by its answer's weight among the training questions of "
        "its variable, n_variable / (answers seen * n_answer) (`creason.algo.balanced_answer_weights`): every answer "
        "of a variable then weighs the same, so preferring the common answer (\"No\") without reading the record "
        "earns nothing."
    )
    truncation: Literal["mask", "penalty", "none"] = Field(
        "mask", description="Completions cut at max_new_tokens: left out of the loss, penalised, or kept."
    )
    truncation_penalty: float = Field(0.0, description="Reward given to a truncated completion when truncation is `penalty`.")
    rewards: list[RewardTerm] = Field(
        default_factory=lambda: [RewardTerm(path="creason.rewards:boxed_letter_reward")],
        description="Weighted reward functions; the study's: 1 when the first \\boxed{} letter is right.",
    )

    @model_validator(mode="before")
    @classmethod
    def _renamed_aggregations(cls, data: Any) -> Any:
        """The loss aggregations' names before verl's (`token_mean`, `seq_mean_token_mean`) still load."""
        old = {"token_mean": "token-mean", "seq_mean_token_mean": "seq-mean-token-mean"}
        if isinstance(data, dict) and data.get("loss_aggregation") in old:
            data = {**data, "loss_aggregation": old[data["loss_aggregation"]]}
        return data


class TrainConfig(_Section):
    """The training run: data, scale, optimisation, checkpoints."""

    questions_dir: str | None = Field(None, description="Question Parquet folder; None: `<output_dir>/questions`.")
    question_kinds: list[Literal["masked_value", "outcome"]] = Field(
        default_factory=lambda: ["masked_value"], description="Question kinds trained on (outcome ones measure transfer)."
    )
    steps: int = Field(100, ge=1, description="Optimizer steps.")
    prompts_per_step: int = Field(8, ge=1, description="Prompts per step; each gets `rollout.group_size` completions.")
    num_workers: int = Field(2, ge=1, description="Ray Train workers (data parallel).")
    cpus_per_worker: float = Field(0.5, gt=0, description="Logical CPUs each worker reserves.")
    gpus_per_worker: float = Field(0.0, ge=0, description="GPUs each worker uses (0 on CPU).")
    custom_resources: dict[str, float] = Field(
        default_factory=dict, description="Extra Ray resources each worker reserves, e.g. `{creason_train: 1}` to "
        "keep the workers on the nodes that advertise it (a training pool apart from the rollout pool)."
    )
    threads_per_worker: int = Field(1, ge=1, description="torch threads per worker (real cores, not logical CPUs).")
    worker_env: dict[str, str] = Field(
        default_factory=dict,
        description="Environment variables of the training workers (Ray Train's `worker_runtime_env`, merged with "
        "the job's), GRPO and warm-up alike. On CPU, `{MALLOC_MMAP_THRESHOLD_: '1048576', MALLOC_TRIM_THRESHOLD_: "
        "'1048576'}` has glibc hand freed activations back to the system: the quickstart's worker peaked ~0.75 GiB "
        "lower (6.08 against 6.81-6.91 GiB) and its training phase took 16% longer (docs/benchmarks.md).",
    )
    zero_stage: int = Field(2, ge=0, le=3, description="DeepSpeed ZeRO stage.")
    mixed_precision: MixedPrecision = Field(
        "no", description="`bf16`: the training forward and backward compute in bfloat16 under torch.autocast "
        "(DeepSpeed's `torch_autocast`; linear layers and attention), while the weights, their gradients, AdamW's "
        "state, checkpoints and the weights sent to the rollout engines stay float32 (`model.precision: fp32`). GRPO "
        "and the warm-up alike. For CPUs with AVX512-BF16 or AMX and for GPUs: on the 2-core AMD EPYC VM the quickstart's "
        "training phase took 0.77x the float32 time, the step 0.82x, the worker's peak 0.7 GiB more (docs/benchmarks.md). "
        "The rollout engines keep `model.precision`: vLLM's CPU decode in bf16 needs AMX. `auto`: `bf16` where the "
        "worker's device computes in bfloat16 natively (a GPU that supports it, a CPU with AVX512-BF16 or AMX), else "
        "`no`; an explicit `bf16` elsewhere is emulated: on a 2-core AVX2 machine a warm-up step took over 8x its float32 time (docs/benchmarks.md)."
    )
    lr: float = Field(1e-6, gt=0, description="Peak learning rate (study: 1e-6).")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="Share of steps of linear warm-up before the cosine decay.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    grad_clip: float = Field(1.0, gt=0, description="Gradient norm clip.")
    micro_batch_size: int = Field(
        4, ge=1, description="Sequences per forward/backward pass on a worker. A multiple of `rollout.group_size` keeps "
        "each group in one pass, so its shared record runs once (workers receive whole groups)."
    )
    trainable_layers: int | None = Field(
        None, ge=1, description="Train only the top k decoder blocks and the final norm (embeddings and lower blocks "
        "frozen: they run without autograd, so a training pass costs ~1 forward of them instead of ~3); None: all. "
        "Applies to GRPO and the warm-up. With `model.lora`: the adapters of the top k blocks only."
    )
    share_prompt_forward: bool = Field(
        True, description="Run the prompt a group's completions share once per micro-batch (its KV cache repeated), "
        "not once per completion: the same gradients for ~1/3 of the compute at G=4 on registry prompts. Ignored "
        "at ZeRO-3."
    )
    async_rollouts: bool = Field(
        False, description="Sample step n+1's groups with the weights of step n while step n trains, one step off "
        "policy (as verl's one-step-off-policy trainer): generation hides behind training where they have their own "
        "devices. The weights are pushed once that generation ends, so an actor never holds other weights mid-call, "
        "and the version guard still checks each call. Set `algorithm.tis_cap` (e.g. 2) to weight the stale "
        "samples by pi_trainer / pi_sampler; `mismatch` then measures one step of policy change. A run's first step "
        "(and a resumed run's) samples on policy. docs/training.md, \"Asynchronous rollouts\"."
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute each layer's activations in the backward pass instead of keeping them (Hugging "
        "Face `gradient_checkpointing_enable`): the activation memory of one layer, for about one more forward pass. "
        "Turns `share_prompt_forward` off (checkpointed layers drop the KV cache)."
    )
    checkpoint_every: int = Field(10, ge=1, description="Steps between checkpoints.")
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept on disk.")
    eval_every: int = Field(0, ge=0, description="Steps between greedy validation accuracy checks (0: never).")
    eval_questions: int = Field(32, ge=1, description="Validation questions per check.")
    max_failures: int = Field(
        2, ge=-1, description="Times Ray Train restarts the worker group after a worker dies (-1: unlimited); it "
        "resumes from the latest checkpoint, so at most `checkpoint_every` steps are redone."
    )
    loggers: list[Literal["jsonl", "tensorboard", "mlflow", "wandb"]] = Field(
        default_factory=lambda: ["jsonl", "tensorboard"], description="Where each step's metrics go: `jsonl` "
        "(`<output_dir>/train/metrics.jsonl`, always on: resume and the report read it), `tensorboard` "
        "(`<output_dir>/train/tensorboard`), `mlflow` (the `creason[tracking]` extra; server from "
        "`mlflow_tracking_uri`), `wandb` (the `creason[tracking]` extra; `wandb_mode`). A resumed run logs to the "
        "same MLflow / W&B run (its id is kept in `<output_dir>/train/trackers.json`)."
    )
    run_name: str | None = Field(None, description="The run's name in MLflow and W&B; None: the output folder's name.")
    experiment: str = Field("creason", description="MLflow experiment and W&B project the run is logged to.")
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow tracking server, e.g. `http://127.0.0.1:5000`; None: MLflow's own default "
        "(`MLFLOW_TRACKING_URI`, else a local `mlruns` folder)."
    )
    wandb_entity: str | None = Field(None, description="W&B team or user; None: the logged-in user's default.")
    wandb_mode: Literal["online", "offline"] | None = Field(
        None, description="W&B mode; None: `WANDB_MODE`, else online. `offline` writes the run under "
        "`<output_dir>/train/wandb` for a later `wandb sync`."
    )

    @field_validator("loggers")
    @classmethod
    def _jsonl_on(cls, loggers: list[str]) -> list[str]:
        if "jsonl" not in loggers:
            raise ValueError("train.loggers must keep `jsonl`: resuming a run and the report read metrics.jsonl")
        return list(dict.fromkeys(loggers))


class WarmupConfig(_Section):
    """Format warm-up before GRPO (`creason warmup`, creason/train/warmup.py): fine-tune the model on
    its own answers written as `\\boxed{X}`, so that the study's reward can tell right from wrong."""

    enabled: bool = Field(False, description="Run the warm-up in `creason quickstart` / the pipeline, and train from its model.")
    answers: Literal["own", "random", "ground_truth"] = Field(
        "own", description="Letter boxed in each example: `own` (the model's own forced letter: format only, no "
        "ground truth), `random` (one of the question's options, uniformly: the format and, with `state_answer`, "
        "the copy from an option's text to its letter, with no answer taught) or `ground_truth` (supervised "
        "fine-tuning: report it as such)."
    )
    questions: int = Field(256, ge=1, description="Training questions (of `train.question_kinds`) the examples come from.")
    restate_answer: bool = Field(
        False, description="After the box, the completion says the letter again as the evaluation's forced step asks for "
        "it (`\\boxed{X} Therefore, the answer is X.`), so that the forced letter follows the model's own box. Format, "
        "not answers, but the protocol's own words: report its effect apart. GRPO completions then need "
        "`rollout.max_new_tokens` >= 16."
    )
    state_answer: bool = Field(
        False, description="The completion names the boxed option's text before the box (`Yes \\boxed{B}`). The "
        "text of an answer is the same whatever the option order, so what the record says about it is not split "
        "across letters; the letter is then a copy of the named option's. GRPO completions then need "
        "`rollout.max_new_tokens` to hold the longest option text too."
    )
    reasoning_tokens: int = Field(
        0, ge=0, description="The model's own greedy reasoning kept before the boxed letter (0: the completion is "
        "the boxed letter alone, which also makes GRPO's completions a few tokens long)."
    )
    epochs: int = Field(1, ge=1, description="Passes over the examples.")
    batch_size: int = Field(16, ge=1, description="Examples per optimizer step (over all workers).")
    micro_batch_size: int = Field(4, ge=1, description="Examples per forward/backward pass on a worker.")
    lr: float = Field(1e-5, gt=0, description="Learning rate (constant: one epoch of a few steps needs no schedule).")
    mixed_precision: MixedPrecision | None = Field(
        None, description="The warm-up's `train.mixed_precision`; None: the same as GRPO's. `auto` and GRPO in float32 "
        "is the learning recipe's choice: in bf16 a warm-up step took 0.66x as long on a 2-core AMD EPYC VM with "
        "AVX512-BF16, so 1.5x the answers in the same time (docs/results.md); on a CPU without it, float32."
    )

    def resolved_mixed_precision(self, train: "TrainConfig") -> str:
        return self.mixed_precision or train.mixed_precision


class EvalConfig(_Section):
    """Evaluation on held-out questions: the study's protocol, baselines, significance, report."""

    models: list[str] = Field(
        default_factory=list,
        description="Models to compare, each a Hugging Face folder or `label=folder`; empty: the base model "
        "(`model.path`) and, if one exists, the policy of the latest complete training checkpoint under "
        "`<output_dir>/ray_train`.",
    )
    questions_dir: str | None = Field(
        None, description="Question Parquet folder; None: `train.questions_dir`, else `<output_dir>/questions`."
    )
    split: Literal["train", "validation", "test"] = Field("test", description="Split whose questions are asked.")
    question_kinds: list[Literal["masked_value", "outcome"]] = Field(
        default_factory=lambda: ["masked_value", "outcome"], description="Question kinds asked (reported apart too)."
    )
    max_questions: int | None = Field(
        None, ge=1, description="Ask a seeded random subset of this many questions; None: all of the split."
    )
    max_new_tokens: int = Field(
        512, ge=0, description="Greedy reasoning tokens before the answer is forced (0: the letter right after the prompt)."
    )
    max_model_len: int = Field(2048, ge=64, description="Prompt + reasoning + forced-answer tokens, at most, per engine.")
    kv_cache_gib: float = Field(0.25, gt=0, description="KV cache per engine, set explicitly (see rollout.kv_cache_gib).")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="Engine precision. auto: bf16 on GPUs and on CPUs with AMX units (2.4x the questions/s of "
        "fp32 there), fp32 on other CPUs. Decided on each actor's node; reported in the results' `run`."
    )
    num_actors: int = Field(1, ge=1, description="vLLM actors the questions are sharded over (one engine each).")
    cpus_per_actor: float = Field(1.0, gt=0, description="Logical CPUs each actor reserves (also its torch threads).")
    gpus_per_actor: float = Field(0.0, ge=0, description="GPUs each actor reserves (0 on CPU machines).")
    enforce_eager: bool | None = Field(
        None, description="vLLM without CUDA graphs or torch.compile (start-up in seconds); None: on for CPU "
        "engines, off on GPUs (graphs captured at start-up, a minute or so, decode faster)."
    )
    batch_size: int = Field(16, ge=1, description="Questions per request to an actor; progress is printed per batch.")
    bootstrap_samples: int = Field(1000, ge=100, description="Bootstrap resamples behind each confidence interval.")
    confidence: float = Field(0.95, gt=0, lt=1, description="Level of the percentile bootstrap intervals.")
    seed: int = Field(0, description="Seed of the question subset, the random baseline and the bootstrap.")
    record_baseline_questions: int = Field(
        20000, ge=0, description="Training questions the record-regression baseline is fit on (a softmax regression "
        "per variable on the record's values: what the records tell beyond the majority answer); 0: no such baseline."
    )
    examples: int = Field(3, ge=0, description="Example questions (with each model's reasoning) shown in the report.")
    metrics_path: str | None = Field(
        None, description="Training `metrics.jsonl` to plot; None: `<output_dir>/train/metrics.jsonl` if it exists."
    )
    output_subdir: str = Field("eval", description="Outputs go to `<output_dir>/<output_subdir>/`.")


class ServeLimitsConfig(_Section):
    """What one request to the endpoint may ask for (larger requests get a 4xx naming the field)."""

    max_tokens: int = Field(1024, ge=1, description="Largest `max_tokens` a request may ask for.")
    default_max_tokens: int = Field(256, ge=1, description="`max_tokens` of a chat request that gives none.")
    registry_max_tokens: int = Field(
        512, ge=1, description="Reasoning tokens of a registry prediction that gives no `max_tokens` (as `evaluate.max_new_tokens`)."
    )
    max_prompt_chars: int = Field(32_000, ge=1, description="Characters of all messages of a chat request together.")
    max_messages: int = Field(64, ge=1, description="Messages in one chat request.")
    max_n: int = Field(4, ge=1, description="Completions (`n`) one chat request may ask for.")
    max_stop: int = Field(4, ge=0, description="Stop strings in one request (each at most 64 characters).")
    max_record_values: int = Field(512, ge=1, description="Variables in one registry record.")
    max_value_chars: int = Field(2_000, ge=1, description="Characters of one value in a registry record.")
    max_body_bytes: int = Field(1_000_000, ge=1_024, description="Bytes of one request body (larger: 413).")
    request_timeout_s: float | None = Field(
        240.0, gt=0, description="Seconds a replica may work on one request: past them the engine aborts it and the "
        "client gets 504 (a stream: an error event, then `[DONE]`). Counts from the replica taking the request; "
        "keep it below `serve.request_timeout_s`, whose 408 comes first otherwise. None: no limit."
    )


class ServeConfig(_Section):
    """Serving a model as an autoscaling Ray Serve endpoint (OpenAI-compatible, plus registry prediction)."""

    model_path: str | None = Field(
        None, description="Model to serve: a Hugging Face folder, a training checkpoint (`step_N/`, its `policy/` is "
        "served) or a checkpoint root (its latest complete checkpoint); None: `model.path`. Re-deploy to switch."
    )
    model_name: str = Field("creason", description="Name of the model in `/v1/models`; requests must name it in `model`.")
    questions_dir: str | None = Field(
        None, description="Question build whose `plan.json` and `manifest.json` shape registry prompts; None: "
        "`train.questions_dir`, else `<output_dir>/questions`. Without it `/v1/registry/predict` answers 404."
    )
    host: str = Field("127.0.0.1", description="Address the HTTP proxy of `creason serve` listens on (0.0.0.0: all).")
    port: int = Field(8000, ge=1, le=65535, description="Port the HTTP proxy of `creason serve` listens on.")
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field(
        "float32", description="Engine precision (float32 on CPUs, bfloat16 on GPUs)."
    )
    max_model_len: int = Field(2048, ge=64, description="Prompt plus completion tokens, at most, per request.")
    kv_cache_gib: float = Field(
        0.25, gt=0, description="KV cache per replica, set explicitly (on CPU the default is a fraction of all host memory)."
    )
    cpus_per_replica: float = Field(1.0, gt=0, description="Logical CPUs each replica reserves (its engine runs in them).")
    gpus_per_replica: float = Field(0.0, ge=0, description="GPUs each replica reserves (0 on CPU machines).")
    enforce_eager: bool | None = Field(
        None, description="vLLM without CUDA graphs or torch.compile (start-up in seconds); None: on for CPU "
        "engines, off on GPUs (graphs captured at start-up, a minute or so, decode faster)."
    )
    cpu_inline_worker: bool = Field(
        True, description="CPU replicas: run vLLM's model worker inside its engine-core process (one process fewer, "
        "~15-40 s faster start on 2 cores); vLLM then pins no threads and uses the replica's OMP_NUM_THREADS."
    )
    replica_env: dict[str, str] = Field(
        default_factory=dict, description="Environment variables of each replica and its engine, e.g. "
        "`VLLM_CPU_OMP_THREADS_BIND: nobind` so that replicas on one CPU machine do not all pin core 0."
    )
    min_replicas: int = Field(1, ge=0, description="Autoscaling: fewest replicas (0 scales to zero when idle).")
    max_replicas: int = Field(2, ge=1, description="Autoscaling: most replicas.")
    target_ongoing_requests: float = Field(
        8.0, gt=0, description="Autoscaling: requests in flight per replica that the autoscaler aims for."
    )
    max_ongoing_requests: int = Field(
        64, ge=1, description="Requests one replica works on at once (its engine batches them); more wait in the proxy."
    )
    max_queued_requests: int = Field(
        512, ge=-1, description="Requests waiting for a replica before new ones get 503 (-1: no limit)."
    )
    retry_after_s: float = Field(
        5.0, ge=0, description="`Retry-After` seconds of the 503 that requests past `max_queued_requests`, or sent "
        "to a replica whose engine died, get."
    )
    request_timeout_s: float | None = Field(
        300.0, gt=0, description="End-to-end seconds of one HTTP request at the Serve proxy, queueing included "
        "(`http_options.request_timeout_s`; past them: 408). Set where Serve starts (`creason serve`); a Serve "
        "config file sets its own `http_options`. None: no limit."
    )
    max_surge_percent: int = Field(
        100, ge=0, le=100, description="Extra replicas (% of the current number) while a re-deploy replaces them: old "
        "replicas serve until their replacements are ready (0: old ones stop first, leaving a gap)."
    )
    upscale_delay_s: float = Field(5.0, ge=0, description="Autoscaling: seconds of high load before adding a replica.")
    downscale_delay_s: float = Field(60.0, ge=0, description="Autoscaling: seconds of low load before removing a replica.")
    api_key: str | None = Field(
        None, description="Bearer token clients must send; prefer the `api_key_env` variable (None: read it from there)."
    )
    api_key_env: str = Field("CREASON_API_KEY", description="Environment variable holding the bearer token.")
    require_api_key: bool = Field(
        False, description="Refuse to start without a key (the Serve HTTP port is not covered by Ray's own token)."
    )
    identifiers: Literal["drop", "reject"] = Field(
        "drop", description="Identifier variables in a registry record: dropped (and listed as ignored), as question "
        "building drops them, or rejected with 400."
    )
    limits: ServeLimitsConfig = Field(default_factory=ServeLimitsConfig)

    @model_validator(mode="after")
    def _consistent(self) -> "ServeConfig":
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is greater than max_replicas ({self.max_replicas})")
        for name in ("default_max_tokens", "registry_max_tokens"):
            if getattr(self.limits, name) > self.limits.max_tokens:
                raise ValueError(f"limits.{name} is greater than limits.max_tokens ({self.limits.max_tokens})")
        return self


class CreasonConfig(_Section):
    """Root of the configuration."""

    seed: int = Field(0, description="Seed for generation, splits, options and sampling.")
    output_dir: str = Field("runs/quickstart", description="Where every stage writes its outputs: a folder, or a "
                            "URI such as `s3://bucket/runs/a` (any pyarrow filesystem; credentials and "
                            "`AWS_ENDPOINT_URL` from each node's environment): Ray Train writes the checkpoints "
                            "there, the rest is written to a working copy (`$CREASON_WORKDIR`, default "
                            "`~/.cache/creason/runs`) and uploaded after each stage and checkpoint (docs/cluster.md).")
    data: DataConfig = Field(default_factory=DataConfig)
    questions: QuestionsConfig = Field(default_factory=QuestionsConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    warmup: WarmupConfig = Field(default_factory=WarmupConfig)
    evaluate: EvalConfig = Field(default_factory=EvalConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)

    @model_validator(mode="after")
    def _settings_fit(self) -> "CreasonConfig":
        if self.model.lora is not None and self.train.zero_stage == 3:
            raise ValueError("model.lora is not supported at train.zero_stage=3 (the adapters are small: use ZeRO 0-2)")
        if (self.model.lora is not None and self.model.lora.resolved_sync(self.rollout.gpus_per_actor) == "adapter"
                and self.rollout.backend != "vllm"):
            raise ValueError("model.lora.sync=adapter needs rollout.backend=vllm (vLLM's LoRA); use sync=merged")
        bf16_stages = [s for s, mp in (("train", self.train.mixed_precision),
                                       ("warmup", self.warmup.resolved_mixed_precision(self.train))) if mp == "bf16"]
        if bf16_stages and self.model.precision == "bf16":
            raise ValueError(f"{bf16_stages[0]}.mixed_precision=bf16 needs model.precision=fp32 (bf16 weights already "
                             "compute in bf16, with DeepSpeed's fp32 master copy)")
        return self


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the dotted key."""


def builtin_config_path(name: str) -> Path:
    return Path(str(resources.files("creason") / "configs" / f"{name}.yaml"))


def load_config(source: str | Path | None = None, overrides: list[str] | None = None) -> CreasonConfig:
    """Load a YAML file (a path, or the name of a shipped config) and apply `key.path=value` overrides."""
    raw: dict[str, Any] = {}
    where = "defaults"
    if source is not None:
        path = Path(source)
        if not path.exists() and builtin_config_path(str(source)).exists():
            path = builtin_config_path(str(source))
        where = str(path)
        raw = _read_yaml(path)
    for item in overrides or []:
        key, value = _parse_override(item)
        _set_dotted(raw, key, value)
    try:
        return CreasonConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{where}: " + "; ".join(_format_error(err) for err in e.errors())) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found (nor a shipped config of that name)") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r}: expected key.path=value")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    return key.strip(), value


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(parts[: i + 1])}: is a value, cannot set {key}")
        node = child
    node[parts[-1]] = value


def _format_error(err: dict[str, Any]) -> str:
    key = ".".join(str(p) for p in err["loc"]) or "config"
    if err["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    return f"{key}: {err['msg']} (got {err.get('input')!r})"


def dump_config(cfg: CreasonConfig) -> str:
    """The full config (defaults included) as YAML, e.g. to record in a manifest."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
