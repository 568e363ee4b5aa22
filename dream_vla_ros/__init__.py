"""dream_vla_ros: drive a robot arm with a recurrent-depth diffusion VLA over ROS 2."""

__version__ = "0.1.0"
