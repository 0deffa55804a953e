"""Ray job: deploy the Serve endpoint for a model or training checkpoint, ask it one registry
question, and leave it running on the cluster.

    RAY_AUTH_MODE=token ray job submit --address http://HEAD:8265 --working-dir . -- \
        python ray_jobs/serve.py --config quickstart --set serve.model_path=runs/quickstart/ray_train/grpo/...

For `serve deploy` of a YAML file instead, see serve_configs/.
"""

import sys

from creason.cli import main

if __name__ == "__main__":
    sys.exit(main(["deploy", *sys.argv[1:]]))
