"""The names the nodes and their clients agree on: executor status, service names, sim episode events,
action result codes.

Pure (no ROS imports), so commanders, evaluation and tests can use it without a ROS environment. The node
modules document what each name means (``nodes/executor_node.py``, ``nodes/policy_node.py``,
``nodes/sim/sim_arm_node.py``); here are only the strings.
"""

from __future__ import annotations

# -- the chunk executor's ~/status (std_msgs/String, one JSON object) --------------------------------------
STATUS_TOPIC = "~/status"
INACTIVE, PAUSED, PAUSING, FAULT, ACTIVE = "inactive", "paused", "pausing", "fault", "active"
COMMANDING = (ACTIVE, PAUSING)  # states in which the executor may command the arm
SILENT = (PAUSED, INACTIVE, FAULT)  # states in which it publishes nothing on any controller interface
# the keys of the status object
STATE, MODE, STOPPED, FAULT_HOLD = "state", "mode", "stopped", "fault_hold"
CONTROLLER_INTERFACE, CONTROLLER_FAULT, STAMP = "controller_interface", "controller_fault", "stamp"

# -- services (std_srvs/Trigger; ``~`` = the node's name) --------------------------------------------------
STOP, RESUME = "~/stop", "~/resume"  # executor and policy node
PAUSE, ACTIVATE = "~/pause", "~/activate"  # executor
ACCEPT_GOAL = "~/accept_goal"  # policy node
RESET = "~/reset"  # simulated arm

# -- the simulated arm's ~/episode events (the "event" of each JSON object) --------------------------------
EVENT_RESET, EVENT_SUCCESS, EVENT_TRUNCATED = "reset", "success", "truncated"

# -- control_msgs/action/FollowJointTrajectory result error codes (the controller and the executor) ------------
SUCCESSFUL, INVALID_GOAL, INVALID_JOINTS, OLD_HEADER_TIMESTAMP = 0, -1, -2, -3
PATH_TOLERANCE_VIOLATED, GOAL_TOLERANCE_VIOLATED = -4, -5
RESULT_CODES = {SUCCESSFUL: "SUCCESSFUL", INVALID_GOAL: "INVALID_GOAL", INVALID_JOINTS: "INVALID_JOINTS",
                OLD_HEADER_TIMESTAMP: "OLD_HEADER_TIMESTAMP", PATH_TOLERANCE_VIOLATED: "PATH_TOLERANCE_VIOLATED",
                GOAL_TOLERANCE_VIOLATED: "GOAL_TOLERANCE_VIOLATED"}


def resolve(node: str, name: str) -> str:
    """The full name of the private name ``name`` of ``node``: ``resolve("/chunk_executor", PAUSE)`` is
    ``/chunk_executor/pause`` (``name`` without ``~/`` is returned as it is)."""
    if not name.startswith("~/"):
        return name
    return f"{node.rstrip('/')}/{name[2:]}"
