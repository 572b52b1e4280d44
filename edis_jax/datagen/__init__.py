"""D4RL-style dataset building (`edis-jax data make`): the behaviour SAC, rollouts and episode
recording.

Modules: builder (make_dataset), options (kinds, defaults, the rebuilding command), behaviour
(train_sac_online, evaluate_agent), selection (stop rules and the medium policy's search),
rollout (EpisodeRecorder, rollout, host policies).
"""
