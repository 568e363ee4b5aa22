"""Recording demonstrations over ROS 2 into rosbag2 episodes (ROS-free core; the node is ``nodes/recorder_node``).

- ``config``: :class:`RecorderConfig`, the recorder's parameters (one ROS parameter per field).
- ``episode``: the on-disk layout (one rosbag2 directory per episode, ``episode.json`` next to the MCAP file,
  ``incomplete/`` for the episode being recorded) and the listing of a recordings directory.
- ``bag``: writing an episode with ``rosbags`` (MCAP storage, raw CDR as received) and salvaging the MCAP
  file of an episode whose recorder was killed.
- ``recorder``: :class:`Recorder`, the state machine (idle / recording), the bounded backlog between the
  subscription callbacks and the disk, a writer thread per episode, and the counters behind ``/diagnostics``.

Layout of a recordings directory (``out_dir``)::

    OUT/
      episode_000000/                 a finished episode: a rosbag2 directory (metadata.yaml + MCAP)
        metadata.yaml                 custom_data: dream_vla_ros.episode (JSON), instruction, task
        episode_000000.mcap
        episode.json                  the same episode record, readable without rosbag tools
      episode_000001/
      incomplete/
        episode_000002/               the episode being recorded, or one whose recorder was killed

An episode moves from ``incomplete/`` to ``OUT/`` (one atomic rename) only after its bag was closed and
flushed to disk, so everything directly under ``OUT/`` is readable and everything under ``incomplete/`` is,
by its place, marked incomplete (``dream-vla-ros record repair OUT`` salvages those).
"""
