"""Scores, selections, the strategies that turn one into the other, and their file format."""
