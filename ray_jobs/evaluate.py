"""Ray job: evaluate models on the held-out questions (report, plots, results.json).

    ray job submit --working-dir . -- python ray_jobs/evaluate.py --config quickstart --set evaluate.num_actors=2

Same code path as `creason evaluate`.
"""

import sys

from creason.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
