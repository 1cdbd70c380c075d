"""realloop: a robot-learning stack for real robots (ROS 2, zarr episode dataset, policies, MuJoCo mirror).

The code lives in one folder per capability, each installed as a subpackage:
``data/`` is ``realloop.data``, ``robot/`` is ``realloop.robot``, ``sim/`` is ``realloop.sim``,
``policies/`` is ``realloop.policies``.
"""

__version__ = "0.1.0"
