"""How well does a model do closed loop? The ROS 2 client that drives a node graph on the simulated arm, and
what it reports.

Modules: ``session`` (the graph as processes in a private domain plus the client node: resets, goals,
services, readiness), ``graph`` (names and topics from the nodes' config classes; the evaluation graph's
parameters), ``episodes`` (policy and expert episodes, paced), ``runner`` (``dream-vla-ros eval``: the
protocol, sweeps), ``config`` (what to evaluate), ``pacing`` (the real-time factor from measured headroom),
``statistics`` (results and their summary), ``report`` / ``plots`` (Markdown, JSON, PNG), ``ros_demos``
(scripted-expert demonstrations recorded through ROS 2), ``goal_report`` (the goal threshold's ROC).

Importing this package imports no rclpy; ``session`` imports it when a session starts.
"""
