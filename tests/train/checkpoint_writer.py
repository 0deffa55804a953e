"""Test helper, run as its own process: save checkpoints of steps 1, 2, 3, ... of the tiny model
into a root, one after the other, until killed; `<root>/saved` holds the last step whose save
returned. `python -m tests.train.checkpoint_writer MODEL_DIR ROOT`"""

import sys
from pathlib import Path

import torch

from creason.train.checkpoint import save_checkpoint
from creason.train.step import TorchEngine
from tests.train import load_tiny

if __name__ == "__main__":
    model_dir, root = sys.argv[1], Path(sys.argv[2])
    model = load_tiny(model_dir)
    engine = TorchEngine(model, torch.optim.AdamW(model.parameters(), lr=1e-3))
    step = 0
    while True:
        step += 1
        save_checkpoint(root, engine, step=step, data_position=step)
        (root / "saved").write_text(str(step))
