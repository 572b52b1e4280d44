"""The data layer: containers and loading.

Modules: transition (Transition pytree), buffer (ReplayBuffer, Mixture), normalizer,
datasets (Dataset, load_dataset, list/info), minari_store (paths, reading and writing the Minari
store), shipped (the datasets shipped with the package), hub (downloads, missing-dataset hints),
returns (returns-to-go), observations (the flat observation layout), env_packages (the pip
packages that register envs), scores (reference scores, normalized_score).
Building datasets is edis_jax/datagen.
"""
