"""Ray job: registry -> question Parquet shards.

    ray job submit --working-dir . -- python ray_jobs/build_questions.py --config quickstart --set data.num_patients=100000

Same code path as `creason build-questions`.
"""

import sys

from creason.cli import main

if __name__ == "__main__":
    sys.exit(main(["build-questions", *sys.argv[1:]]))
