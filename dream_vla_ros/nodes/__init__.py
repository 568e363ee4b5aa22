"""How does ROS 2 reach it? Thin rclpy adapters (``policy_node``, ``executor_node``, ``composed``) over the
engines and the chunking core, plus the ROS-free checks they share (``conversions``, ``inputs``, ``health``).

Importing this package imports no rclpy; the node modules do.
"""
