"""Ray job: GRPO training (vLLM rollout actors + Ray Train workers with DeepSpeed).

    ray job submit --working-dir . -- python ray_jobs/train_grpo.py --config quickstart [--resume]

Same code path as `creason train`.
"""

import sys

from creason.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
