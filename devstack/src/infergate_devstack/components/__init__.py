"""How each process of the local stack is started and how its readiness is told."""
