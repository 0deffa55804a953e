"""`creason` command line: parse, load config, call the package."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from creason.config import ConfigError, dump_config, load_config
from creason.data.dictionary import DictionaryError
from creason.data.registry import RegistryError
from creason.paths import question_build_dir, train_metrics_path
from creason.storage import synced_output


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="quickstart", help="YAML file, or the name of a shipped config (default: quickstart)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field, e.g. --set data.num_patients=5000 (repeatable)")


def cmd_fetch_model(args: argparse.Namespace) -> int:
    from creason.models.fetch import fetch_default_model

    print(fetch_default_model(log=lambda m: print(m, file=sys.stderr)))
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from creason.models.lora import merge_adapter

    print(merge_adapter(args.adapter, args.out, args.base))
    return 0


def cmd_show_config(args: argparse.Namespace) -> int:
    print(dump_config(load_config(args.config, args.overrides)), end="")
    return 0


def cmd_build_questions(args: argparse.Namespace) -> int:
    from creason.data.pipeline import build_question_set

    cfg = load_config(args.config, args.overrides)
    with synced_output(cfg.output_dir, log=print):
        manifest = build_question_set(cfg)
    print_build_summary(manifest, question_build_dir(cfg.output_dir))
    return 0


def print_build_summary(manifest: dict, out: Path) -> None:
    seconds = manifest["seconds"]
    total = manifest["total_questions"]
    print(f"\nquestions written to {out}")
    for split, kinds in manifest["counts"].items():
        print(f"  {split:<10} " + ", ".join(f"{k}: {n:,}" for k, n in sorted(kinds.items())))
    print("time per phase: " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    wall = sum(seconds.values())
    print(f"{total:,} questions from {manifest['statistics_sample']['rows']:,} patients in {wall:.1f} s "
          f"({total / max(wall, 1e-9):,.0f} questions/s end to end)")


def cmd_train(args: argparse.Namespace) -> int:
    from creason.train.run import train

    cfg = load_config(args.config, args.overrides)
    with synced_output(cfg.output_dir, log=print):
        result = train(cfg, resume=args.resume)
    print(f"\ntraining finished at step {result.metrics.get('step')}; checkpoint: {result.checkpoint.path if result.checkpoint else None}")
    print(f"metrics: {train_metrics_path(cfg.output_dir)}")
    return 0


def cmd_warmup(args: argparse.Namespace) -> int:
    from creason.train.warmup import run_warmup

    cfg = load_config(args.config, args.overrides)
    with synced_output(cfg.output_dir, log=print):
        summary = run_warmup(cfg, log=lambda m: print(m, flush=True))
    print(f"\nwarmed-up model: {summary['model']} (`creason train --set warmup.enabled=true` starts from it)")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from creason.evaluate.cli_command import cmd_evaluate

    return cmd_evaluate(args)


def _cmd_serve(args: argparse.Namespace) -> int:
    from creason.serve.app import cmd_serve

    return cmd_serve(args)


def cmd_pipeline(args: argparse.Namespace) -> int:
    """Every stage in order (`creason quickstart`, `ray_jobs/pipeline.py`)."""
    import time

    from creason.pipeline import render_summary, run_pipeline
    from creason.storage import remove

    cfg = load_config(args.config, args.overrides)
    if args.fresh:
        remove(cfg.output_dir)
    with synced_output(cfg.output_dir, log=print):
        run = run_pipeline(cfg, keep_serving=args.keep_serving, log=lambda m: print(m, flush=True))
    print(render_summary(run), flush=True)
    if args.keep_serving:
        print("serving until Ctrl-C", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    """Deploy the endpoint onto a running cluster, ask it one question, and return (it stays up)."""
    import os

    from creason.raycluster import connect
    from creason.serve.client import deploy_and_ask

    cfg = load_config(args.config, args.overrides)
    if not (cfg.ray.address or os.environ.get("RAY_ADDRESS")):
        raise ConfigError("deploy needs a running cluster (ray.address or RAY_ADDRESS); locally, use `creason serve`")
    connect(cfg.ray)
    reply = deploy_and_ask(cfg, keep_serving=True, log=lambda m: print(m, flush=True))
    print(f"serving at {reply['url']}/v1")
    return 0


def _cmd_kill(args: argparse.Namespace) -> int:
    from creason.faults import cmd_kill

    return cmd_kill(args)


def cmd_plan(args: argparse.Namespace) -> int:
    """Memory each role needs per device against what the cluster offers; exit 1 if it does not fit."""
    import os

    from creason import plan

    cfg = load_config(args.config, args.overrides)
    model = cfg.model.path
    if model is None:
        from creason.models.fetch import fetch_default_model

        model = str(fetch_default_model(log=lambda m: print(m, file=sys.stderr)))
    arch, source = plan.load_architecture(model)
    if args.gpus is None and (cfg.ray.address or os.environ.get("RAY_ADDRESS")):
        import ray

        from creason.raycluster import connect

        connect(cfg.ray)
        memory = [n["Resources"].get("memory", 0) for n in ray.nodes() if n.get("Alive")]
        try:
            offer = plan.offer_from_cluster(ray.cluster_resources(), memory, args.gpu_gib, args.host_gib)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    else:
        host = args.host_gib or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / plan.GIB
        gpus, gpu_gib = args.gpus if args.gpus is not None else 8, args.gpu_gib or 80.0
        given = "given" if args.gpus is not None else "one 8-GPU node assumed (--gpus, --gpu-gib)"
        offer = plan.Offer(gpus, gpu_gib, host, f"{given}; host: {'given' if args.host_gib else 'this machine'}")
    result = plan.plan_run(cfg, arch, offer, model=f"{model} ({source})", prompt_tokens=args.prompt_tokens)
    print(plan.render(result))
    for problem in result.problems:
        print(f"creason plan: does not fit: {problem}", file=sys.stderr)
    return 0 if result.fits else 1


def cmd_generate_registry(args: argparse.Namespace) -> int:
    from creason.data.export import write_synthetic_registry

    cfg = load_config(args.config, args.overrides)
    path = write_synthetic_registry(cfg, Path(args.out))
    print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="creason", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch-model", help="convert the packaged SmolLM2-135M-Instruct once and print its folder").set_defaults(fn=cmd_fetch_model)
    merge = sub.add_parser("merge", help="merge a LoRA adapter folder (a checkpoint's adapter/) into a plain Hugging Face folder")
    merge.add_argument("adapter", help="PEFT adapter folder")
    merge.add_argument("--out", required=True, help="folder to write (replaced if it exists)")
    merge.add_argument("--base", default=None, help="base model folder (default: the one the adapter names)")
    merge.set_defaults(fn=cmd_merge)
    for name, fn, text in (
        ("show-config", cmd_show_config, "print the resolved configuration as YAML"),
        ("build-questions", cmd_build_questions, "registry -> question Parquet shards on Ray Data"),
        ("generate-registry", cmd_generate_registry, "write the raw synthetic registry (with identifiers) to CSV or Parquet"),
        ("warmup", cmd_warmup, "format warm-up: fine-tune the model on its own answers written as \\boxed{X}"),
        ("train", cmd_train, "GRPO on the built questions: vLLM rollout actors + Ray Train/DeepSpeed workers"),
        ("evaluate", _cmd_evaluate, "the study's protocol on held-out questions: accuracy, CIs, McNemar, report"),
        ("serve", _cmd_serve, "serve a model as a Ray Serve endpoint (OpenAI-compatible + /v1/registry/predict)"),
        ("deploy", cmd_deploy, "deploy the endpoint onto a running cluster, ask it one question, and return"),
        ("kill", _cmd_kill, "fault injection: kill a training worker, rollout actor or Serve replica by role"),
        ("plan", cmd_plan, "memory each role needs per device against the cluster's, before anything starts"),
        ("quickstart", cmd_pipeline, "every stage: questions, evaluate the base model, train, evaluate again, serve and ask"),
    ):
        p = sub.add_parser(name, help=text)
        _config_args(p)
        p.set_defaults(fn=fn)
        if name == "generate-registry":
            p.add_argument("--out", required=True, help="file to write: .csv or .parquet")
        if name == "train":
            p.add_argument("--resume", action="store_true", help="continue the run in output_dir from its latest checkpoint")
        if name == "evaluate":
            from creason.evaluate.cli_command import add_evaluate_arguments

            add_evaluate_arguments(p)
        if name == "kill":
            from creason.faults import add_kill_arguments

            add_kill_arguments(p)
        if name == "quickstart":
            p.add_argument("--fresh", action="store_true", help="delete output_dir first (an earlier run there stops it)")
            p.add_argument("--keep-serving", action="store_true", help="keep the endpoint up after the summary, until Ctrl-C")
        if name == "plan":
            p.add_argument("--gpus", type=int, default=None, help="GPUs offered (default: the connected cluster's, else 8)")
            p.add_argument("--gpu-gib", type=float, default=None, help="memory of one GPU in GiB (default: 80)")
            p.add_argument("--host-gib", type=float, default=None, help="host memory of a node in GiB (default: this machine's)")
            p.add_argument("--prompt-tokens", type=int, default=None,
                           help="prompt length trained on (default: rollout.max_model_len - rollout.max_new_tokens, the worst case)")
        if name == "serve":
            p.add_argument("--model", default=None, help="model folder or training checkpoint to serve (serve.model_path)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ConfigError, DictionaryError, RegistryError, FileNotFoundError) as e:
        print(f"creason: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
