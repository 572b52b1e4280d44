"""What a run and the data store write to disk: orbax checkpoints of the whole run (checkpoint),
the locks that keep two processes off one folder (file_locks), and the checks and whole-file
writes every output path goes through (output_paths)."""
