"""Command-line pieces the trainer tests share."""

# A short CPU run that logs every step, saves nothing on its own and is reproducible.
CPU_RUN = ["--logging_steps", "1", "--save_strategy", "no", "--report_to", "none", "--use_cpu", "true", "--seed", "0"]
