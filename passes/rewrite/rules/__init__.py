"""One rewrite rule per module; the registry is passes/rewrite/__init__.py's RULES."""
