"""Benchmark: registry rows in, question Parquet out.

Each run is `creason build-questions` in its own process (a fresh local Ray cluster), while a
monitor samples the summed PSS of that process and all its descendants (driver, raylet, GCS,
workers, object store): the peak memory of the whole cluster.

    python ray_jobs/benchmarks/build_questions.py --patients 100000 --million --out docs/benchmarks/build.json
    python ray_jobs/benchmarks/build_questions.py --scaling-patients 3000000   # fixed costs per phase amortised

Prints a Markdown table; compare ratios from one run (the machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from common import machine_line, run_monitored, set_args


def run_build(patients: int, profile: str, concurrency: int, block_size: int, overrides: tuple[str, ...] = ()) -> dict:
    """One build in a subprocess; returns the manifest's timings plus wall time and peak memory."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "creason.cli", "build-questions", *set_args([
            f"output_dir={out}", f"data.num_patients={patients}", f"data.profile={profile}", f"data.block_size={block_size}",
            f"ray.data_concurrency={concurrency}", *overrides])]
        rc, wall, peak = run_monitored(cmd)
        if rc != 0:
            raise RuntimeError(f"build failed ({rc}): {' '.join(cmd)}")
        manifest = json.loads((Path(out) / "questions" / "manifest.json").read_text())
    seconds = manifest["seconds"]
    pipeline = sum(seconds.values())
    after_ingest = pipeline - seconds["ingest"]
    return {
        "patients": patients, "profile": profile, "workers": concurrency, "questions": manifest["total_questions"],
        "seconds": seconds, "pipeline_s": pipeline, "process_wall_s": wall, "peak_pss_gib": peak / 2**30,
        "questions_per_s": manifest["total_questions"] / pipeline,
        "questions_per_s_from_rows": manifest["total_questions"] / after_ingest,
        "question_phase_per_s": manifest["total_questions"] / seconds["questions"],
    }


def markdown(rows: list[dict]) -> str:
    head = ("| patients | profile | workers | questions | ingest s | stats s | MI s | questions s | q/s end to end "
            "| q/s rows in (after generation) | peak memory GiB |\n|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        s = r["seconds"]
        lines.append(f"| {r['patients']:,} | {r['profile']} | {r['workers']} | {r['questions']:,} | {s['ingest']:.1f} | "
                     f"{s['statistics']:.1f} | {s['mutual_information']:.1f} | {s['questions']:.1f} | "
                     f"{r['questions_per_s']:,.0f} | {r['questions_per_s_from_rows']:,.0f} | {r['peak_pss_gib']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--block-size", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=2, help="alternating 1- and 2-worker runs for the scaling ratio")
    parser.add_argument("--scaling-patients", type=int, default=1_000_000,
                        help="size of the scaling runs: large enough that per-task overhead does not dominate")
    parser.add_argument("--million", action="store_true", help="also build from 1,000,000 patients")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="config override for every build, e.g. ray.include_dashboard=false")
    parser.add_argument("--out", type=Path, default=None, help="write all results as JSON")
    args = parser.parse_args()

    rows = []
    for profile in ("compact", "full"):
        rows.append(run_build(args.patients, profile, 2, args.block_size, args.overrides))
    scaling = {1: [], 2: []}
    for _ in range(args.repeats):  # interleaved, so background load hits both alike
        for workers in (1, 2):
            r = run_build(args.scaling_patients, "compact", workers, 25_000, args.overrides)
            scaling[workers].append(r)
            rows.append(r)
    if args.million:
        rows.append(run_build(1_000_000, "compact", 2, 25_000, args.overrides))

    best = {w: min(r["seconds"]["questions"] for r in runs) for w, runs in scaling.items()}
    best_ingest = {w: min(r["seconds"]["ingest"] for r in runs) for w, runs in scaling.items()}
    machine = machine_line()
    print(f"\n{machine}\n\n{markdown(rows)}\n")
    print(f"1 -> 2 workers: question phase {best[1] / best[2]:.2f}x, ingest (generation) phase "
          f"{best_ingest[1] / best_ingest[2]:.2f}x (best of {args.repeats} each)")
    if args.out:
        args.out.write_text(json.dumps({"machine": machine, "overrides": args.overrides, "runs": rows, "scaling_question_phase": best[1] / best[2],
                                        "scaling_ingest_phase": best_ingest[1] / best_ingest[2]}, indent=2))


if __name__ == "__main__":
    main()
