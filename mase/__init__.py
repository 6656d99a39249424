"""Command-line entry point (`mase`): a thin adapter over planner/ and metareasoner/."""
