"""Glue between RL frameworks and the reward service: `trl` (GRPO reward functions) and `verl`
(``compute_score`` for its naive and batch reward managers). OpenRLHF needs no glue here: the
service itself answers its remote reward model protocol at ``/v1/openrlhf`` (see the README, "OpenRLHF").

Each adapter imports only the standard library and the client, never the framework it serves.
"""
