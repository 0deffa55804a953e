"""Rollouts: sample completions of chat prompts from the current policy.

`engine` wraps vLLM (no Ray), `hf_engine` is the Hugging Face fallback with the same interface,
`actor` makes either a Ray actor, and `sync` moves trained weights into the actors (one file
per transport, both ends in it).
"""
