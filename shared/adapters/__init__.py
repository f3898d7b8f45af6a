"""Glue between RL frameworks and the reward service: `trl` (GRPO reward functions), `verl`
(``compute_score`` for its reward loop; `verl_manager` adds the token count ``cosine`` needs) and
`slime` (``--custom-rm-path``). OpenRLHF needs no glue here: the service itself answers its remote
reward model protocol at ``/v1/openrlhf`` (see the README, "OpenRLHF"). `coordinates` puts ground
truth in the pixels the model saw, for all of them; `per_sample` is what verl and slime share.

Each adapter imports only the standard library and the client, never the framework it serves,
except `verl_manager`, which is a verl class and is only ever loaded by verl.
"""
