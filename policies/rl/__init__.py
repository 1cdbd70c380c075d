"""realloop.policies.rl: actor-critic learning (SAC / RLPD), its replay buffer on the episode dataset, and the
learner seam every learner implements."""
