"""Runtime support for training and evaluation: hooks, trusted loading of Runner checkpoints
(``checkpoint_loader``), pre-flight checks of configs (``preflight``) and runs on machines
without CUDA (``cpu_runtime``). The tools import what they need; nothing is imported here."""
