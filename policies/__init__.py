"""realloop.policies: chunked action policies, safetensors checkpoints, training, evaluation (docs/architecture.md)."""
