"""Ray job: every stage in order (questions, evaluate the base model, GRPO, evaluate again, serve).

    RAY_AUTH_MODE=token ray job submit --address http://HEAD:8265 --working-dir . -- \
        python ray_jobs/pipeline.py --config paper [--set key.path=value ...]

Same code path as `creason quickstart`. Submitted to a cluster, the Serve application it deploys
stays up after the job ends (Serve runs in the cluster, not in the job).
"""

import sys

from creason.cli import main

if __name__ == "__main__":
    sys.exit(main(["quickstart", *sys.argv[1:]]))
