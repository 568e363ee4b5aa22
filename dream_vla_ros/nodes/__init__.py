"""How does ROS 2 reach it? Thin rclpy adapters (``policy_node``, ``executor_node``, ``composed``,
``recorder_node``) over the engines, the chunking core and the recorder, plus the ROS-free checks they share
(``conversions``, ``inputs``, ``health``). ``sim/`` holds the adapters of the simulated robot: the arm
(``sim_arm_node``, over :mod:`dream_vla_ros.sim`) and a stand-in for MoveIt Servo (``jog_integrator_node``).

Importing this package imports no rclpy; the node modules do.
"""
