r"""Train a hyper-representation on a model zoo.

    accelerate launch training/train.py training/configs/tetris_seed.yaml [--field value ...]
    ACCELERATE_USE_CPU=1 accelerate launch --config_file training/accelerate/cpu_2proc.yaml \\
        training/train.py training/configs/tetris_seed.yaml --output-dir runs/ddp

Everything lives in ``hyperrep_hf.training.trainer`` (``python training/train.py --help`` lists every field).
"""

import sys

from hyperrep_hf.training.trainer import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
