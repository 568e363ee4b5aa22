"""The QoS of every topic the nodes use (one place, so both ends of each topic agree).

- cameras and joint states: best effort, keep last 1 (newest sample only; matches reliable and best-effort
  publishers alike, e.g. camera drivers and ``joint_state_broadcaster``);
- language goal: reliable + transient local, keep last 1 (a late-starting node still gets the current goal),
  and a second, volatile subscription (``GOAL_VOLATILE``) for publishers that do not latch, such as
  ``ros2 topic pub``'s default QoS (a transient-local subscription never matches a volatile publisher);
- chunks (``~/action_chunk``) and chunk requests: reliable, keep last 1 (only the newest matters);
- controller windows (``/<controller>/joint_trajectory``): reliable, as the JointTrajectoryController requires
  (a best-effort publisher never matches its subscription); the simulated controller subscribes as the JTC
  does (``CONTROLLER_INPUT``: the system default, reliable, keep last 10);
- joint states of the simulated arm (``JOINT_STATES_OUT``): reliable, keep last 1 (matches best-effort and
  reliable subscribers alike);
- latched states (``LATCHED``: the simulated arm's ``~/success`` and ``/clock``): reliable + transient local,
  keep last 1;
- event streams (``EVENTS``: the simulated arm's ``~/episode``, the recorder's ``~/events``): reliable +
  transient local, keep last 10 (a late subscriber still gets the recent events);
- ``/diagnostics``: reliable, keep last 10.
"""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

SENSOR = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.BEST_EFFORT,
    durability=DurabilityPolicy.VOLATILE,
)
GOAL = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
CHUNK = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
GOAL_VOLATILE = CHUNK
REQUEST = CHUNK
JOINT_STATES_OUT = CHUNK
LATCHED = GOAL
EVENTS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
CONTROLLER = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
CONTROLLER_INPUT = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
