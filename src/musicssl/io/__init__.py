"""Shared input/output plumbing: audio decoding, finding files, atomic writes, records, model files, tags, track lists."""
