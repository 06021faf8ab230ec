"""The MuJoCo twin of the arm: its MJCF builder, kinematics (FK/IK/Jacobians) and the twin itself."""
