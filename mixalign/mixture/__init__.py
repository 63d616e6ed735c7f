"""Domain weights whose combined probe direction points at the target (SPEC section 3)."""
