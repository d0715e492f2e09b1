"""Gateway: REST login, JWT issue, connector assignment, users, conversations,
history, sync and receipts (FastAPI on uvicorn)."""
