"""The Flight SQL service: the gRPC transport, the call handlers, authentication, tickets,
limits, metadata commands, bulk ingest, the statement log and metrics, and ``serve``."""
