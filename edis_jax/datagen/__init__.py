"""D4RL-style dataset building: the behaviour SAC, rollouts and episode recording.

Modules: builder (make_dataset, make_command), behaviour (train_sac_online, evaluate_agent),
selection (stop rules and the medium policy's search), rollout (EpisodeRecorder, rollout).
"""
