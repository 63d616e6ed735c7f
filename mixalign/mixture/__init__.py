"""Domain weights whose combined probe direction points at the target (docs/method.md, section 3)."""
