"""The data layer: transitions, device buffers, normalisers, Minari datasets (loading, building,
reference scores).

Modules: transition (Transition pytree), buffer (ReplayBuffer, Mixture), normalizer,
datasets (load_dataset, returns_to_go, list/info, write/export), builder (make_dataset),
scores (D4RL reference scores, normalized_score).
"""
