"""Command-line pieces the trainer tests share."""

# A short CPU run that logs every step, saves nothing on its own and is reproducible.
CPU_RUN = ["--logging_steps", "1", "--save_strategy", "no", "--report_to", "none", "--use_cpu", "true", "--seed", "0"]

# GRPO's sizes for the tiny model: 4 completions a step, 2 per prompt, short answers, a large rate.
TINY_GRPO = [
    "--per_device_train_batch_size", "4", "--num_generations", "2", "--max_completion_length", "24",
    "--learning_rate", "0.01",
]  # fmt: skip
