"""Runtime support for training and evaluation: hooks, safe / strict / atomic checkpoint
handling of the Runner (``checkpoint_loader``, ``atomic_checkpoint``), pre-flight checks of
configs and data (``preflight``, ``data_checks``), command-line options and error messages the
tools share (``cli``), what the console shows and the log file keeps (``log_filters``) and runs
on machines without CUDA (``cpu_runtime``). The tools import what they need;
nothing is imported here, and importing changes nothing in mmengine."""
