"""Launch the sim_arm graph: `ros2 launch dream_vla_ros sim_arm.launch.py [model:=DIR] [namespace:=NS] ...`.

The nodes and their parameters come from config/sim_arm.yaml (see dream_vla_ros/bringup.py); without
launch_ros, `dream-vla-ros up sim_arm` starts the same graph.
"""

from dream_vla_ros.launch_support import generate


def generate_launch_description():
    return generate("sim_arm")
