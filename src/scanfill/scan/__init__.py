"""The Scan endpoint layer: the HTTP client (`client`) and every endpoint scanfill calls, with its
request body and response shape (`endpoints`). Everything above it (coord, load, ops) asks Scan
only through here."""
