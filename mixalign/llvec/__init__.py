"""Log-likelihood vectors and the KL estimates read off them (SPEC section 2)."""
