"""The simulated robot's ROS 2 adapters: the arm (``sim_arm_node``, its parameters in ``sim_arm_config``, its
simulation thread in ``sim_arm_loop``) and the JointJog integrator that stands in for MoveIt Servo
(``jog_integrator_node``). The logic they wrap lives in :mod:`dream_vla_ros.sim`, without ROS.
"""
