"""Research benchmarks: experiments that train or time se_robot and print tables. Not the product.

Run from a source checkout (the package is not installed with se_robot)::

    python -m benchmarks --help
    python -m benchmarks sample-efficiency --tasks reach --seeds 0,1,2

Each module defines ``register(subparsers)`` (its argparse parser, ``func`` set to its ``run``).
The figures they produced, with the commands, are in docs/benchmarks.md. The checks of a user's rig
(serial ports, servos, cameras, rendering, ROS, torch) are a product command: ``se-robot doctor``.
"""

# name -> module, in the order ``--help`` lists them
BENCHMARKS = {
    "sample-efficiency": "benchmarks.sample_efficiency",
    "drq-demos": "benchmarks.drq_demos",
    "learner": "benchmarks.learner",
    "sim": "benchmarks.sim",
    "bus": "benchmarks.bus",
    "camera": "benchmarks.camera",
    "ros": "benchmarks.ros",
    "actors": "benchmarks.actors",
    "homing": "benchmarks.homing",
    "async-learner": "benchmarks.async_learner",
    "model-error": "benchmarks.model_error",
    "manipulation": "benchmarks.manipulation",
    "transfer": "benchmarks.transfer",
}
