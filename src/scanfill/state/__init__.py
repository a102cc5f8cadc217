"""Contract state: one row per contract with its lifespan, kept by the loaders in the transaction
of the page that carries each fact, and queried PQS-style (`active()`, `creates()`...)."""
