"""Log-likelihood vectors and the KL estimates read off them (docs/method.md, section 2)."""
