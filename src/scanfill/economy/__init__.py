"""Round economics: what each transfer minted and burnt, read from its `TransferSummary` as the
history loads, and the round, party and supply figures Scan's removed aggregate endpoints served,
computed in SQL over those facts and contract state (`economy.sql`)."""
