"""What is the model? The recurrent-depth VLA, its checkpoints and its inference API.

Importing this package does not import torch. Numpy-only modules (engines and nodes may use them without the
model): ``observation`` (the Observation / ChunkPrediction contract), ``config`` (ModelConfig and presets),
``preprocess``, ``normalization``, ``envelope`` (the joint range a model was trained on), ``tokenizer``,
``samples`` (TrainingSample), ``synthetic`` (a toy task).
Torch modules: ``layers``, ``vision``, ``trunk``, ``recurrent_decoder``, ``discrete_decoder``, ``halting``,
``model`` (VlaModel and the export graphs), ``checkpoint``, ``inference`` (TorchPolicy), ``objectives``.
"""
