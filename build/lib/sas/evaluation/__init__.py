"""Evaluation: the CAA A/B score, side effects, open-ended tasks, SAE quality, the optional LM judge (judge.py)."""
