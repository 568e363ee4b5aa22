"""What is the model? The recurrent-depth VLA, its checkpoints and its inference API.

Importing this package does not import torch: the observation/prediction contract in
``observation`` is numpy-only so engines and nodes can use it without the model.
"""
